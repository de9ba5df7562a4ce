//! The tracer's state and the rules that turn each event into spans: which run
//! an event belongs to, what it opens, merges or closes, and the bounds on
//! open runs, finished runs and remembered runs.

use std::collections::VecDeque;
use std::sync::Arc;

use hashlink::LinkedHashMap;

use crate::support::ids::IdGenerator;

use super::limits::{LifecycleLimits, DEFAULT_ATTRIBUTE_PREFIX};
use super::open_runs::{closing_status, merge_attrs, rename_error_class, LiveRun, Room, Target};
use super::run::{Link, Run, RunEnd, SpanChange, SpanRef, TASK_INIT_SPAN_NAME};
use super::thread_views::{Answer, ThreadViews};
use crate::input::lifecycle::attributes::{AttrKey, AttrValue};
use crate::input::lifecycle::event::{
    EventKind, EventName, Id, LifecycleEvent, ParentSpan, ToState,
};
use crate::input::lifecycle::repeat::{Repeat, RepeatKey, Word};
use crate::model::sampling::{KeptSpans, Sampling};

/// The step event recorded last (see [`State::remember`]).
#[derive(Clone, Copy, Debug)]
struct Remembered {
    key: RepeatKey,
    /// Copies read from this monotonic time on are recorded in full.
    until_ns: u64,
    /// A higher `attempt_number` a copy brought, not merged yet.
    pending_attempt: Option<i64>,
}

/// What [`crate::model::lifecycle::Tracer::record`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordOutcome {
    /// A new run (root span) was opened.
    RunOpened,
    /// A run was ended.
    RunClosed,
    /// A new step attempt span was opened.
    AttemptOpened,
    /// An attempt was ended.
    AttemptClosed,
    /// A duplicate merged its attributes into an existing span.
    Merged,
    /// Recorded as a span event.
    EventAdded,
    /// A closing step event with no attempt to close, recorded as a span event
    /// on the task span (counted as orphaned).
    OrphanRecorded,
    /// The event's run had no room left (`max_spans_per_run`) for it.
    Dropped,
    /// No task id, or `task.initialize_requested` with no open run.
    Ignored,
    /// No run of its task is known (open, finished or exported): not stored.
    Orphaned,
    /// For a run already exported (or that cannot take it any more): not stored.
    Late,
}

/// Counters and sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifecycleStats {
    pub open_runs: usize,
    /// Finished (or restored) runs waiting for export.
    pub finished_runs: usize,
    /// Events that opened, closed, merged into or annotated a span.
    pub events_recorded: u64,
    /// Of those, step events that repeated the one before them and were
    /// counted without being read (see [`State::repeated`]).
    pub events_repeated: u64,
    pub events_ignored: u64,
    /// Both [`RecordOutcome::Orphaned`] and [`RecordOutcome::OrphanRecorded`].
    pub events_orphaned: u64,
    pub events_late: u64,
    /// Events refused for lack of room in their run.
    pub events_dropped: u64,
    /// Events the binding refused before they reached the model (a payload
    /// that is not a Hash, a name that is not a String or Symbol).
    pub events_refused: u64,
    /// Open runs that saw no event for `ttl` (not exported).
    pub runs_expired: u64,
    /// Open runs evicted by `max_open_runs` (not exported).
    pub runs_evicted: u64,
    /// Finished runs dropped by `max_finished_runs` before export.
    pub finished_runs_dropped: u64,
    /// Spans and span events lost to `max_spans_per_run` (evicted or refused).
    pub spans_dropped: u64,
    /// Runs that ended left out by sampling and not exported: their head
    /// decision, made when they opened, said no (the ratio, or an unsampled
    /// OpenTelemetry parent under a parent-based sampler) and no keep rule
    /// held when they ended.
    pub sampled_out: u64,
    /// Spans of runs the head left out that a keep rule brought back.
    pub kept_spans: KeptSpans,
    /// Times the connected path could not detach its OpenTelemetry context
    /// in the order the API requires (the app attached its own after ours
    /// and had not detached it) and restored the app's context above ours.
    pub context_restores: u64,
}

impl LifecycleStats {
    /// Every event handed to `record`, whatever became of it.
    pub fn events_seen(&self) -> u64 {
        self.events_recorded
            + self.events_ignored
            + self.events_orphaned
            + self.events_late
            + self.events_dropped
            + self.events_refused
    }
}

/// What is remembered of a task's latest finished run, for the link from its
/// next run, for merging late duplicates, and to tell late events from orphans.
#[derive(Clone, Copy, Debug)]
struct Past {
    link: Link,
    /// Its number in `finished` while it waits there.
    waiting: Option<u64>,
}

/// The clock an export reads: `now_ns` for settling finished runs, and
/// `expire_ns` (at most `now_ns`) for expiring idle open ones, held back
/// while events wait to be read (see `Tracer::hold_expiry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Clock {
    pub now_ns: u64,
    pub expire_ns: u64,
}

/// What [`State::take_settled`] removed, made into exported data after the
/// lock is released: restored, then settled, then finished runs.
#[derive(Default)]
pub(crate) struct Settled {
    pub restored: VecDeque<Run>,
    pub ready: VecDeque<LiveRun>,
    pub finished: LinkedHashMap<u64, LiveRun>,
}

impl Settled {
    pub fn into_runs(self) -> Vec<Run> {
        let mut runs =
            Vec::with_capacity(self.restored.len() + self.ready.len() + self.finished.len());
        runs.extend(self.restored);
        runs.extend(self.ready.into_iter().map(LiveRun::into_run));
        runs.extend(self.finished.into_iter().map(|(_, r)| r.into_run()));
        runs
    }
}

/// Runs dropped while the lock is held, freed after it is released.
#[derive(Default)]
pub(crate) struct Garbage {
    pub live: Vec<LiveRun>,
    pub runs: Vec<Run>,
    /// Undecided runs swapped out whole (see `State::undecided`).
    pub held: Option<LinkedHashMap<u64, LiveRun>>,
}

