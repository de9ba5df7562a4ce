//! The background exporter: a native thread that sends finished traces to an
//! OTLP/HTTP collector by itself, the way OpenTelemetry's BatchSpanProcessor
//! does, without ever touching Ruby.
//!
//! Its settings are in [`super::settings`], its shared state in `state`,
//! its thread's loop in `worker`, its counters in [`super::stats`]; each
//! export goes through [`super::pipeline::push`].
//!
//! # How it runs
//!
//! - **Lazily.** Nothing starts when the exporter is configured: the thread
//!   starts at the first recorded event ([`Exporter::record`]) or flush
//!   after that, in each process. A server that preloads and forks starts
//!   none in its master unless the master records events.
//! - **Wakes** every schedule delay, or as soon as `max_batch_size` events
//!   were recorded since the last export (each event makes at most one span,
//!   so it wakes no later than a span-counting processor would), or for a
//!   flush or a shutdown. Recording an event costs an atomic increment; the
//!   event that fills a batch also unparks the thread.
//! - **Takes by swap, keeps its own retry queue.** An export swaps the
//!   finished records and settled runs out of the sources (see
//!   [`super::retry_queue`]); what was not delivered stays in the exporter's
//!   own bounded retry queue, never put back under an app thread's lock.
//!   After a failure the next attempt waits an exponential backoff with
//!   jitter (1 s doubling to 60 s); meanwhile new traces wait in the
//!   sources within their bounds. A flush tries at once.
//! - **Settling.** While the exporter runs, the tracer settles a finished
//!   run once it has been idle [`super::sources::RUN_SETTLE`] or when
//!   `max_finished_runs` runs are settling, so that at any finishing rate a
//!   run that settled is exported rather than evicted by younger runs.
//! - **Fork.** A child has no exporter thread; its first event (or flush)
//!   starts its own. Records and runs that finished before the fork are the
//!   parent's to export: the child's exporter removes them when it starts.
//!   Open ones stay and are the child's if they finish there.
//!
//! # Locks
//!
//! The exporter's one lock ([`Exporter::register_for_fork`] makes it
//! fork-safe) is never held while the store or the tracer is locked, and no
//! foreign code runs under it.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant};

use crate::encode::Resource;
use crate::support::fork::{self, ForkSafeMutex};

use super::announce::Announcer;
use super::console::ConsoleOutput;
use super::settings::{self as schedule, BackgroundSettings};
use super::sources::Sources;
use super::state::{Control, DestinationFn, Running, Shared, Signal, Wait, WorkerHandle};
use super::stats::FlushResult;
use super::stats::{self, ExporterStats};
use super::worker;

/// A process-wide exporter (the binding keeps one in a static).
pub struct Exporter {
    shared: Arc<Shared>,
}

impl Exporter {
    /// An exporter, off until [`Exporter::configure`] turns it on.
    pub fn new(
        sources: Sources<'static>,
        resource: fn() -> Resource,
        target: DestinationFn,
    ) -> Exporter {
        Exporter {
            shared: Arc::new(Shared {
                sources,
                resource,
                target,
                enabled: AtomicBool::new(false),
                started_in: AtomicU64::new(0),
                ready: AtomicU64::new(0),
                batch: AtomicU64::new(schedule::DEFAULT_MAX_BATCH_SIZE as u64),
                requested: AtomicU64::new(0),
                counters: stats::Counters::default(),
                inherited_drops: stats::InheritedDrops::default(),
                inherited_sampling: stats::InheritedSampling::default(),
                retry_queued: AtomicU64::new(0),
                next_attempt_wall_ns: AtomicI64::new(0),
                control: ForkSafeMutex::new(Control::default()),
                announcer: Announcer::default(),
                reported: Condvar::new(),
            }),
        }
    }

    /// Makes the process-wide exporter's lock fork-safe.
    pub fn register_for_fork(&'static self) -> bool {
        let shared: &'static Shared = &self.shared;
        shared.control.register() && shared.announcer.register_for_fork()
    }

    /// What finished at or before the returned time (monotonic
    /// nanoseconds) is not this process's to export: a fork child's copies
    /// of its parent's finished traces, until its exporter removes them.
    /// `None`: everything this process holds is its own.
    pub fn unowned_before(&self) -> Option<u64> {
        self.shared.control().unowned_before()
    }

