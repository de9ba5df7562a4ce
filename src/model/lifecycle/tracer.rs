//! The process-wide lifecycle tracer: one mutex around the whole state, held
//! only while an event is applied; whatever the event leaves over and every
//! run dropped meanwhile is freed after it is released.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::fork::{forks, ForkSafeMutex, LockWaits};

use crate::support::clock::Stamp;

use super::limits::LifecycleLimits;
use super::model::{Clock, Garbage, LifecycleStats, RecordOutcome, Settled, State};
use super::run::{Run, SpanChange, SpanRef};
use super::thread_views::Answer;
use crate::input::lifecycle::event::LifecycleEvent;
use crate::input::lifecycle::repeat::RepeatKey;
use crate::model::sampling::Sampling;

/// What a background exporter takes ([`Tracer::take_for_export`]), read
/// under one lock.
#[derive(Debug)]
pub struct TracerTake {
    pub runs: Vec<Run>,
    /// The attribute prefix in force.
    pub prefix: Arc<str>,
    /// `max_finished_runs` (the bound of the exporter's own retry queue).
    pub max_runs: usize,
    /// The sampling settings in force (the store's records follow the ratio).
    pub sampling: Sampling,
    /// Finished runs dropped so far (`finished_runs_dropped`).
    pub dropped: u64,
}

/// What one export of the tracer covers (see [`Tracer::export_runs`]).
#[derive(Debug, Default)]
pub struct ExportRuns {
    /// Whether `taken` was removed from the tracer (and must go back with
    /// [`Tracer::restore`] if the export fails).
    pub drained: bool,
    /// The finished (and restored) runs, oldest first.
    pub taken: Vec<Run>,
    /// Copies of the open runs; never removed, never restored.
    pub open: Vec<Run>,
}

impl ExportRuns {
    /// Every run covered, finished first.
    pub fn all(&self) -> impl Iterator<Item = &Run> {
        self.taken.iter().chain(&self.open)
    }