/// The finished run `number` still taking late events: waiting for export
/// (`false`) or undecided (`true`).
fn waiting_run<'a>(
    finished: &'a mut LinkedHashMap<u64, LiveRun>,
    undecided: &'a mut LinkedHashMap<u64, LiveRun>,
    number: u64,
) -> Option<(&'a mut LiveRun, bool)> {
    match finished.get_mut(&number) {
        Some(run) => Some((run, false)),
        None => undecided.get_mut(&number).map(|r| (r, true)),
    }
}

/// What becomes of a run as it ends (see [`State::finish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// Sampled, or kept by a rule: it waits for export.
    Export,
    /// Left out so far, with an attempt still open: undecided.
    Hold,
    /// Left out: freed, counted as sampled out.
    Drop,
}

const PENDING: EventName = EventName::synthetic("task.pending");

pub(crate) struct State {
    limits: LifecycleLimits,
    ids: IdGenerator,
    /// Open runs by task, least recently active first.
    open: LinkedHashMap<Id, LiveRun>,
    /// Finished runs by number, least recently active first.
    finished: LinkedHashMap<u64, LiveRun>,
    /// Runs the head left out and no keep rule kept as they ended, while an
    /// attempt of theirs was still open: that attempt's closing event may
    /// yet arrive and fail it. Each takes its late events as a finished run
    /// does (by number, least recently active first), moves to `finished`
    /// the moment a keep rule holds, and is freed and counted as sampled
    /// out when a finished run would stop taking them (an export's take,
    /// settling, its task's next run) or past `max_finished_runs`.
    undecided: LinkedHashMap<u64, LiveRun>,
    /// Runs put back after a failed delivery; older than any in `finished`.
    restored: VecDeque<Run>,
    /// Runs settled while a background exporter takes them: they take no
    /// more merges and wait for its next take, oldest first (older than any
    /// in `finished`, younger than `restored`).
    ready: VecDeque<LiveRun>,
    /// With a background exporter taking: how long a finished run waits for
    /// late duplicates (see [`State::set_export_settle`]); `None` without.
    export_settle_ns: Option<u64>,
    /// Latest finished run per task, least recently finished first.
    history: LinkedHashMap<Id, Past>,
    next_run: u64,
    stats: LifecycleStats,
    pub prefix: Prefix,
    /// The `lifecycle_workflow_events` setting (read when subscribing).
    pub workflow_events: bool,
    /// The sampling settings; each run's head decision is made with the
    /// ones in force when it opens, the keep rules with the ones in force
    /// when it ends.
    pub sampling: Sampling,
    /// The `opentelemetry_context` setting (`None`: `:auto`), read by the
    /// binding's Ruby layer when it subscribes and when settings change.
    pub opentelemetry_context: Option<bool>,
    /// The step event recorded last, while a copy of it would change
    /// nothing (see [`State::repeated`]); cleared by anything else that
    /// changes the state.
    repeat: Option<Remembered>,
    /// What the connected path last told each publishing thread.
    pub threads: ThreadViews,
    /// The root span ids of the open runs dropped (expired or evicted)
    /// lately, newest last, at most [`MAX_DROPPED_ROOTS`]: the connected
    /// path's Ruby layer lets go of their contexts (see
    /// [`State::dropped_roots_since`]).
    dropped_roots: VecDeque<[u8; 8]>,
    /// How many open runs were ever dropped.
    dropped_total: u64,
}

/// Dropped runs' root span ids kept for the connected path (see
/// `State::dropped_roots`).
pub const MAX_DROPPED_ROOTS: usize = 1024;

/// The attribute keys' prefix: `<name>.`, the name being the
/// `attribute_prefix` setting, else the default the binding found (Tasker's
/// own telemetry service name), else `tasker`.
#[derive(Clone, Debug)]
pub(crate) struct Prefix {
    pub configured: Option<Arc<str>>,
    pub fallback: Arc<str>,
    /// `<name>.`, made whenever one of the two changes.
    pub effective: Arc<str>,
}

impl Default for Prefix {
    fn default() -> Prefix {
        let fallback: Arc<str> = Arc::from(DEFAULT_ATTRIBUTE_PREFIX);
        Prefix {
            effective: dotted(&fallback),
            configured: None,
            fallback,
        }
    }
}

fn dotted(name: &str) -> Arc<str> {
    Arc::from(format!("{name}."))
}

impl Prefix {
    pub fn set(&mut self, configured: Option<Arc<str>>, fallback: Option<Arc<str>>) {
        self.configured = configured;
        if let Some(f) = fallback {
            self.fallback = f;
        }
        self.effective = dotted(self.configured.as_deref().unwrap_or(&self.fallback));
    }
}

impl State {
    pub fn new(limits: LifecycleLimits) -> State {
        State {
            limits: limits.sanitized(),
            ids: IdGenerator::new(),
            open: LinkedHashMap::new(),
            finished: LinkedHashMap::new(),
            undecided: LinkedHashMap::new(),
            restored: VecDeque::new(),
            ready: VecDeque::new(),
            export_settle_ns: None,
            history: LinkedHashMap::new(),
            next_run: 0,
            stats: LifecycleStats::default(),
            prefix: Prefix::default(),
            workflow_events: false,
            sampling: Sampling::default(),
            opentelemetry_context: None,
            repeat: None,
            threads: ThreadViews::default(),
            dropped_roots: VecDeque::new(),
            dropped_total: 0,
        }
    }

    pub fn limits(&self) -> LifecycleLimits {
        self.limits
    }

    /// Makes the trace and span ids follow from `seed` (test hooks).
    pub fn seed_ids(&mut self, seed: u64) {
        self.ids = IdGenerator::seeded(seed);
    }

    pub fn stats(&self) -> LifecycleStats {
        LifecycleStats {
            open_runs: self.open.len(),
            finished_runs: self.waiting(),
            ..self.stats
        }
    }