    /// In a fork child whose parent exits at once without exporting (what
    /// `Process.daemon` makes): what finished before the fork is this
    /// process's to export, not removed as the parent's when its exporter
    /// starts, except what was not the parent's own either (`before`: what
    /// [`Exporter::unowned_before`] said in the parent just before the
    /// fork, as when a fork child calls `Process.daemon`).
    pub fn adopt_inherited(&self, before: Option<u64>) {
        let mut c = self.shared.control();
        c.inherited_handled = true;
        c.adopted_before = before;
    }

    /// Before an explicit push: with the OTLP exporter on, a fork child
    /// whose exporter has not started yet removes its copies of what its
    /// parent finished (the parent's exporter sends those), as the
    /// exporter's start would, so that a push never sends them twice.
    pub fn discard_inherited_before_push(&self) {
        let before = {
            let mut c = self.shared.control();
            if !c.config.mode.otlp() {
                return;
            }
            c.take_inherited()
        };
        if let Some(before) = before {
            let n = self.shared.sources.discard_finished_before(before);
            self.shared.counters.count_discarded(n);
        }
    }

    /// Where the console sink writes.
    pub fn console_output(&self) -> ConsoleOutput {
        self.shared.control().console_output.clone()
    }

    /// Sets where the console sink writes (from the next export on).
    pub fn set_console_output(&self, output: ConsoleOutput) {
        let old = std::mem::replace(&mut self.shared.control().console_output, output);
        drop(old);
    }

    /// The announcer of drops and failing exports: its lines wait until the
    /// binding takes them on an app thread.
    pub fn announcer(&self) -> &Announcer {
        &self.shared.announcer
    }

    /// The settings in force.
    pub fn config(&self) -> BackgroundSettings {
        self.shared.control().config
    }

    /// Puts settings in force. Turning the exporter off stops its thread at
    /// once (what waits stays in the store); turning it on arms a lazy start
    /// (also after a shutdown); other changes reach a running thread at its
    /// next wake.
    pub fn configure(&self, config: BackgroundSettings, warnings: Vec<String>) {
        let s = &*self.shared;
        let mut c = s.control();
        let was_on = c.config.is_on();
        c.config = config;
        if !warnings.is_empty() {
            c.warnings = warnings;
        }
        s.batch
            .store(config.schedule.max_batch_size as u64, Ordering::Relaxed);
        s.enabled.store(config.is_on(), Ordering::Release);
        if !config.is_on() {
            if let Some(w) = c.worker.take() {
                w.signal.stop_now();
                // An export in flight gives up, so that what it held goes
                // back to the store and the tracer now, not when a silent
                // collector's request times out.
                if let Some(cancel) = c.in_flight.take() {
                    cancel.cancel();
                }
                w.thread.unpark();
            }
        } else if !was_on {
            c.stopped = false;
            c.start_error = None;
            s.started_in.store(0, Ordering::Release);
        } else if let Some(w) = &c.worker {
            w.thread.unpark();
        }
        drop(c);
        if !config.is_on() {
            self.stop_settling();
        }
    }

    /// No exporter takes any more: the tracer's finished runs go back to
    /// one bound (called with no other lock held).
    fn stop_settling(&self) {
        if let Some(tracer) = self.shared.sources.runs {
            tracer.set_export_settle(None);
        }
    }

    /// Every recording path stores its event through this: it starts this
    /// process's worker before the first event is stored (so that a fork
    /// child's exporter removes what its parent left before the child's own
    /// events land), runs `store`, counts the event and wakes the worker once
    /// a batch is full. Off, this adds one atomic load; on, an increment
    /// (and, once per batch, an unpark).
    #[inline]
    pub fn record<R>(&self, store: impl FnOnce() -> R) -> R {
        let s = &*self.shared;
        if !s.enabled.load(Ordering::Acquire) {
            return store();
        }
        if s.started_in.load(Ordering::Acquire) != fork::forks() + 1 {
            self.ensure_running();
        }
        let stored = store();
        let n = s.ready.fetch_add(1, Ordering::Relaxed) + 1;
        if n == s.batch.load(Ordering::Relaxed) {
            if let Some(w) = &s.control().worker {
                w.thread.unpark();
            }
        }
        stored
    }

