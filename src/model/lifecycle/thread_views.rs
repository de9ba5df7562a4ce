//! What the connected path last told each publishing thread, so that an
//! event that changes nothing for that thread needs no Ruby code at all.
//!
//! The Ruby layer keeps, per fiber, the contexts it attached (the span on
//! top is the current one) and settles them when spans ended elsewhere. For
//! each Ruby thread this keeps the span last reported as entered there and
//! not ended since, the one entered before it, and how many span ends that
//! thread has been told of. An event whose change is entering one of those
//! two spans again, or no change, with no span ended since, is answered
//! with nothing, except the current span entered again: "verify", so
//! that the Ruby layer checks that an app's block did not take its
//! context; an event with no change after spans ended elsewhere is
//! answered with "settle". The view is per thread, not per fiber: fibers
//! that share a thread share it.

use super::run::{SpanChange, SpanRef};

/// Threads remembered; the least recently seen is forgotten past this many
/// (it is then told everything again).
pub const MAX_THREADS: usize = 16;

/// What the publishing thread must do after an event was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nothing: its current span stays.
    Nothing,
    /// No change of its own, but spans ended elsewhere since it was last
    /// told: release the contexts of those.
    Settle,
    /// The span current in this thread entered again (an attempt's next
    /// opening event, a run's second `task.start_requested`): check that
    /// its context is still where it was put (an app's block may have
    /// taken it).
    Verify,
    /// Apply this change.
    Change(SpanChange),
    /// Let go of the runs dropped since the thread was last told (see
    /// [`ThreadViews::span_dropped`]), then apply this change.
    ForgetThenChange(SpanChange),
}

#[derive(Clone, Copy, Debug, Default)]
struct View {
    thread: u64,
    /// Span ends this thread was told of (see [`ThreadViews::ends`]).
    seen_ends: u64,
    /// Dropped runs this thread was told of (see [`ThreadViews::dropped`]).
    seen_dropped: u64,
    /// The span last reported entered here and not ended since.
    top: Option<[u8; 8]>,
    /// The one reported entered before it (current again when it ends).
    below: Option<[u8; 8]>,
    /// When this thread was last seen (a counter).
    used: u64,
}

/// The views of up to [`MAX_THREADS`] threads.
#[derive(Debug, Default)]
pub struct ThreadViews {
    views: [View; MAX_THREADS],
    len: usize,
    /// Span ends reported to any thread.
    ends: u64,
    /// Runs dropped unfinished (each also counts in `ends`): a thread not
    /// told of them since is told with "settle" or, when its event changed
    /// a span, "forget, then change".
    dropped: u64,
    clock: u64,
}