    pub fn len(&self) -> usize {
        self.taken.len() + self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts the drained runs back into `tracer` (a failed export).
    pub fn restore_into(self, tracer: &Tracer) {
        if self.drained && !self.taken.is_empty() {
            tracer.restore(self.taken);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Turns lifecycle events into one trace per task run.
///
/// All mutable state (runs, counters, limits and the id generator) lives
/// behind the single `state` mutex and nowhere else; the process-wide tracer
/// makes it fork-safe with [`Tracer::register_for_fork`] (see [`crate::support::fork`]).
pub struct Tracer {
    state: ForkSafeMutex<State>,
    /// The clock reading of the oldest event waiting to be read outside the
    /// tracer (see [`Tracer::hold_expiry`]), or `NOT_HELD`.
    held_since: AtomicU64,
    /// The fork generation that set `held_since` (a child's copy is not its
    /// own: its parent reads the events that wait).
    held_in: AtomicU64,
}

const NOT_HELD: u64 = u64::MAX;

impl Default for Tracer {
    fn default() -> Self {
        Tracer::new(LifecycleLimits::default())
    }
}

impl Tracer {
    pub fn new(limits: LifecycleLimits) -> Tracer {
        Tracer {
            state: ForkSafeMutex::new(State::new(limits)),
            held_since: AtomicU64::new(NOT_HELD),
            held_in: AtomicU64::new(0),
        }
    }

    /// Events wait to be read outside the tracer (the binding reads them
    /// together), the oldest stamped `since` (a monotonic clock reading), or
    /// none wait (`None`). Until they are read, expiring and settling runs
    /// on the clock (an export, [`Tracer::expire_now`]) goes no further than
    /// `since`: a waiting event may keep a run alive, or be a copy that
    /// merges into a finished one, as it would have when it arrived.
    pub fn hold_expiry(&self, since: Option<u64>) {
        self.held_since
            .store(since.unwrap_or(NOT_HELD), Ordering::Relaxed);
        self.held_in.store(forks(), Ordering::Release);
    }

    /// `now` (a monotonic clock reading) for settling finished runs, and
    /// for expiring open ones `now` or the oldest waiting event's stamp when
    /// it is earlier (see [`Tracer::hold_expiry`]).
    fn clock(&self, now: u64) -> Clock {
        let held = if self.held_in.load(Ordering::Acquire) == forks() {
            self.held_since.load(Ordering::Relaxed)
        } else {
            NOT_HELD
        };
        Clock {
            now_ns: now,
            expire_ns: now.min(held),
        }
    }

    /// Makes this process-wide tracer's lock fork-safe.
    pub fn register_for_fork(&'static self) -> bool {
        self.state.register()
    }

    /// What its lock counted (see [`crate::support::fork::count_lock_waits`]).
    pub fn lock_waits(&self) -> LockWaits {
        self.state.lock_waits()
    }

    /// Applies one event. Its clock reading (`event.at`) is the time used for
    /// spans and for expiring idle runs.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn record(&self, event: LifecycleEvent) -> RecordOutcome {
        self.record_keyed(event, None)
    }

    /// [`Tracer::record`], remembering the event's [`RepeatKey`] (read by the
    /// binding for step events) so that an identical copy that follows can
    /// be taken by [`Tracer::repeated`].
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn record_keyed(&self, event: LifecycleEvent, key: Option<RepeatKey>) -> RecordOutcome {
        self.applied(event, key, |state, ev, garbage| {
            (state.apply(ev, garbage), ())
        })
        .0
    }

    /// Whether the event `key` was read from, at `at`, repeats the one
    /// recorded just before it in the same thread, so that recording it
    /// would change nothing: then it is counted as recorded and true is
    /// returned; otherwise nothing happens (record it in full).
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn repeated(&self, key: &RepeatKey, at: Stamp) -> bool {
        self.state.lock().repeated(key, at.mono_ns)
    }

    /// [`Tracer::record`] for the connected path: also what the event did
    /// to the spans the publishing thread may hold as its current
    /// OpenTelemetry span (entered, attempt ended, run ended), in the same
    /// lock.
    pub fn record_connected(&self, event: LifecycleEvent) -> (RecordOutcome, Option<SpanChange>) {
        self.applied(event, None, |state, ev, garbage| {
            state.apply_connected(ev, garbage)
        })
    }

    /// [`Tracer::record_connected`] for an event published in `thread`,
    /// remembering its [`RepeatKey`] as [`Tracer::record_keyed`] does: the
    /// outcome, the change, and what that thread must do about the spans it
    /// may hold (nothing, settle, or the change; see
    /// [`crate::model::lifecycle::Answer`]).
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn record_listened(
        &self,
        event: LifecycleEvent,
        key: Option<RepeatKey>,
        thread: u64,
    ) -> (RecordOutcome, Option<SpanChange>, Answer) {
        let (outcome, (change, answer)) = self.applied(event, key, |state, ev, garbage| {
            let (outcome, change, answer) = state.apply_listened(ev, garbage, thread);
            (outcome, (change, answer))
        });
        (outcome, change, answer)
    }

    /// [`Tracer::record_listened`] for an event that waited to be read: what
    /// its thread was answered is not acted on, so a thread answered more
    /// than nothing (runs ended elsewhere or dropped, a span entered) is
    /// told everything at its next event read when it arrives.
    pub fn record_waited(
        &self,
        event: LifecycleEvent,
        key: Option<RepeatKey>,
        thread: u64,
    ) -> RecordOutcome {
        let (outcome, ()) = self.applied(event, key, |state, ev, garbage| {
            let (outcome, _, answer) = state.apply_listened(ev, garbage, thread);
            if matches!(
                answer,
                Answer::Settle | Answer::Change(_) | Answer::ForgetThenChange(_)
            ) {
                state.threads.untell(thread);
            }
            (outcome, ())
        });
        outcome
    }

    /// Prepares `event`, applies it with `apply` under the lock, remembers
    /// `key` with the outcome, and frees what it replaced after the lock.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn applied<R>(
        &self,
        mut event: LifecycleEvent,
        key: Option<RepeatKey>,
        apply: impl FnOnce(&mut State, &mut LifecycleEvent, &mut Garbage) -> (RecordOutcome, R),
    ) -> (RecordOutcome, R) {
        event.prepare();
        let at = event.at.mono_ns;
        let mut garbage = Garbage::default();
        let result = {
            let mut state = self.state.lock();
            let result = apply(&mut state, &mut event, &mut garbage);
            if let Some(key) = key {
                state.remember(key, result.0, at);
            }
            result
        };
        drop(garbage);
        drop(event);
        result
    }

    /// The attempt current in `thread` (of the run whose root is `root`,
    /// or any run's): what a thread span, or a run's root, answers when
    /// asked for its ids there (see [`ThreadViews`](super::thread_views)).
    pub fn attempt_in(&self, thread: u64, root: Option<[u8; 8]>) -> Option<SpanRef> {
        self.state.lock().threads.attempt_in(thread, root)
    }

    /// Whether `thread`'s step events may wait (see
    /// [`ThreadViews::queues`](super::thread_views::ThreadViews::queues)).
    pub fn thread_queues(&self, thread: u64) -> bool {
        self.state.lock().threads.queues(thread)
    }

    /// Whether `thread` holds a thread span now; then whether its step
    /// events may wait (see `thread_queues`).
    pub fn set_thread_span(&self, thread: u64, held: bool) -> bool {
        let mut state = self.state.lock();
        state.threads.set_thread_span(thread, held);
        state.threads.queues(thread)
    }

    /// An app's block took a context of the gem's in `thread` (see
    /// [`ThreadViews::context_taken`]).
    pub fn context_taken(&self, thread: u64) {
        self.state.lock().threads.context_taken(thread);
    }

    /// Whether every current root entered again is verified (see
    /// [`ThreadViews::set_verify_always`]).
    pub fn set_verify_always(&self, always: bool) {
        self.state.lock().threads.set_verify_always(always);
    }

    /// Forgets what the connected path told each thread (it is told
    /// everything again): when that path is switched on or off.
    pub fn forget_threads(&self) {
        self.state.lock().threads.clear();
    }

    /// In a fork child: removes the finished runs that ended at or before
    /// `forked_at_ns` (the parent's exporter exports them); the child's own
    /// stay as they are. Returns how many were removed.
    pub fn discard_finished_before(&self, forked_at_ns: u64) -> usize {
        let mut garbage = Garbage::default();
        let removed = self
            .state
            .lock()
            .discard_finished_before(forked_at_ns, &mut garbage);
        drop(garbage);
        removed
    }

    /// The root span ids of the open runs dropped (expired or evicted)
    /// after the first `seen` ever dropped, and how many ever were: see
    /// `State::dropped_roots_since`.
    pub fn dropped_roots_since(&self, seen: u64) -> (u64, Vec<[u8; 8]>) {
        self.state.lock().dropped_roots_since(seen)
    }

    /// Counts a context the connected path restored (see
    /// [`LifecycleStats::context_restores`]).
    pub fn count_context_restore(&self) {
        self.state.lock().count_context_restore();
    }

    pub fn limits(&self) -> LifecycleLimits {
        self.state.lock().limits()
    }

    /// The sampling settings in force.
    pub fn sampling(&self) -> Sampling {
        self.state.lock().sampling
    }

    /// Puts sampling settings in force: runs opening from now on are
    /// decided with them at their head, and every run ending from now on by
    /// their keep rules.
    pub fn set_sampling(&self, sampling: Sampling) {
        self.state.lock().sampling = sampling;
    }

    /// Makes this tracer's trace and span ids follow from `seed` (for tests:
    /// two processes given the same seed make the same ids, hence the same
    /// sampling decisions).
    pub fn seed_ids(&self, seed: u64) {
        self.state.lock().seed_ids(seed);
    }

    /// Puts new limits in force; lower bounds evict at once (oldest first).
    /// Runs holding more spans than a lower `max_spans_per_run` shed them as
    /// they next grow.
    pub fn configure(&self, limits: LifecycleLimits) {
        let mut garbage = Garbage::default();
        self.state.lock().configure(limits, &mut garbage);
        drop(garbage);
    }

    /// Removes and returns the runs ready for export, each exactly once:
    /// restored runs, then finished runs idle for at least `settled_for`
    /// (so their late duplicates have landed), oldest first. Also expires
    /// idle open runs.
    pub fn drain_finished(&self, settled_for: Duration) -> Vec<Run> {
        self.drain_finished_at(Stamp::now(), settled_for)
    }

    /// [`Tracer::drain_finished`] as of `now`.
    pub fn drain_finished_at(&self, now: Stamp, settled_for: Duration) -> Vec<Run> {
        let mut garbage = Garbage::default();
        let settled = self.state.lock().take_settled(
            self.clock(now.mono_ns),
            nanos(settled_for),
            &mut garbage,
        );
        drop(garbage);
        settled.into_runs()
    }

    /// Copies of the runs waiting for export (restored, then finished), and
    /// of the open runs as they stand when `include_open`; removes nothing.
    pub fn snapshot(&self, include_open: bool) -> Vec<Run> {
        self.state.lock().snapshot(include_open)
    }

    /// The runs one export covers, taken in one step under the lock: the
    /// runs ready for export (removed with `drain`, as
    /// [`Tracer::drain_finished`] with `settled_for`; else copies of every
    /// waiting run), and with `include_open` copies of the open runs as they
    /// stand. Open runs are never removed: they are exported whole again
    /// once they end. Runs sampling leaves out are not among them (they are
    /// freed and counted, `sampled_out`, when they end; an open run left
    /// out at the head is among them once a keep rule holds for it).
    pub fn export_runs(
        &self,
        drain: bool,
        include_open: bool,
        settled_for: Duration,
    ) -> ExportRuns {
        let mut garbage = Garbage::default();
        let mut state = self.state.lock();
        let (settled, copies) = if drain {
            let now = self.clock(Stamp::now().mono_ns);
            let settled = state.take_settled(now, nanos(settled_for), &mut garbage);
            (settled, Vec::new())
        } else {
            (Settled::default(), state.snapshot(false))
        };
        let open = if include_open {
            state.open_snapshot()
        } else {
            Vec::new()
        };
        drop(state);
        drop(garbage);
        let mut taken = settled.into_runs();
        if !drain {
            taken = copies;
        }
        ExportRuns {
            drained: drain,
            taken,
            open,
        }
    }

    /// A background exporter's take, in one step under the lock: the runs
    /// ready for export as [`Tracer::drain_finished`] takes them, with what
    /// the exporter needs from the same lock (see [`TracerTake`]).
    /// Containers are swapped out under the lock; the runs are made into
    /// exported data after it is released.
    pub fn take_for_export(&self, settled_for: Duration) -> TracerTake {
        let mut garbage = Garbage::default();
        let (settled, prefix, max_runs, sampling, dropped) = {
            let mut state = self.state.lock();
            let settled = state.take_settled(
                self.clock(Stamp::now().mono_ns),
                nanos(settled_for),
                &mut garbage,
            );
            (
                settled,
                state.prefix.effective.clone(),
                state.limits().max_finished_runs,
                state.sampling,
                state.stats().finished_runs_dropped,
            )
        };
        drop(garbage);
        TracerTake {
            runs: settled.into_runs(),
            prefix,
            max_runs,
            sampling,
            dropped,
        }
    }

    /// Turns the settle rule of a background exporter on (`Some(settle)`:
    /// a finished run is settled after `settle` idle, or at once when
    /// `max_finished_runs` runs are settling, and settled runs wait within
    /// their own bound) or off (`None`: one bound, the oldest dropped).
    pub fn set_export_settle(&self, settle: Option<Duration>) {
        let mut garbage = Garbage::default();
        self.state
            .lock()
            .set_export_settle(settle.map(nanos), &mut garbage);
        drop(garbage);
    }

    /// Counts an event the binding refused for its input (not a Hash
    /// payload, a name that is neither a String nor a Symbol).
    pub fn refuse(&self) {
        self.state.lock().refuse();
    }

    /// Puts drained runs back after a failed delivery. They are exported
    /// first next time; if they do not fit under `max_finished_runs`, the
    /// oldest waiting runs are dropped (counted). Restored runs take no more
    /// merges: late duplicates for them count as late.
    pub fn restore(&self, runs: Vec<Run>) {
        let mut garbage = Garbage::default();
        self.state.lock().restore(runs, &mut garbage);
        drop(garbage);
    }

    /// The attribute keys' prefix in force: `<name>.` (`tasker.` by default).
    pub fn attribute_prefix(&self) -> Arc<str> {
        self.state.lock().prefix.effective.clone()
    }

    /// The `attribute_prefix` setting (`None`: the default).
    pub fn configured_prefix(&self) -> Option<Arc<str>> {
        self.state.lock().prefix.configured.clone()
    }

    /// Sets the prefix's name (`None`: the default), and with `fallback` the
    /// default's name.
    pub fn set_attribute_prefix(&self, name: Option<&str>, fallback: Option<&str>) {
        let mut prefix = self.state.lock().prefix.clone();
        prefix.set(name.map(Arc::from), fallback.map(Arc::from));
        let old = std::mem::replace(&mut self.state.lock().prefix, prefix);
        drop(old);
    }

    /// Whether subscribers also take the events the model keeps only as span
    /// events (`workflow.*`, transitions, enqueueing); off by default.
    pub fn workflow_events(&self) -> bool {
        self.state.lock().workflow_events
    }

    pub fn set_workflow_events(&self, on: bool) {
        self.state.lock().workflow_events = on;
    }

    /// The `opentelemetry_context` setting: `None` for `:auto`. Read by the
    /// Ruby layer when it subscribes and when settings change.
    pub fn opentelemetry_context(&self) -> Option<bool> {
        self.state.lock().opentelemetry_context
    }

    pub fn set_opentelemetry_context(&self, on: Option<bool>) {
        self.state.lock().opentelemetry_context = on;
    }

    pub fn stats(&self) -> LifecycleStats {
        self.state.lock().stats()
    }

    /// Forgets every run and zeroes the counters; the limits stay.
    pub fn reset(&self) {
        let mut garbage = Garbage::default();
        self.state.lock().reset(&mut garbage);
        drop(garbage);
    }

    /// Expires the open runs idle for at least the TTL now; returns how many.
    pub fn expire_now(&self) -> usize {
        self.expire_at(Stamp::now())
    }

    /// [`Tracer::expire_now`] as of `now`.
    pub fn expire_at(&self, now: Stamp) -> usize {
        let mut garbage = Garbage::default();
        let expired = self
            .state
            .lock()
            .expire(self.clock(now.mono_ns).expire_ns, &mut garbage);
        drop(garbage);
        expired
    }
}