    /// Starts this process's worker if the settings want one and none runs.
    /// Calls the target function (outside the lock) when it starts one.
    pub fn ensure_running(&self) -> Running {
        let s = &*self.shared;
        let generation = fork::forks();
        {
            let c = s.control();
            if let Some(state) = c.running_state() {
                s.started_in.store(generation + 1, Ordering::Release);
                return state;
            }
        }
        let (target, target_warnings) = (s.target)();
        let mut c = s.control();
        if let Some(state) = c.running_state() {
            return state;
        }
        let discard_before_ns = c.take_inherited();
        c.target_warnings = target_warnings;
        let signal = Arc::new(Signal::default());
        let start = worker::Start {
            shared: self.shared.clone(),
            signal: signal.clone(),
            target,
            discard_before_ns,
            served: c.served,
        };
        s.started_in.store(generation + 1, Ordering::Release);
        match worker::spawn(start) {
            Ok(join) => {
                c.worker = Some(WorkerHandle {
                    thread: join.thread().clone(),
                    signal,
                    join: Some(join),
                });
                Running::Yes
            }
            Err(e) => {
                let message = format!("the exporter thread could not start: {e}");
                c.start_error = Some(message.clone());
                c.record_error(&message);
                Running::Failed(message)
            }
        }
    }

    /// Asks the worker to export everything finished now and waits until it
    /// has, `timeout` passes or `wait` is interrupted. Call
    /// [`Exporter::ensure_running`] first (it may start the worker).
    pub fn flush(&self, timeout: Duration, wait: &Wait) -> FlushResult {
        let deadline = Instant::now() + timeout;
        let s = &*self.shared;
        let c = s.control();
        let thread = match (&c.worker, c.running_state()) {
            (Some(w), _) => w.thread.clone(),
            (None, Some(Running::Off)) => return FlushResult::default(),
            (None, state) => return not_running(state),
        };
        let ticket = s.requested.fetch_add(1, Ordering::AcqRel) + 1;
        thread.unpark();
        let sent_before = c.sent_total;
        s.wait_for(c, ticket, sent_before, deadline, wait).1
    }

    /// Flushes, then stops the worker: the result of the final export, or
    /// of giving up at `timeout` or on an interrupt (then the export still in
    /// flight is cancelled and the thread let go). Later events are not
    /// exported in this process until the exporter is turned off and on.
    pub fn shutdown(&self, timeout: Duration, wait: &Wait) -> FlushResult {
        let deadline = Instant::now() + timeout;
        let s = &*self.shared;
        let mut c = s.control();
        let Some(worker) = c.worker.take() else {
            if c.config.is_on() {
                c.stopped = true;
                s.started_in.store(fork::forks() + 1, Ordering::Release);
            }
            return FlushResult::default();
        };
        c.stopped = true;
        let ticket = s.requested.fetch_add(1, Ordering::AcqRel) + 1;
        worker.signal.stop_after(ticket);
        worker.thread.unpark();
        let sent_before = c.sent_total;
        let (mut c, result, done) = s.wait_for(c, ticket, sent_before, deadline, wait);
        if !done {
            worker.signal.stop_now();
            if let Some(cancel) = c.in_flight.take() {
                cancel.cancel();
            }
        }
        drop(c);
        // Detached: a worker that gave up is left to end by itself.
        drop(worker.join);
        self.stop_settling();
        result
    }

    /// Interrupts a flush or shutdown waiting with `wait` (from any thread;
    /// the unblocking function of a GVL-free call).
    pub fn interrupt(&self, wait: &Wait) {
        wait.interrupted.store(true, Ordering::Release);
        let _c = self.shared.control();
        self.shared.reported.notify_all();
    }

    pub fn stats(&self) -> ExporterStats {
        let s = &*self.shared;
        let mut out = {
            let c = s.control();
            let mut warnings = c.warnings.clone();
            warnings.extend(c.target_warnings.iter().cloned());
            ExporterStats {
                enabled: c.config.is_on(),
                running: c.worker.is_some(),
                pid: std::process::id(),
                last_error: c.last_error.clone(),
                warnings,
                ..ExporterStats::default()
            }
        };
        s.counters.read_into(&mut out);
        let next = s.next_attempt_wall_ns.load(Ordering::Relaxed);
        out.next_attempt_at_ns = (next != 0 && out.running).then_some(next);
        // The store's and the tracer's locks, after the exporter's is released.
        out.queued = s.sources.queued() + s.retry_queued.load(Ordering::Relaxed) as usize;
        out.dropped_traces += s.inherited_drops.own(s.sources.dropped());
        (out.sampled_out, out.kept_spans) = s
            .inherited_sampling
            .own(s.sources.sampled_out(), s.sources.kept_spans());
        out
    }
}

fn not_running(state: Option<Running>) -> FlushResult {
    let error = match state {
        Some(Running::ShutDown) => "the exporter was shut down".to_string(),
        Some(Running::Failed(e)) => e,
        _ => "the exporter is not running in this process".to_string(),
    };
    FlushResult {
        error: Some(error),
        ..FlushResult::default()
    }
}