    /// Applies one prepared event.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn apply(&mut self, ev: &mut LifecycleEvent, garbage: &mut Garbage) -> RecordOutcome {
        self.forget_repeat();
        self.expire(ev.at.mono_ns, garbage);
        let outcome = self.route(ev, garbage);
        let s = &mut self.stats;
        match outcome {
            RecordOutcome::Ignored => s.events_ignored += 1,
            RecordOutcome::Orphaned | RecordOutcome::OrphanRecorded => s.events_orphaned += 1,
            RecordOutcome::Late => s.events_late += 1,
            RecordOutcome::Dropped => s.events_dropped += 1,
            _ => s.events_recorded += 1,
        }
        outcome
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn route(&mut self, ev: &mut LifecycleEvent, garbage: &mut Garbage) -> RecordOutcome {
        let Some(task) = ev.task_id.take() else {
            if ev.kind() == EventKind::TaskFailed {
                return self.failed_creation(ev, garbage);
            }
            return RecordOutcome::Ignored;
        };
        let max = self.limits.max_spans_per_run;
        if let Some(run) = self.open.to_back(&task) {
            run.touch(ev.at);
            let (outcome, ended) = if run.records {
                apply_to_run(run, ev, true, &mut self.ids, &mut self.stats, max)
            } else {
                apply_bare(run, ev, true)
            };
            if ended {
                if let Some(run) = self.open.remove(&task) {
                    self.finish(run, garbage);
                }
            }
            return outcome;
        }
        match ev.kind() {
            // The state machine's transition into in_progress, in the process
            // that runs the task: the run starts.
            EventKind::TaskStartRequested if ev.to_state == ToState::InProgress => {
                self.open_run(task, ev, garbage)
            }
            // Creation and enqueueing open nothing; what comes before the
            // next run opens (a retry's step back to pending, the transition
            // about to start) is not the finished run's.
            EventKind::TaskStartRequested | EventKind::Preamble | EventKind::StepRetryRequested => {
                RecordOutcome::Ignored
            }
            kind => match self.history.get(&task).copied() {
                Some(Past {
                    waiting: Some(number),
                    ..
                }) => match waiting_run(&mut self.finished, &mut self.undecided, number) {
                    Some((run, held)) => {
                        let (outcome, _) = if run.records {
                            apply_to_run(run, ev, false, &mut self.ids, &mut self.stats, max)
                        } else {
                            apply_bare(run, ev, false)
                        };
                        if outcome != RecordOutcome::Late {
                            // The root ends at the run's last event.
                            run.root.extend_to(ev.at);
                            run.touch(ev.at);
                            if held {
                                self.undecided.to_back(&number);
                                self.decide_undecided(number, garbage);
                            } else {
                                self.finished.to_back(&number);
                            }
                        }
                        outcome
                    }
                    // Taken by an export that swapped the finished runs out.
                    None if kind == EventKind::TaskInitializeRequested => RecordOutcome::Ignored,
                    None => RecordOutcome::Late,
                },
                _ if kind == EventKind::TaskInitializeRequested => RecordOutcome::Ignored,
                Some(_) => RecordOutcome::Late,
                None => RecordOutcome::Orphaned,
            },
        }
    }

