//! What the connected path last told each publishing thread, so that an
//! event that changes nothing for that thread needs no Ruby code at all.
//!
//! The Ruby layer keeps, per fiber, the contexts it attached and settles
//! them when runs ended elsewhere. Two kinds of context are attached:
//! - a run's root, in the thread that opened the run, until the run ends;
//! - once per thread that runs steps without a root of its own current, a
//!   *thread span*: it stays, and answers, when asked for its ids, the
//!   attempt current in the asking thread ([`ThreadViews::attempt_in`]).
//!
//! So entering and ending an attempt attaches and detaches nothing: the
//! view only notes the thread's current attempt. For each Ruby thread this
//! keeps the root last reported as entered there and not ended since, the
//! one entered before it, how many run ends that thread has been told of,
//! its current attempt, and whether it holds a thread span. An event whose
//! change is entering one of those two roots again, or an attempt where
//! something answers for it, or no change, with no run ended since, is
//! answered with nothing, except the current root entered again: "verify",
//! so that the Ruby layer checks that an app's block did not take its
//! context; an event with no change after runs ended elsewhere, in a thread
//! that holds a root, is answered with "settle". The view is per thread,
//! not per fiber: fibers that share a thread share it.

use super::run::{SpanChange, SpanRef};

/// Threads remembered; past this many, the least recently seen of those
/// with no current attempt and no root is forgotten (it is then told
/// everything again), or, when every one has one, the least recently seen.
/// A thread's current attempt lives only here: a span asked in a thread
/// forgotten while its step ran answers no attempt until the thread's next
/// attempt.
pub const MAX_THREADS: usize = 64;

/// What the publishing thread must do after an event was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nothing: its current span stays.
    Nothing,
    /// No change of its own, but runs ended elsewhere since it was last
    /// told: release the contexts of those.
    Settle,
    /// The root current in this thread entered again (a run's second
    /// `task.start_requested`): check that its context is still where it
    /// was put (an app's block may have taken it).
    Verify,
    /// An attempt entered in a thread where nothing of the gem's answers
    /// for it: attach the thread span (or note that the fiber's current
    /// span answers already), after settling what is stale.
    ThreadSpan,
    /// Apply this change.
    Change(SpanChange),
    /// Let go of the runs dropped since the thread was last told (see
    /// [`ThreadViews::span_dropped`]), then apply this change.
    ForgetThenChange(SpanChange),
}

/// A view's `seen_ends` when the thread is new here: it was told nothing.
const TOLD_NOTHING: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, Default)]
struct View {
    /// Run ends this thread was told of (see [`ThreadViews::ends`]).
    seen_ends: u64,
    /// Dropped runs this thread was told of (see [`ThreadViews::dropped`]).
    seen_dropped: u64,
    /// The root last reported entered here and not ended since.
    top: Option<[u8; 8]>,
    /// The one reported entered before it (current again when it ends).
    below: Option<[u8; 8]>,
    /// The attempt entered here last and not ended since.
    attempt: Option<SpanRef>,
    /// The attempt of another run that was current here when an attempt
    /// of a run opened in this thread (a task run inline inside a step)
    /// was entered: current again once that one ends.
    attempt_below: Option<SpanRef>,
    /// A thread span is attached in this thread (the Ruby layer said so).
    thread_span: bool,
    /// An app's block took a context of the gem's in this thread since its
    /// root was entered (the Ruby layer said so): the root entered again
    /// is verified.
    taken: bool,
    /// When this thread was last seen (a counter).
    used: u64,
}

impl View {
    /// Whether the thread may hold root contexts the Ruby layer must
    /// settle when runs end elsewhere.
    fn holds_roots(&self) -> bool {
        self.top.is_some() || self.below.is_some() || self.seen_ends == TOLD_NOTHING
    }
}

/// The views of up to [`MAX_THREADS`] threads.
#[derive(Debug)]
pub struct ThreadViews {
    /// The threads, apart from their views: one event reads this line or
    /// two to find its thread.
    ids: [u64; MAX_THREADS],
    views: [View; MAX_THREADS],
    len: usize,
    /// Run ends reported to any thread.
    ends: u64,
    /// Runs dropped unfinished (each also counts in `ends`): a thread not
    /// told of them since is told with "settle" or, when its event changed
    /// a span, "forget, then change".
    dropped: u64,
    clock: u64,
    /// Every current root entered again is verified: the Ruby layer cannot
    /// tell when an app's block takes a context (no detach guard).
    verify_always: bool,
}