impl ThreadViews {
    /// What `thread` must do about `change` (what an event it published did
    /// to the spans), and what it is told from now on.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn answer(&mut self, thread: u64, change: Option<SpanChange>) -> Answer {
        let ended = matches!(change, Some(SpanChange::Ended(_) | SpanChange::RunEnded(_)));
        if ended {
            self.ends += 1;
        }
        let ends = self.ends;
        let dropped = self.dropped;
        let view = self.view(thread);
        let up_to_date = view.seen_ends == ends || ended && view.seen_ends.wrapping_add(1) == ends;
        match change {
            None if up_to_date => Answer::Nothing,
            None => {
                view.seen_ends = ends;
                view.seen_dropped = dropped;
                Answer::Settle
            }
            // The current span (an attempt, or a run's root) entered again:
            // the Ruby layer checks that an app's block did not take its
            // context since (a run opens inside the state machine's
            // transaction, and the block's end takes the root's context:
            // the initializer's copy, after it, puts it back). A span held
            // below the current one entered again changes nothing.
            Some(SpanChange::Entered(SpanRef { span_id, .. }))
                if up_to_date && view.top == Some(span_id) =>
            {
                Answer::Verify
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
                Self::told(view, dropped, SpanChange::Entered(r))
            }
            Some(SpanChange::Ended(r)) => {
                if view.top == Some(r.span_id) {
                    view.top = view.below.take();
                } else if view.below == Some(r.span_id) {
                    view.below = None;
                }
                if up_to_date {
                    view.seen_ends = ends;
                }
                Self::told(view, dropped, SpanChange::Ended(r))
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

    /// `change`, with the runs dropped since the thread was last told.
    fn told(view: &mut View, dropped: u64, change: SpanChange) -> Answer {
        if view.seen_dropped == dropped {
            Answer::Change(change)
        } else {
            view.seen_dropped = dropped;
            Answer::ForgetThenChange(change)
        }
    }

    /// A span ended without any thread's event (its run was expired or
    /// evicted): every thread settles at its next event.
    pub fn span_dropped(&mut self) {
        self.ends += 1;
        self.dropped += 1;
    }

    /// Forgets every thread (the Ruby layer released or lost its contexts).
    pub fn clear(&mut self) {
        *self = ThreadViews {
            ends: self.ends,
            dropped: self.dropped,
            ..ThreadViews::default()
        };
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn view(&mut self, thread: u64) -> &mut View {
        self.clock += 1;
        let clock = self.clock;
        // A thread new here may hold contexts of runs dropped before.
        let seen_dropped = if self.dropped == 0 { 0 } else { u64::MAX };
        let at = match self.views[..self.len]
            .iter()
            .position(|v| v.thread == thread)
        {
            Some(i) => i,
            None if self.len < MAX_THREADS => {
                self.len += 1;
                self.len - 1
            }
            None => (0..self.len)
                .min_by_key(|&i| self.views[i].used)
                .unwrap_or(0),
        };
        let view = &mut self.views[at];
        if view.thread != thread || view.used == 0 {
            // New here: it was told nothing, so it is told everything.
            *view = View {
                thread,
                seen_ends: u64::MAX,
                seen_dropped,
                top: None,
                below: None,
                used: clock,
            };
        }
        view.used = clock;
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u8) -> SpanRef {
        SpanRef {
            trace_id: [1; 16],
            span_id: [id; 8],
            root_span_id: [9; 8],
            sampled: true,
        }
    }

    fn entered(id: u8) -> Option<SpanChange> {
        Some(SpanChange::Entered(span(id)))
    }

    #[test]
    fn the_current_attempt_entered_again_is_verified_and_nothing_else() {
        let mut v = ThreadViews::default();
        assert_eq!(v.answer(1, entered(5)), Answer::Change(entered(5).unwrap()));
        // Its context may have been taken by an app's block since.
        assert_eq!(v.answer(1, entered(5)), Answer::Verify);
        assert_eq!(v.answer(1, None), Answer::Nothing);
        assert_eq!(v.answer(1, entered(6)), Answer::Change(entered(6).unwrap()));
        // Held below the current one: nothing to do.
        assert_eq!(v.answer(1, entered(5)), Answer::Nothing);
        // The current root entered again is verified too.
        let root = SpanChange::Entered(span(9));
        assert_eq!(v.answer(2, Some(root)), Answer::Change(root));
        assert_eq!(v.answer(2, Some(root)), Answer::Verify);
        // Another thread is told.
        assert_eq!(v.answer(2, entered(5)), Answer::Change(entered(5).unwrap()));
    }

    #[test]
    fn an_end_elsewhere_makes_the_next_event_settle() {
        let mut v = ThreadViews::default();
        v.answer(1, entered(5));
        v.answer(2, entered(6));
        let end = SpanChange::Ended(span(6));
        assert_eq!(v.answer(2, Some(end)), Answer::Change(end));
        // Thread 2 ended it itself: up to date.
        assert_eq!(v.answer(2, None), Answer::Nothing);
        // Thread 1 settles once, then is up to date.
        assert_eq!(v.answer(1, None), Answer::Settle);
        assert_eq!(v.answer(1, None), Answer::Nothing);
        // Entering its own span again after an end elsewhere is reported.
        v.answer(2, entered(7));
        v.answer(2, Some(SpanChange::Ended(span(7))));
        assert_eq!(v.answer(1, entered(5)), Answer::Change(entered(5).unwrap()));
    }

    #[test]
    fn an_end_of_the_top_span_makes_the_one_below_current_again() {
        let mut v = ThreadViews::default();
        v.answer(1, entered(9));
        v.answer(1, entered(5));
        v.answer(1, Some(SpanChange::Ended(span(5))));
        // 9 (the root) is current again: entering it again is verified.
        assert_eq!(v.answer(1, entered(9)), Answer::Verify);
        assert_eq!(v.answer(1, entered(5)), Answer::Change(entered(5).unwrap()));
        v.answer(1, Some(SpanChange::Ended(span(5))));
        v.answer(1, Some(SpanChange::Ended(span(9))));
        assert_eq!(v.answer(1, entered(9)), Answer::Change(entered(9).unwrap()));
        v.answer(1, Some(SpanChange::RunEnded(span(9))));
        assert_eq!(v.answer(1, entered(5)), Answer::Change(entered(5).unwrap()));
    }

    #[test]
    fn a_dropped_run_is_settled_even_after_an_entered_span() {
        let mut v = ThreadViews::default();
        v.answer(1, entered(5));
        v.answer(1, Some(SpanChange::Ended(span(5))));
        v.span_dropped();
        // The thread lets go of the dropped run before it enters.
        assert_eq!(
            v.answer(1, entered(6)),
            Answer::ForgetThenChange(entered(6).unwrap())
        );
        assert_eq!(v.answer(1, None), Answer::Nothing);
        assert_eq!(v.answer(1, entered(6)), Answer::Verify);
        // Told by a settle instead: entering is a plain change.
        v.span_dropped();
        assert_eq!(v.answer(1, None), Answer::Settle);
        assert_eq!(v.answer(1, entered(7)), Answer::Change(entered(7).unwrap()));
        // A thread first seen after a drop is told too.
        assert_eq!(
            v.answer(3, entered(8)),
            Answer::ForgetThenChange(entered(8).unwrap())
        );
        assert_eq!(v.answer(3, None), Answer::Nothing);
        assert_eq!(v.answer(4, None), Answer::Settle);
        assert_eq!(v.answer(4, entered(9)), Answer::Change(entered(9).unwrap()));
        // An end told after a drop carries it too.
        v.span_dropped();
        let end = SpanChange::Ended(span(9));
        assert_eq!(v.answer(4, Some(end)), Answer::ForgetThenChange(end));
        let run_end = SpanChange::RunEnded(span(9));
        assert_eq!(v.answer(4, Some(run_end)), Answer::Change(run_end));
    }

    #[test]
    fn a_forgotten_thread_is_told_everything() {
        let mut v = ThreadViews::default();
        v.answer(100, entered(5));
        for t in 0..MAX_THREADS as u64 {
            v.answer(t, None);
        }
        assert_eq!(
            v.answer(100, entered(5)),
            Answer::Change(entered(5).unwrap())
        );
        v.clear();
        assert_eq!(
            v.answer(100, entered(5)),
            Answer::Change(entered(5).unwrap())
        );
        assert_eq!(v.answer(100, None), Answer::Nothing);
    }
}