    /// `task.failed` without a task id: the task's creation failed (its
    /// context did not validate). One finished run of one span,
    /// `tasker.task.initialize`, status ERROR with the error message.
    fn failed_creation(&mut self, ev: &mut LifecycleEvent, garbage: &mut Garbage) -> RecordOutcome {
        let (trace_id, span_id) = self.ids.trace_and_span();
        let mut attrs = std::mem::take(&mut ev.attrs);
        rename_error_class(&mut attrs);
        let mut run = LiveRun::new(None, trace_id, span_id, ev.at, attrs, None);
        run.root_name = TASK_INIT_SPAN_NAME;
        run.root.end_at(ev.at);
        run.root.status = closing_status(EventKind::TaskFailed, &run.root);
        run.end = RunEnd::Failed;
        self.sampling_decision(&mut run, None);
        self.finish(run, garbage);
        RecordOutcome::RunClosed
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn open_run(
        &mut self,
        task: Id,
        ev: &mut LifecycleEvent,
        garbage: &mut Garbage,
    ) -> RecordOutcome {
        let mut parent: Option<ParentSpan> = ev.parent.take();
        while self.open.len() >= self.limits.max_open_runs {
            match self.open.pop_front() {
                Some((_, run)) => {
                    self.stats.runs_evicted += 1;
                    parent = parent.and_then(|p| run.parent_in_place_of(p));
                    self.drop_open(run, garbage);
                }
                None => break,
            }
        }
        // Under an OpenTelemetry parent the run joins its trace.
        let (trace_id, span_id) = match parent {
            Some(p) => (p.trace_id, self.ids.span_id()),
            None => self.ids.trace_and_span(),
        };
        // From now on the task's events belong to this run; its previous run,
        // if still waiting for export, takes no more of them.
        let (link, waiting) = match self.history.get_mut(&task) {
            Some(p) => (Some(p.link), p.waiting.take()),
            None => (None, None),
        };
        if let Some(run) = waiting.and_then(|n| self.undecided.remove(&n)) {
            self.stats.sampled_out += 1;
            garbage.live.push(run);
        }
        let mut attrs = std::mem::take(&mut ev.attrs);
        rename_error_class(&mut attrs);
        attrs.push((AttrKey::TaskId, task.to_value()));
        let mut run = LiveRun::new(Some(task.clone()), trace_id, span_id, ev.at, attrs, link);
        run.parent = parent.map(|p| p.span_id);
        self.sampling_decision(&mut run, parent.map(|p| p.sampled));
        self.open.insert(task, run);
        RecordOutcome::RunOpened
    }

    /// The run's one sampling decision, made when it opens (the one place a
    /// run's `sampled` is decided): the sampler in force applied to its trace
    /// id, or to its OpenTelemetry parent's sampled flag (`parent_sampled`:
    /// parent-based samplers, the default, follow it). The keep rules can
    /// only add a run left out here, when it ends (see [`State::finish`]).
    /// A run left out records its spans when a keep rule may bring it back,
    /// or when it has a parent (the connected path puts its spans in the
    /// OpenTelemetry context, marked unsampled).
    fn sampling_decision(&self, run: &mut LiveRun, parent_sampled: Option<bool>) {
        run.sampled = self.sampling.head(&run.trace_id, parent_sampled);
        run.records = run.sampled || self.sampling.any_rule() || parent_sampled.is_some();
    }

    /// Whether a run that just ended goes on to export: sampled at its
    /// head, or kept by a rule (its spans counted under the rule); a run
    /// left out by both waits undecided while an attempt of it is still
    /// open, else is counted as `sampled_out`.
    fn exported(&mut self, run: &LiveRun) -> Decision {
        if run.sampled {
            return Decision::Export;
        }
        let rule = if run.records {
            self.sampling.keep_rule(&run.facts())
        } else {
            None
        };
        match rule {
            Some(rule) => {
                self.stats.kept_spans.add(rule, run.spans() as u64);
                Decision::Export
            }
            // An attempt still open may yet fail (its closing event comes
            // after the task's end): the run waits for it undecided.
            None if run.records && run.any_attempt_open() => Decision::Hold,
            None => {
                self.stats.sampled_out += 1;
                Decision::Drop
            }
        }
    }

    /// After a late event merged into the undecided run `number`: a keep
    /// rule that now holds (a late failure) moves it to the finished runs,
    /// to be exported whole.
    fn decide_undecided(&mut self, number: u64, garbage: &mut Garbage) {
        let rule = match self.undecided.get(&number) {
            Some(run) => self.sampling.keep_rule(&run.facts()),
            None => None,
        };
        let Some(rule) = rule else {
            return;
        };
        if let Some(run) = self.undecided.remove(&number) {
            self.stats.kept_spans.add(rule, run.spans() as u64);
            self.wait_for_export(number, run, garbage);
        }
    }

    /// Frees the undecided runs a finished run would no longer take late
    /// events for: idle for `settle_ns` at `now_ns` (least recently active
    /// first), or all of them (`None`: an export's take, swapped out).
    fn settle_undecided(&mut self, now_ns: u64, settle_ns: Option<u64>, garbage: &mut Garbage) {
        let Some(settle_ns) = settle_ns else {
            let all = std::mem::take(&mut self.undecided);
            self.stats.sampled_out += all.len() as u64;
            if !all.is_empty() {
                garbage.held = Some(all);
            }
            return;
        };
        while let Some((_, run)) = self.undecided.front() {
            if now_ns.saturating_sub(run.last_active) < settle_ns {
                break;
            }
            self.drop_undecided_oldest(garbage);
        }
    }

    fn drop_undecided_oldest(&mut self, garbage: &mut Garbage) {
        if let Some((number, run)) = self.undecided.pop_front() {
            self.forget_waiting(run.task.as_ref(), number);
            self.stats.sampled_out += 1;
            garbage.live.push(run);
        }
    }

    /// Moves an ended run to the finished runs (or the undecided ones) and
    /// remembers it for its task; a run sampling leaves out (head and keep
    /// rules) is remembered (for the link) and dropped.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn finish(&mut self, run: LiveRun, garbage: &mut Garbage) {
        let decision = self.exported(&run);
        if decision == Decision::Drop {
            if let Some(task) = &run.task {
                let past = Past {
                    link: Link {
                        trace_id: run.trace_id,
                        span_id: run.root.span_id,
                    },
                    waiting: None,
                };
                self.history.insert(task.clone(), past);
                self.bound_history();
            }
            garbage.live.push(run);
            return;
        }
        let number = self.next_run;
        self.next_run += 1;
        let past = Past {
            link: Link {
                trace_id: run.trace_id,
                span_id: run.root.span_id,
            },
            waiting: Some(number),
        };
        // `insert` moves an existing key to the back.
        if let Some(task) = &run.task {
            self.history.insert(task.clone(), past);
            self.bound_history();
        }
        if decision == Decision::Hold {
            let now_ns = run.last_active;
            self.undecided.insert(number, run);
            if self.export_settle_ns.is_some() {
                self.settle_undecided(now_ns, self.export_settle_ns, garbage);
            }
            while self.undecided.len() > self.limits.max_finished_runs {
                self.drop_undecided_oldest(garbage);
            }
            return;
        }
        self.wait_for_export(number, run, garbage);
    }

    /// Puts the finished run `number` among the runs waiting for export.
    fn wait_for_export(&mut self, number: u64, run: LiveRun, garbage: &mut Garbage) {
        let now_ns = run.last_active;
        self.finished.insert(number, run);
        if let Some(settle_ns) = self.export_settle_ns {
            self.settle_front(now_ns, settle_ns);
        }
        self.bound_finished(garbage);
    }

    /// Finished runs waiting for export: settling, settled and restored.
    fn waiting(&self) -> usize {
        self.finished.len() + self.ready.len() + self.restored.len()
    }

    /// Moves the finished runs idle for at least `settle_ns` at `now_ns`
    /// from the front of `finished` to `ready` (amortised: each run moves
    /// once, and one comparison ends the walk).
    fn settle_front(&mut self, now_ns: u64, settle_ns: u64) {
        while let Some((_, run)) = self.finished.front() {
            if now_ns.saturating_sub(run.last_active) < settle_ns {
                break;
            }
            self.settle_oldest();
        }
    }

    /// Moves the oldest settling run to `ready`: it takes no more merges.
    fn settle_oldest(&mut self) {
        if let Some((number, run)) = self.finished.pop_front() {
            self.forget_waiting(run.task.as_ref(), number);
            self.ready.push_back(run);
        }
    }

    /// With a background exporter taking (`Some(settle)`), a finished run
    /// waits `settle` for late duplicates and then moves to the runs ready
    /// for its next take; when `max_finished_runs` runs are settling, the
    /// oldest is settled at once instead of being dropped. The settled runs
    /// have their own bound of `max_finished_runs` (the oldest is dropped,
    /// counted). Without (`None`), one bound covers every waiting run and the
    /// oldest is dropped.
    pub fn set_export_settle(&mut self, settle_ns: Option<u64>, garbage: &mut Garbage) {
        self.forget_repeat();
        self.export_settle_ns = settle_ns;
        self.bound_finished(garbage);
    }