impl Default for ThreadViews {
    fn default() -> Self {
        ThreadViews {
            ids: [0; MAX_THREADS],
            views: [View::default(); MAX_THREADS],
            len: 0,
            ends: 0,
            dropped: 0,
            clock: 0,
            verify_always: true,
        }
    }
}

impl ThreadViews {
    /// What `thread` must do about `change` (what an event it published did
    /// to the spans), and what it is told from now on.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn answer(&mut self, thread: u64, change: Option<SpanChange>) -> Answer {
        let run_ended = matches!(change, Some(SpanChange::RunEnded(_)));
        if run_ended {
            self.ends += 1;
            if let Some(SpanChange::RunEnded(r)) = change {
                self.forget_attempts(|a| a.root_span_id == r.span_id);
            }
        }
        let ends = self.ends;
        let dropped = self.dropped;
        let verify_always = self.verify_always;
        let view = self.view(thread);
        if !view.holds_roots() {
            // Nothing here to settle: runs that ended elsewhere concern it
            // not.
            view.seen_ends = ends;
            view.seen_dropped = dropped;
        }
        let up_to_date =
            view.seen_ends == ends || run_ended && view.seen_ends.wrapping_add(1) == ends;
        match change {
            None if up_to_date => Answer::Nothing,
            None => Self::settle(view, ends, dropped),
            Some(SpanChange::Entered(r)) if r.span_id != r.root_span_id => {
                match view.attempt {
                    // A run opened here inside a step of another run: that
                    // step's attempt is current again when this one ends.
                    Some(a)
                        if a.root_span_id != r.root_span_id && view.top == Some(r.root_span_id) =>
                    {
                        view.attempt_below = Some(a);
                    }
                    _ => {}
                }
                view.attempt = Some(r);
                if !(view.thread_span || view.top == Some(r.root_span_id)) {
                    // Nothing of the gem's answers for it here yet.
                    view.seen_ends = ends;
                    view.seen_dropped = dropped;
                    Answer::ThreadSpan
                } else if up_to_date {
                    Answer::Nothing
                } else {
                    Self::settle(view, ends, dropped)
                }
            }
            Some(SpanChange::Ended(r)) => {
                if view.attempt.is_some_and(|a| a.span_id == r.span_id) {
                    view.attempt = view.attempt_below.take();
                } else if view.attempt_below.is_some_and(|a| a.span_id == r.span_id) {
                    view.attempt_below = None;
                    return self.answer_unchanged(thread, up_to_date);
                } else {
                    // Ended in another thread than its own: no thread
                    // answers for it any longer.
                    self.forget_attempts(|a| a.span_id == r.span_id);
                    return self.answer_unchanged(thread, up_to_date);
                }
                if up_to_date {
                    Answer::Nothing
                } else {
                    Self::settle(view, ends, dropped)
                }
            }
            // The current root entered again: when an app's block took a
            // context of the gem's here since (a run opens inside the state
            // machine's transaction, and the block's end takes the root's
            // context: the initializer's copy, after it, puts it back), the
            // Ruby layer checks it. A root held below the current one
            // entered again changes nothing.
            Some(SpanChange::Entered(SpanRef { span_id, .. }))
                if up_to_date && view.top == Some(span_id) =>
            {
                if std::mem::take(&mut view.taken) || verify_always {
                    Answer::Verify
                } else {
                    Answer::Nothing
                }
            }
            Some(SpanChange::Entered(SpanRef { span_id, .. }))
                if up_to_date && view.below == Some(span_id) =>
            {
                Answer::Nothing
            }
            Some(SpanChange::Entered(r)) => {
                if view.top.is_some() && view.top != Some(r.span_id) {
                    view.below = view.top;
                }
                view.top = Some(r.span_id);
                view.seen_ends = ends;
                view.taken = false;
                Self::told(view, dropped, SpanChange::Entered(r))
            }
            Some(SpanChange::RunEnded(r)) => {
                view.top = None;
                view.below = None;
                if up_to_date {
                    view.seen_ends = ends;
                }
                Self::told(view, dropped, SpanChange::RunEnded(r))
            }
        }
    }

    fn settle(view: &mut View, ends: u64, dropped: u64) -> Answer {
        view.seen_ends = ends;
        view.seen_dropped = dropped;
        Answer::Settle
    }

    /// `change`, with the runs dropped since the thread was last told.
    fn told(view: &mut View, dropped: u64, change: SpanChange) -> Answer {
        if view.seen_dropped == dropped {
            Answer::Change(change)
        } else {
            view.seen_dropped = dropped;
            Answer::ForgetThenChange(change)
        }
    }

    /// No thread's current attempt is one that `gone` selects any longer.
    fn forget_attempts(&mut self, gone: impl Fn(&SpanRef) -> bool) {
        for view in &mut self.views[..self.len] {
            if view.attempt_below.as_ref().is_some_and(&gone) {
                view.attempt_below = None;
            }
            if view.attempt.as_ref().is_some_and(&gone) {
                view.attempt = view.attempt_below.take();
            }
        }
    }

    /// What `thread` is told for an event that changed nothing it holds.
    fn answer_unchanged(&mut self, thread: u64, up_to_date: bool) -> Answer {
        let (ends, dropped) = (self.ends, self.dropped);
        let view = self.view(thread);
        if up_to_date {
            Answer::Nothing
        } else {
            Self::settle(view, ends, dropped)
        }
    }

    /// A span ended without any thread's event (its run was expired or
    /// evicted): every thread settles at its next event.
    pub fn span_dropped(&mut self, root: [u8; 8]) {
        self.ends += 1;
        self.dropped += 1;
        self.forget_attempts(|a| a.root_span_id == root);
    }

    /// The attempt current in `thread`, when it is one of the run whose
    /// root is `root` (any run's when `None`): what a thread span, or a
    /// run's root asked in a thread running one of its steps, answers.
    pub fn attempt_in(&self, thread: u64, root: Option<[u8; 8]>) -> Option<SpanRef> {
        let at = self.ids[..self.len].iter().position(|&t| t == thread)?;
        let attempt = self.views[at].attempt?;
        match root {
            Some(root) if attempt.root_span_id != root => None,
            _ => Some(attempt),
        }
    }

    /// Whether `thread`'s step events may wait to be read: it holds a thread
    /// span and no root (a thread that holds a root is told, at its events,
    /// of runs that ended elsewhere or were dropped).
    pub fn queues(&self, thread: u64) -> bool {
        self.ids[..self.len]
            .iter()
            .position(|&t| t == thread)
            .is_some_and(|at| self.views[at].thread_span && !self.views[at].holds_roots())
    }

    /// Whether `thread` holds a thread span (the Ruby layer attached one,
    /// or an app's block took it).
    pub fn set_thread_span(&mut self, thread: u64, held: bool) {
        self.view(thread).thread_span = held;
    }

    /// An app's block took a context of the gem's in `thread` (the Ruby
    /// layer's detach guard saw it): the root current there, entered
    /// again, is verified.
    pub fn context_taken(&mut self, thread: u64) {
        self.view(thread).taken = true;
    }

    /// Whether every current root entered again is verified (true until
    /// the Ruby layer says its detach guard is in place).
    pub fn set_verify_always(&mut self, always: bool) {
        self.verify_always = always;
    }

    /// What an event that waited was answered was not acted on: `thread`
    /// is told everything at its next event read when it arrives (runs
    /// that ended elsewhere, runs dropped), as a thread new here.
    pub fn untell(&mut self, thread: u64) {
        let dropped = self.dropped;
        let view = self.view(thread);
        view.seen_ends = TOLD_NOTHING;
        view.seen_dropped = if dropped == 0 { 0 } else { u64::MAX };
    }

    /// Forgets every thread (the Ruby layer released or lost its contexts).
    pub fn clear(&mut self) {
        *self = ThreadViews {
            ends: self.ends,
            dropped: self.dropped,
            verify_always: self.verify_always,
            ..ThreadViews::default()
        };
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn view(&mut self, thread: u64) -> &mut View {
        self.clock += 1;
        let clock = self.clock;
        // A thread new here may hold contexts of runs dropped before.
        let seen_dropped = if self.dropped == 0 { 0 } else { u64::MAX };
        let at = match self.ids[..self.len].iter().position(|&t| t == thread) {
            Some(i) => i,
            None => {
                let i = if self.len < MAX_THREADS {
                    self.len += 1;
                    self.len - 1
                } else {
                    let idle = |v: &View| {
                        v.attempt.is_none()
                            && v.attempt_below.is_none()
                            && v.top.is_none()
                            && v.below.is_none()
                    };
                    (0..self.len)
                        .min_by_key(|&i| (!idle(&self.views[i]), self.views[i].used))
                        .unwrap_or(0)
                };
                // New here: it was told nothing, so it is told everything.
                self.ids[i] = thread;
                self.views[i] = View {
                    seen_ends: TOLD_NOTHING,
                    seen_dropped,
                    ..View::default()
                };
                i
            }
        };
        let view = &mut self.views[at];
        view.used = clock;
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attempt `id` of the run whose root is 9.
    fn span(id: u8) -> SpanRef {
        SpanRef {
            trace_id: [1; 16],
            span_id: [id; 8],
            root_span_id: [9; 8],
            sampled: true,
        }
    }

    /// The root of run `id`.
    fn root(id: u8) -> SpanRef {
        SpanRef {
            trace_id: [id; 16],
            span_id: [id; 8],
            root_span_id: [id; 8],
            sampled: true,
        }
    }

    fn entered(r: SpanRef) -> Option<SpanChange> {
        Some(SpanChange::Entered(r))
    }

    fn change(r: SpanRef) -> Answer {
        Answer::Change(SpanChange::Entered(r))
    }

    #[test]
    fn an_attempt_asks_for_a_thread_span_once_and_is_answered_there() {
        let mut v = ThreadViews::default();
        assert_eq!(v.answer(1, entered(span(5))), Answer::ThreadSpan);
        v.set_thread_span(1, true);
        assert_eq!(v.attempt_in(1, None), Some(span(5)));
        assert_eq!(v.attempt_in(1, Some([9; 8])), Some(span(5)));
        assert_eq!(v.attempt_in(1, Some([8; 8])), None);
        assert_eq!(v.attempt_in(2, None), None);
        // Entered again, ended, the next attempt: nothing to do.
        assert_eq!(v.answer(1, entered(span(5))), Answer::Nothing);
        assert_eq!(
            v.answer(1, Some(SpanChange::Ended(span(5)))),
            Answer::Nothing
        );
        assert_eq!(v.attempt_in(1, None), None);
        assert_eq!(v.answer(1, entered(span(6))), Answer::Nothing);
        assert_eq!(v.attempt_in(1, None), Some(span(6)));
        assert!(v.queues(1));
        // A root entered there: its events are read when they arrive.
        v.answer(1, entered(root(7)));
        assert!(!v.queues(1));
        v.answer(1, Some(SpanChange::RunEnded(root(7))));
        assert!(v.queues(1));
        // An app's block took the thread span: asked again.
        v.set_thread_span(1, false);
        assert!(!v.queues(1));
        assert_eq!(v.answer(1, entered(span(6))), Answer::ThreadSpan);
    }

    /// An attempt `id` of the run whose root is `root`.
    fn attempt_of(id: u8, root: u8) -> SpanRef {
        SpanRef {
            trace_id: [root; 16],
            span_id: [id; 8],
            root_span_id: [root; 8],
            sampled: true,
        }
    }

    #[test]
    fn a_run_inline_in_a_step_gives_the_step_back_its_attempt() {
        let mut v = ThreadViews::default();
        v.answer(1, entered(root(9)));
        v.answer(1, entered(attempt_of(5, 9)));
        // A task run inline inside step 5, in the same thread.
        v.answer(1, entered(root(7)));
        assert_eq!(v.attempt_in(1, Some([7; 8])), None);
        v.answer(1, entered(attempt_of(6, 7)));
        assert_eq!(v.attempt_in(1, Some([7; 8])), Some(attempt_of(6, 7)));
        v.answer(1, Some(SpanChange::Ended(attempt_of(6, 7))));
        assert_eq!(v.attempt_in(1, Some([9; 8])), Some(attempt_of(5, 9)));
        // Its next step, and its end without the step's end.
        v.answer(1, entered(attempt_of(4, 7)));
        v.answer(1, Some(SpanChange::RunEnded(root(7))));
        assert_eq!(v.attempt_in(1, Some([9; 8])), Some(attempt_of(5, 9)));
        v.answer(1, Some(SpanChange::Ended(attempt_of(5, 9))));
        assert_eq!(v.attempt_in(1, None), None);
        // Another run's attempt in a thread that did not open it replaces
        // the current one (a pool thread's next step).
        v.answer(2, entered(attempt_of(3, 9)));
        v.answer(2, entered(attempt_of(2, 8)));
        v.answer(2, Some(SpanChange::Ended(attempt_of(2, 8))));
        assert_eq!(v.attempt_in(2, None), None);
    }

    #[test]
    fn an_attempt_under_its_runs_root_in_the_same_thread_needs_nothing() {
        let mut v = ThreadViews::default();
        assert_eq!(v.answer(1, entered(root(9))), change(root(9)));
        assert_eq!(v.answer(1, entered(span(5))), Answer::Nothing);
        assert_eq!(v.attempt_in(1, Some([9; 8])), Some(span(5)));
        // Another run's root does not answer for it.
        assert_eq!(v.answer(2, entered(root(7))), change(root(7)));
        assert_eq!(v.answer(2, entered(span(6))), Answer::ThreadSpan);
    }

    #[test]
    fn the_current_root_entered_again_is_verified_and_nothing_else() {
        let mut v = ThreadViews::default();
        assert_eq!(v.answer(1, entered(root(9))), change(root(9)));
        // Its context may have been taken by an app's block since.
        assert_eq!(v.answer(1, entered(root(9))), Answer::Verify);
        assert_eq!(v.answer(1, None), Answer::Nothing);
        assert_eq!(v.answer(1, entered(root(8))), change(root(8)));
        // Held below the current one: nothing to do.
        assert_eq!(v.answer(1, entered(root(9))), Answer::Nothing);
        // Another thread is told.
        assert_eq!(v.answer(2, entered(root(9))), change(root(9)));
    }

    #[test]
    fn with_the_guard_the_current_root_is_verified_only_after_a_taking() {
        let mut v = ThreadViews::default();
        v.set_verify_always(false);
        assert_eq!(v.answer(1, entered(root(9))), change(root(9)));
        assert_eq!(v.answer(1, entered(root(9))), Answer::Nothing);
        // An app's block took a context here: verified once.
        v.context_taken(1);
        assert_eq!(v.answer(2, entered(root(9))), change(root(9)));
        assert_eq!(v.answer(2, entered(root(9))), Answer::Nothing);
        assert_eq!(v.answer(1, entered(root(9))), Answer::Verify);
        assert_eq!(v.answer(1, entered(root(9))), Answer::Nothing);
        // A taking before a root is entered says nothing of that root.
        v.context_taken(1);
        assert_eq!(v.answer(1, entered(root(8))), change(root(8)));
        assert_eq!(v.answer(1, entered(root(8))), Answer::Nothing);
        // Forgetting the threads keeps the setting.
        v.clear();
        assert_eq!(v.answer(1, entered(root(8))), change(root(8)));
        assert_eq!(v.answer(1, entered(root(8))), Answer::Nothing);
    }

    #[test]
    fn an_untold_thread_is_told_everything_at_its_next_event() {
        let mut v = ThreadViews::default();
        v.answer(1, entered(root(5)));
        v.answer(2, entered(root(6)));
        // Thread 1 was answered "settle" for an event it did not act on.
        v.answer(2, Some(SpanChange::RunEnded(root(6))));
        assert_eq!(v.answer(1, None), Answer::Settle);
        v.untell(1);
        assert_eq!(v.answer(1, None), Answer::Settle);
        assert_eq!(v.answer(1, None), Answer::Nothing);
        // With runs dropped, the next change carries them.
        v.span_dropped([4; 8]);
        v.answer(1, None);
        v.untell(1);
        assert_eq!(
            v.answer(1, entered(root(7))),
            Answer::ForgetThenChange(SpanChange::Entered(root(7)))
        );
    }

    #[test]
    fn a_run_end_elsewhere_settles_threads_holding_roots_only() {
        let mut v = ThreadViews::default();
        v.answer(1, entered(root(5)));
        v.answer(2, entered(root(6)));
        v.answer(3, None); // a step thread, told everything at first
        v.answer(3, None);
        let end = SpanChange::RunEnded(root(6));
        assert_eq!(v.answer(2, Some(end)), Answer::Change(end));
        // Thread 2 ended it itself: up to date.
        assert_eq!(v.answer(2, None), Answer::Nothing);
        // Thread 1 settles once, then is up to date; thread 3 holds no
        // root and is not asked to.
        assert_eq!(v.answer(1, None), Answer::Settle);
        assert_eq!(v.answer(1, None), Answer::Nothing);
        assert_eq!(v.answer(3, None), Answer::Nothing);
        // An attempt's end is nobody's business but its thread's.
        v.answer(3, entered(span(4)));
        v.set_thread_span(3, true);
        assert_eq!(
            v.answer(3, Some(SpanChange::Ended(span(4)))),
            Answer::Nothing
        );
        assert_eq!(v.answer(1, None), Answer::Nothing);
    }

    #[test]
    fn an_attempt_ended_in_another_thread_is_current_nowhere() {
        let mut v = ThreadViews::default();
        v.answer(2, entered(span(5)));
        v.set_thread_span(2, true);
        assert_eq!(
            v.answer(1, Some(SpanChange::Ended(span(5)))),
            Answer::Settle
        );
        assert_eq!(v.attempt_in(2, None), None);
        assert_eq!(
            v.answer(1, Some(SpanChange::Ended(span(5)))),
            Answer::Nothing
        );
    }

    #[test]
    fn a_run_end_forgets_its_attempts_in_every_thread() {
        let mut v = ThreadViews::default();
        v.answer(1, entered(root(9)));
        v.answer(2, entered(span(5)));
        v.set_thread_span(2, true);
        v.answer(1, Some(SpanChange::RunEnded(root(9))));
        assert_eq!(v.attempt_in(2, None), None);
        v.answer(2, entered(span(6)));
        v.span_dropped([9; 8]);
        assert_eq!(v.attempt_in(2, None), None);
    }

    #[test]
    fn an_end_of_the_top_root_makes_the_one_below_current_again() {
        let mut v = ThreadViews::default();
        v.answer(1, entered(root(9)));
        v.answer(1, entered(root(5)));
        v.answer(1, Some(SpanChange::RunEnded(root(5))));
        assert_eq!(v.answer(1, entered(root(9))), change(root(9)));
        assert_eq!(v.answer(1, entered(root(9))), Answer::Verify);
    }

    #[test]
    fn a_dropped_run_is_settled_even_after_an_entered_root() {
        let mut v = ThreadViews::default();
        v.answer(1, entered(root(5)));
        v.span_dropped([4; 8]);
        // The thread lets go of the dropped run before it enters.
        assert_eq!(
            v.answer(1, entered(root(6))),
            Answer::ForgetThenChange(SpanChange::Entered(root(6)))
        );
        assert_eq!(v.answer(1, None), Answer::Nothing);
        assert_eq!(v.answer(1, entered(root(6))), Answer::Verify);
        // Told by a settle instead: entering is a plain change.
        v.span_dropped([4; 8]);
        assert_eq!(v.answer(1, None), Answer::Settle);
        assert_eq!(v.answer(1, entered(root(7))), change(root(7)));
        // A thread first seen after a drop is told too.
        assert_eq!(
            v.answer(3, entered(root(8))),
            Answer::ForgetThenChange(SpanChange::Entered(root(8)))
        );
        assert_eq!(v.answer(3, None), Answer::Nothing);
        assert_eq!(v.answer(4, None), Answer::Settle);
        // An end told after a drop carries it too.
        v.answer(4, entered(root(2)));
        v.span_dropped([4; 8]);
        let end = SpanChange::RunEnded(root(2));
        assert_eq!(v.answer(4, Some(end)), Answer::ForgetThenChange(end));
    }

    #[test]
    fn a_thread_with_a_current_attempt_is_forgotten_last() {
        let mut v = ThreadViews::default();
        v.answer(1000, entered(span(5)));
        v.set_thread_span(1000, true);
        for t in 0..(MAX_THREADS as u64 * 2) {
            v.answer(t, None);
        }
        assert_eq!(v.attempt_in(1000, None), Some(span(5)));
    }

    #[test]
    fn a_forgotten_thread_is_told_everything() {
        let mut v = ThreadViews::default();
        v.answer(100, entered(root(5)));
        v.answer(100, entered(span(6)));
        // Every other thread holds a root too: the least recently seen goes.
        for t in 0..MAX_THREADS as u64 {
            v.answer(t, entered(root(7)));
        }
        assert_eq!(v.attempt_in(100, None), None);
        assert_eq!(v.answer(100, entered(root(5))), change(root(5)));
        v.clear();
        assert_eq!(v.answer(100, entered(root(5))), change(root(5)));
        assert_eq!(v.answer(100, None), Answer::Nothing);
    }
}