    fn bound_history(&mut self) {
        let max = self
            .limits
            .max_open_runs
            .saturating_add(self.limits.max_finished_runs);
        while self.history.len() > max && self.history.pop_front().is_some() {}
    }

    fn bound_finished(&mut self, garbage: &mut Garbage) {
        let max = self.limits.max_finished_runs;
        while self.undecided.len() > max {
            self.drop_undecided_oldest(garbage);
        }
        if self.export_settle_ns.is_some() {
            while self.finished.len() > max {
                self.settle_oldest();
            }
        }
        loop {
            let over = if self.export_settle_ns.is_some() {
                self.ready.len() + self.restored.len() > max
            } else {
                self.waiting() > max
            };
            if !over {
                break;
            }
            if let Some(run) = self.restored.pop_front() {
                garbage.runs.push(run);
            } else if let Some(run) = self.ready.pop_front() {
                garbage.live.push(run);
            } else if let Some((number, run)) = self.finished.pop_front() {
                self.forget_waiting(run.task.as_ref(), number);
                garbage.live.push(run);
            } else {
                break;
            }
            self.stats.finished_runs_dropped += 1;
        }
    }

    fn forget_waiting(&mut self, task: Option<&Id>, number: u64) {
        if let Some(past) = task.and_then(|t| self.history.get_mut(t)) {
            if past.waiting == Some(number) {
                past.waiting = None;
            }
        }
    }

    /// An open run taken out unfinished (expired or evicted): its root is
    /// remembered for the connected path, and every thread is told to
    /// settle.
    fn drop_open(&mut self, run: LiveRun, garbage: &mut Garbage) {
        if self.dropped_roots.len() >= MAX_DROPPED_ROOTS {
            self.dropped_roots.pop_front();
        }
        self.dropped_roots.push_back(run.root.span_id);
        self.dropped_total += 1;
        self.threads.span_dropped(run.root.span_id);
        garbage.live.push(run);
    }

    /// The root span ids of the open runs dropped after the first `seen`
    /// ever dropped (at most the last [`MAX_DROPPED_ROOTS`]), and how many
    /// were ever dropped.
    pub fn dropped_roots_since(&self, seen: u64) -> (u64, Vec<[u8; 8]>) {
        let new = self.dropped_total.saturating_sub(seen);
        let kept = self.dropped_roots.len();
        let from = kept.saturating_sub(usize::try_from(new).unwrap_or(usize::MAX));
        (
            self.dropped_total,
            self.dropped_roots.iter().skip(from).copied().collect(),
        )
    }

    /// Expires open runs idle for at least the TTL at `now_ns` (monotonic).
    /// Only the least recently active run is looked at until one is not idle
    /// long enough, so the check costs one comparison per event.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn expire(&mut self, now_ns: u64, garbage: &mut Garbage) -> usize {
        self.forget_repeat();
        let ttl = self.limits.ttl_ns();
        let mut expired = 0;
        while let Some((_, run)) = self.open.front() {
            if now_ns.saturating_sub(run.last_active) < ttl {
                break;
            }
            if let Some((_, run)) = self.open.pop_front() {
                self.drop_open(run, garbage);
                expired += 1;
            }
        }
        self.stats.runs_expired += expired as u64;
        expired
    }

    /// Removes the restored runs, the settled runs and the finished runs
    /// idle for at least `settled_ns` at `now_ns`, oldest first. Containers
    /// are swapped out, not walked: with `settled_ns` zero every finished
    /// run goes in one swap (their tasks' later events then find no run
    /// and count as late); otherwise only the front runs that settled since
    /// the last finish are moved.
    pub fn take_settled(&mut self, now: Clock, settled_ns: u64, garbage: &mut Garbage) -> Settled {
        let now_ns = now.now_ns;
        self.forget_repeat();
        self.expire(now.expire_ns, garbage);
        let finished = if settled_ns == 0 {
            self.settle_undecided(now_ns, None, garbage);
            std::mem::take(&mut self.finished)
        } else {
            self.settle_front(now_ns, settled_ns);
            self.settle_undecided(now_ns, Some(settled_ns), garbage);
            LinkedHashMap::new()
        };
        Settled {
            restored: std::mem::take(&mut self.restored),
            ready: std::mem::take(&mut self.ready),
            finished,
        }
    }

    /// In a fork child: removes the finished runs that ended at or before
    /// `forked_at_ns` (monotonic), which belong to the parent's exporter.
    /// The child's own stay where they are (settling ones still take their
    /// late duplicates). Returns how many were removed.
    pub fn discard_finished_before(&mut self, forked_at_ns: u64, garbage: &mut Garbage) -> usize {
        self.forget_repeat();
        let inherited = |end: Option<crate::support::clock::Stamp>| {
            end.is_some_and(|e| e.mono_ns <= forked_at_ns)
        };
        let mut removed = 0;
        for run in std::mem::take(&mut self.restored) {
            if inherited(run.root().and_then(|r| r.end)) {
                removed += 1;
                garbage.runs.push(run);
            } else {
                self.restored.push_back(run);
            }
        }
        for run in std::mem::take(&mut self.ready) {
            if inherited(run.root.end) {
                removed += 1;
                garbage.live.push(run);
            } else {
                self.ready.push_back(run);
            }
        }
        for (number, run) in std::mem::take(&mut self.finished) {
            if inherited(run.root.end) {
                removed += 1;
                self.forget_waiting(run.task.as_ref(), number);
                garbage.live.push(run);
            } else {
                self.finished.insert(number, run);
            }
        }
        // The parent decides its own undecided runs.
        for (number, run) in std::mem::take(&mut self.undecided) {
            if inherited(run.root.end) {
                self.forget_waiting(run.task.as_ref(), number);
                garbage.live.push(run);
            } else {
                self.undecided.insert(number, run);
            }
        }
        removed
    }

    /// Whether an open run would be exported as it stands: sampled at its
    /// head, or kept by a rule so far.
    fn exported_now(&self, run: &LiveRun) -> bool {
        run.sampled || (run.records && self.sampling.keep_rule(&run.facts()).is_some())
    }

    /// Copies of the waiting runs (and the open ones), oldest first.
    pub fn snapshot(&mut self, include_open: bool) -> Vec<Run> {
        self.forget_repeat();
        let open = if include_open { self.open.len() } else { 0 };
        let mut out = Vec::with_capacity(self.waiting() + open);
        out.extend(self.restored.iter().cloned());
        out.extend(self.ready.iter().map(LiveRun::to_run));
        out.extend(self.finished.values().map(LiveRun::to_run));
        if include_open {
            out.extend(self.open.values().map(LiveRun::to_run));
        }
        out
    }

    /// Copies of the open runs an export would send as they stand (sampled,
    /// or kept by a rule so far), least recently active first.
    pub fn open_snapshot(&mut self) -> Vec<Run> {
        self.forget_repeat();
        self.open
            .values()
            .filter(|r| self.exported_now(r))
            .map(LiveRun::to_run)
            .collect()
    }

    /// Remembers `key` (the event just applied, with `outcome`) when a copy
    /// of it would change nothing but a counter: a step event that opened,
    /// merged into or closed an attempt of a run still open. `at` is its
    /// clock reading: a copy is taken as such within a second of it (and
    /// within the TTL), so that no idle run could have expired meanwhile.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn remember(&mut self, key: RepeatKey, outcome: RecordOutcome, at: u64) {
        let applied = matches!(
            outcome,
            RecordOutcome::AttemptOpened | RecordOutcome::AttemptClosed | RecordOutcome::Merged
        );
        if !applied || !RepeatKey::kind_can_repeat(key.kind) {
            return;
        }
        if !self.open.contains_key(&Id::Int(key.task)) {
            return;
        }
        let window = self.limits.ttl_ns().min(1_000_000_000);
        self.repeat = Some(Remembered {
            key,
            until_ns: at.saturating_add(window),
            pending_attempt: None,
        });
    }

    /// Whether `key`, read at `now_ns`, repeats the event recorded just
    /// before it (see [`RepeatKey::repeats`]): then it is counted as
    /// recorded, as applying it would have, and nothing else changes.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn repeated(&mut self, key: &RepeatKey, now_ns: u64) -> bool {
        let Some(r) = &mut self.repeat else {
            return false;
        };
        if now_ns >= r.until_ns {
            return false;
        }
        match key.repeats(&r.key) {
            Repeat::No => return false,
            Repeat::Same => {}
            // Merged later (see `forget_repeat`), as the next event or
            // reader of the runs would find it merged now.
            Repeat::HigherAttempt(n) => {
                r.key.attempt = Word::Int(n);
                r.pending_attempt = Some(n);
            }
        }
        self.stats.events_recorded += 1;
        self.stats.events_repeated += 1;
        true
    }

    /// Forgets the remembered event, first merging the higher
    /// `attempt_number` a copy brought (kept highest, as a merge does) into
    /// the attempt the event opened, merged into or closed.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn forget_repeat(&mut self) {
        let Some(r) = self.repeat.take() else {
            return;
        };
        let Some(n) = r.pending_attempt else {
            return;
        };
        let Some(run) = self.open.get_mut(&Id::Int(r.key.task)) else {
            return;
        };
        let step = Id::Int(r.key.step);
        let index = if r.key.kind == EventKind::StepExecutionRequested {
            run.open_attempt(&step)
        } else {
            run.latest_attempt(&step)
        };
        if let Some(attempt) = index.and_then(|i| run.attempt_mut(i)) {
            merge_attrs(
                &mut attempt.span.attrs,
                &mut [(AttrKey::AttemptNumber, AttrValue::Int(n))],
            );
        }
    }

    pub fn count_context_restore(&mut self) {
        self.stats.context_restores += 1;
    }

    /// [`State::apply`], and what the event did to the spans a publishing
    /// thread may hold as current: looked up after the event by its task
    /// and step ids (cloned first; only the connected path pays for it).
    pub fn apply_connected(
        &mut self,
        ev: &mut LifecycleEvent,
        garbage: &mut Garbage,
    ) -> (RecordOutcome, Option<SpanChange>) {
        let kind = ev.kind();
        let (task, step) = (ev.task_id.clone(), ev.step_id.clone());
        let outcome = self.apply(ev, garbage);
        let Some(task) = task else {
            return (outcome, None);
        };
        let change = match (outcome, kind) {
            (RecordOutcome::RunClosed, _) => self.ended_run(&task),
            (RecordOutcome::RunOpened, _)
            | (RecordOutcome::Merged, EventKind::TaskStartRequested) => self
                .open
                .get(&task)
                .map(|run| SpanChange::Entered(span_ref(run, run.root.span_id))),
            (
                RecordOutcome::AttemptOpened | RecordOutcome::Merged | RecordOutcome::EventAdded,
                EventKind::StepExecutionRequested | EventKind::StepBeforeHandle,
            ) => self.open.get(&task).and_then(|run| {
                let id = run.open_attempt_id(step.as_ref()?)?;
                Some(SpanChange::Entered(span_ref(run, id)))
            }),
            (RecordOutcome::AttemptClosed, _) => {
                let run = match self.open.get(&task) {
                    Some(run) => Some(run),
                    None => match self.history.get(&task) {
                        Some(Past {
                            waiting: Some(n), ..
                        }) => self.finished.get(n).or_else(|| self.undecided.get(n)),
                        _ => None,
                    },
                };
                run.and_then(|run| {
                    let id = run.latest_attempt_id(step.as_ref()?)?;
                    Some(SpanChange::Ended(span_ref(run, id)))
                })
            }
            _ => None,
        };
        (outcome, change)
    }

    /// [`State::apply_connected`] for an event published in `thread`, with
    /// what that thread must do (see [`ThreadViews`]).
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn apply_listened(
        &mut self,
        ev: &mut LifecycleEvent,
        garbage: &mut Garbage,
        thread: u64,
    ) -> (RecordOutcome, Option<SpanChange>, Answer) {
        let (outcome, change) = self.apply_connected(ev, garbage);
        (outcome, change, self.threads.answer(thread, change))
    }

    /// The run of `task` that just ended, from what is remembered of it.
    fn ended_run(&self, task: &Id) -> Option<SpanChange> {
        let past = self.history.get(task)?;
        let sampled = match past.waiting {
            Some(n) if self.undecided.contains_key(&n) => false,
            Some(n) => self.finished.get(&n).is_none_or(|r| r.sampled),
            None => false,
        };
        Some(SpanChange::RunEnded(SpanRef {
            trace_id: past.link.trace_id,
            span_id: past.link.span_id,
            root_span_id: past.link.span_id,
            sampled,
        }))
    }

    pub fn refuse(&mut self) {
        self.stats.events_refused += 1;
    }

    /// Puts exported runs back to wait for the next export, behind the
    /// restored runs already waiting and ahead of the finished ones.
    pub fn restore(&mut self, runs: Vec<Run>, garbage: &mut Garbage) {
        self.forget_repeat();
        self.restored.extend(runs);
        self.bound_finished(garbage);
    }

    pub fn configure(&mut self, limits: LifecycleLimits, garbage: &mut Garbage) {
        self.forget_repeat();
        self.limits = limits.sanitized();
        while self.open.len() > self.limits.max_open_runs {
            match self.open.pop_front() {
                Some((_, run)) => {
                    self.stats.runs_evicted += 1;
                    self.drop_open(run, garbage);
                }
                None => break,
            }
        }
        self.bound_finished(garbage);
        self.bound_history();
    }

    /// Forgets every run and zeroes the counters; the limits stay.
    pub fn reset(&mut self, garbage: &mut Garbage) {
        self.forget_repeat();
        garbage.live.extend(self.open.drain().map(|(_, r)| r));
        garbage.live.extend(self.finished.drain().map(|(_, r)| r));
        garbage.live.extend(self.undecided.drain().map(|(_, r)| r));
        garbage.live.extend(self.ready.drain(..));
        garbage.runs.extend(self.restored.drain(..));
        self.history.clear();
        self.stats = LifecycleStats::default();
    }
}

/// Applies an event to a run that records nothing but its end (left out at
/// the head while no keep rule is on): closing events end it, the rest only
/// count as recorded. Returns the outcome and whether the run ended.
fn apply_bare(run: &mut LiveRun, ev: &LifecycleEvent, live: bool) -> (RecordOutcome, bool) {
    let kind = ev.kind();
    if !live {
        return (RecordOutcome::Merged, false);
    }
    let end = match kind {
        EventKind::TaskInitializeRequested => RunEnd::Pending,
        EventKind::TaskCompleted => RunEnd::Completed,
        EventKind::TaskFailed => RunEnd::Failed,
        EventKind::TaskCancelled => RunEnd::Cancelled,
        k if k.closes_run() => RunEnd::ResolvedManually,
        _ => return (RecordOutcome::Merged, false),
    };
    run.root.end_at(ev.at);
    run.root.status = closing_status(kind, &run.root);
    run.end = end;
    (RecordOutcome::RunClosed, true)
}

fn span_ref(run: &LiveRun, span_id: [u8; 8]) -> SpanRef {
    SpanRef {
        trace_id: run.trace_id,
        span_id,
        root_span_id: run.root.span_id,
        sampled: run.sampled,
    }
}

/// Adds the event as a span event on `target` and counts what the bound cost.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn add_event(
    run: &mut LiveRun,
    target: Target,
    ev: &mut LifecycleEvent,
    with_step: bool,
    stats: &mut LifecycleStats,
    max: usize,
) -> bool {
    let mut attrs = std::mem::take(&mut ev.attrs);
    if with_step {
        if let Some(step) = ev.step_id.take() {
            attrs.push((AttrKey::StepId, step.to_value()));
        }
    }
    let room = run.push_event(target, ev.at, ev.name.clone(), attrs, max);
    count_room(stats, room)
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn count_room(stats: &mut LifecycleStats, room: Room) -> bool {
    stats.spans_dropped += room.evicted + u64::from(!room.fits);
    room.fits
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn added(fits: bool) -> RecordOutcome {
    if fits {
        RecordOutcome::EventAdded
    } else {
        RecordOutcome::Dropped
    }
}

/// A step event with no attempt to belong to: a span event on the task span,
/// counted as orphaned.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn orphan_on_root(
    run: &mut LiveRun,
    ev: &mut LifecycleEvent,
    stats: &mut LifecycleStats,
    max: usize,
) -> RecordOutcome {
    if add_event(run, Target::Root, ev, true, stats, max) {
        RecordOutcome::OrphanRecorded
    } else {
        RecordOutcome::Orphaned
    }
}

/// Applies an event to its run; `live` is false for a finished run waiting
/// for export (which takes merges, closes, and span events, but opens nothing).
/// Returns the outcome and whether the run ended.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn apply_to_run(
    run: &mut LiveRun,
    ev: &mut LifecycleEvent,
    live: bool,
    ids: &mut IdGenerator,
    stats: &mut LifecycleStats,
    max: usize,
) -> (RecordOutcome, bool) {
    let kind = ev.kind();
    let outcome = match kind {
        EventKind::TaskStartRequested => {
            merge_attrs(&mut run.root.attrs, &mut ev.attrs);
            RecordOutcome::Merged
        }
        EventKind::TaskInitializeRequested if live => {
            run.root.end_at(ev.at);
            run.end = RunEnd::Pending;
            merge_attrs(&mut run.root.attrs, &mut ev.attrs);
            let room = run.push_event(Target::Root, ev.at, PENDING, Vec::new(), max);
            count_room(stats, room);
            return (RecordOutcome::RunClosed, true);
        }
        // The finalizer's copy, after the state machine's ended the run:
        // it brings the counts.
        EventKind::TaskInitializeRequested if run.end == RunEnd::Pending => {
            merge_attrs(&mut run.root.attrs, &mut ev.attrs);
            RecordOutcome::Merged
        }
        EventKind::TaskInitializeRequested => RecordOutcome::Late,
        k if k.closes_run() => return close_run(run, ev, live, stats, max),
        EventKind::StepExecutionRequested | EventKind::StepBeforeHandle => {
            let Some(step) = ev.step_id.clone() else {
                return (orphan_on_root(run, ev, stats, max), false);
            };
            match run.open_attempt(&step) {
                Some(i) if kind == EventKind::StepExecutionRequested => {
                    if let Some(a) = run.attempt_mut(i) {
                        merge_attrs(&mut a.span.attrs, &mut ev.attrs);
                    }
                    RecordOutcome::Merged
                }
                Some(i) => {
                    let target = run.attempt_target(i);
                    added(add_event(run, target, ev, false, stats, max))
                }
                None if live => open_attempt(run, ev, step, ids, stats, max),
                None => RecordOutcome::Late,
            }
        }
        k if k.closes_attempt() => close_attempt(run, ev, stats, max),
        EventKind::StepBackoff => {
            let attempt = ev.step_id.as_ref().and_then(|s| run.open_attempt(s));
            let fits = match attempt {
                Some(i) => {
                    let target = run.attempt_target(i);
                    add_event(run, target, ev, false, stats, max)
                }
                None => add_event(run, Target::Root, ev, true, stats, max),
            };
            added(fits)
        }
        _ => added(add_event(run, Target::Root, ev, true, stats, max)),
    };
    (outcome, false)
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn open_attempt(
    run: &mut LiveRun,
    ev: &mut LifecycleEvent,
    step: Id,
    ids: &mut IdGenerator,
    stats: &mut LifecycleStats,
    max: usize,
) -> RecordOutcome {
    let mut attrs = std::mem::take(&mut ev.attrs);
    rename_error_class(&mut attrs);
    if let Some(task) = &run.task {
        attrs.push((AttrKey::TaskId, task.to_value()));
    }
    attrs.push((AttrKey::StepId, step.to_value()));
    let (index, room) = run.push_attempt(step, ids.span_id(), ev.at, attrs, max);
    if !count_room(stats, room) {
        return RecordOutcome::Dropped;
    }
    if ev.kind() == EventKind::StepBeforeHandle {
        if let Some(i) = index {
            let target = run.attempt_target(i);
            // The payload went to the span; the event marks the moment.
            let room = run.push_event(target, ev.at, ev.name.clone(), Vec::new(), max);
            count_room(stats, room);
        }
    }
    RecordOutcome::AttemptOpened
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn close_run(
    run: &mut LiveRun,
    ev: &mut LifecycleEvent,
    live: bool,
    stats: &mut LifecycleStats,
    max: usize,
) -> (RecordOutcome, bool) {
    let kind = ev.kind();
    merge_attrs(&mut run.root.attrs, &mut ev.attrs);
    let end = match kind {
        EventKind::TaskCompleted => RunEnd::Completed,
        EventKind::TaskFailed => RunEnd::Failed,
        EventKind::TaskCancelled => RunEnd::Cancelled,
        _ => RunEnd::ResolvedManually,
    };
    let marked = matches!(end, RunEnd::Cancelled | RunEnd::ResolvedManually);
    if live {
        run.root.end_at(ev.at);
        run.root.status = closing_status(kind, &run.root);
        run.end = end;
        if marked {
            let room = run.push_event(Target::Root, ev.at, ev.name.clone(), Vec::new(), max);
            count_room(stats, room);
        }
        return (RecordOutcome::RunClosed, true);
    }
    // A duplicate (or a later manual action) for a finished run: the status
    // stays; a failed run's message follows the error that arrived.
    if run.end == RunEnd::Failed {
        if let Some(message) = run.root.error_message() {
            run.root.status.message = Some(message);
        }
    }
    if marked && run.end != end {
        let room = run.push_event(Target::Root, ev.at, ev.name.clone(), Vec::new(), max);
        count_room(stats, room);
    }
    (RecordOutcome::Merged, false)
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn close_attempt(
    run: &mut LiveRun,
    ev: &mut LifecycleEvent,
    stats: &mut LifecycleStats,
    max: usize,
) -> RecordOutcome {
    let kind = ev.kind();
    let Some(index) = ev.step_id.as_ref().and_then(|s| run.latest_attempt(s)) else {
        return orphan_on_root(run, ev, stats, max);
    };
    let marked = matches!(
        kind,
        EventKind::StepCancelled | EventKind::StepResolvedManually
    );
    let Some(attempt) = run.attempt_mut(index) else {
        return orphan_on_root(run, ev, stats, max);
    };
    merge_attrs(&mut attempt.span.attrs, &mut ev.attrs);
    let (outcome, mark) = if attempt.span.is_open() {
        attempt.span.end_measured(ev.at);
        attempt.span.status = closing_status(kind, &attempt.span);
        attempt.closed_by = Some(kind);
        (RecordOutcome::AttemptClosed, marked)
    } else {
        if attempt.closed_by == Some(EventKind::StepFailed) {
            if let Some(message) = attempt.span.error_message() {
                attempt.span.status.message = Some(message);
            }
        }
        (
            RecordOutcome::Merged,
            marked && attempt.closed_by != Some(kind),
        )
    };
    if mark {
        // On an attempt already ended the mark goes to the task span (a span
        // event never lies outside its span), naming the step.
        let (target, attrs) = if outcome == RecordOutcome::AttemptClosed {
            (run.attempt_target(index), Vec::new())
        } else {
            let step = ev.step_id.as_ref().map(Id::to_value);
            (
                Target::Root,
                step.map(|s| (AttrKey::StepId, s)).into_iter().collect(),
            )
        };
        let room = run.push_event(target, ev.at, ev.name.clone(), attrs, max);
        count_room(stats, room);
    }
    outcome
}
