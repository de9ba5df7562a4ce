//! The background exporter: a native thread that sends finished traces to an
//! OTLP/HTTP collector by itself, the way OpenTelemetry's BatchSpanProcessor
//! does, without ever touching Ruby.
//!
//! - [`schedule`]: the settings and their `OTEL_*` defaults
//! - [`sources`]: what is drained (store records, lifecycle runs), one
//!   export, and what a fork child leaves to its parent
//! - `worker` (private): the thread's loop
//! - [`stats`]: counters, flush results, `exporter_stats`
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
//! - **The store is the queue.** An export drains the finished records and
//!   puts back what was not delivered; while the collector is down they wait
//!   in the store, whose `max_traces` evicts (and counts) the oldest.
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::support::clock::wall_now_ns;
use crate::support::fork::{self, ForkSafeMutex};
use crate::transport::{Cancel, Target};

use super::settings::{self as schedule, ExporterConfig, Schedule};
use super::sources::Sources;
use super::stats::FlushResult;
use super::stats::{self, ExportOutcome, ExporterStats, LastError};
use super::worker;

/// Where the exporter's target comes from: called when a worker starts, on
/// the thread that starts it, with any warnings about unusable settings.
pub type TargetFn = Box<dyn Fn() -> (Result<Target, String>, Vec<String>) + Send + Sync>;

/// A process-wide exporter (the binding keeps one in a static).
pub struct Exporter {
    shared: Arc<Shared>,
}

/// A flush or shutdown waiting: interrupt it from another thread with
/// [`Exporter::interrupt`].
#[derive(Debug, Default)]
pub struct Wait {
    interrupted: AtomicBool,
}

/// How [`Exporter::ensure_running`] found the exporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Running {
    /// Off by its settings.
    Off,
    /// A worker runs in this process.
    Yes,
    /// Shut down in this process.
    ShutDown,
    /// The thread could not be started.
    Failed(String),
}

pub(crate) struct Shared {
    pub(crate) sources: Sources,
    target: TargetFn,
    /// The settings turn the exporter on: checked first on every event.
    enabled: AtomicBool,
    /// The fork generation + 1 in which a start was last attempted.
    started_in: AtomicU64,
    /// Events recorded since the last export began.
    pub(crate) ready: AtomicU64,
    /// `max_batch_size`, for the recording path.
    batch: AtomicU64,
    /// Flush tickets handed out.
    pub(crate) requested: AtomicU64,
    pub(crate) counters: stats::Counters,
    control: ForkSafeMutex<Control>,
    /// Signalled when an export is reported or a waiter is interrupted.
    reported: Condvar,
}

#[derive(Default)]
struct Control {
    config: ExporterConfig,
    /// The fork generation this state belongs to.
    generation: u64,
    worker: Option<WorkerHandle>,
    stopped: bool,
    /// The first worker of a fork child removes what the parent left.
    inherited_handled: bool,
    start_error: Option<String>,
    /// The highest flush ticket an export has served.
    served: u64,
    /// Traces delivered by this process's exporter, for flush results.
    sent_total: u64,
    last_outcome: ExportOutcome,
    last_error: Option<LastError>,
    warnings: Vec<String>,
    target_warnings: Vec<String>,
    /// The export in flight, to cancel when shutdown runs out of time.
    in_flight: Option<Arc<Cancel>>,
}

struct WorkerHandle {
    thread: Thread,
    signal: Arc<worker::Signal>,
    /// Dropped (detached) when the worker is let go; forgotten in a fork
    /// child, where its thread does not exist.
    join: Option<JoinHandle<()>>,
}

impl Exporter {
    /// An exporter, off until [`Exporter::configure`] turns it on.
    pub fn new(sources: Sources, target: TargetFn) -> Exporter {
        Exporter {
            shared: Arc::new(Shared {
                sources,
                target,
                enabled: AtomicBool::new(false),
                started_in: AtomicU64::new(0),
                ready: AtomicU64::new(0),
                batch: AtomicU64::new(schedule::DEFAULT_MAX_BATCH_SIZE as u64),
                requested: AtomicU64::new(0),
                counters: stats::Counters::default(),
                control: ForkSafeMutex::new(Control::default()),
                reported: Condvar::new(),
            }),
        }
    }

    /// Makes the process-wide exporter's lock fork-safe.
    pub fn register_for_fork(&'static self) -> bool {
        let shared: &'static Shared = &self.shared;
        shared.control.register()
    }

    /// The settings in force.
    pub fn config(&self) -> ExporterConfig {
        self.shared.control().config
    }

    /// Puts settings in force. Turning the exporter off stops its thread at
    /// once (what waits stays in the store); turning it on arms a lazy start
    /// (also after a shutdown); other changes reach a running thread at its
    /// next wake.
    pub fn configure(&self, config: ExporterConfig, warnings: Vec<String>) {
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
                w.thread.unpark();
            }
        } else if !was_on {
            c.stopped = false;
            c.start_error = None;
            s.started_in.store(0, Ordering::Release);
        } else if let Some(w) = &c.worker {
            w.thread.unpark();
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
        let discard_before_ns = if c.inherited_handled {
            None
        } else {
            c.inherited_handled = true;
            fork::forked_at_ns()
        };
        c.target_warnings = target_warnings;
        let signal = Arc::new(worker::Signal::default());
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
        // The store's and the tracer's locks, after the exporter's is released.
        out.queued = s.sources.queued();
        out.dropped_traces = s.sources.dropped();
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

impl Control {
    /// `None` when a worker should be started now.
    fn running_state(&self) -> Option<Running> {
        if !self.config.is_on() {
            Some(Running::Off)
        } else if self.worker.is_some() {
            Some(Running::Yes)
        } else if self.stopped {
            Some(Running::ShutDown)
        } else {
            self.start_error.clone().map(Running::Failed)
        }
    }

    fn record_error(&mut self, message: &str) {
        self.last_error = Some(LastError {
            at_wall_ns: wall_now_ns(),
            message: message.to_string(),
        });
    }
}

impl Shared {
    /// The control state of this process: inherited state from before a
    /// fork is reset first (the parent's worker does not exist here).
    fn control(&self) -> MutexGuard<'_, Control> {
        let mut c = self.control.lock();
        let generation = fork::forks();
        if c.generation != generation {
            if let Some(w) = c.worker.take() {
                // Its thread is the parent's: never join or detach it here.
                std::mem::forget(w.join);
            }
            let config = c.config;
            let warnings = std::mem::take(&mut c.warnings);
            *c = Control {
                config,
                generation,
                warnings,
                ..Control::default()
            };
            self.requested.store(0, Ordering::Release);
            self.ready.store(0, Ordering::Relaxed);
            self.counters.reset();
        }
        c
    }

    pub(crate) fn schedule(&self) -> Schedule {
        self.control().config.schedule
    }

    pub(crate) fn set_in_flight(&self, cancel: Option<Arc<Cancel>>) {
        self.control().in_flight = cancel;
    }

    pub(crate) fn note_error(&self, message: &str) {
        self.control().record_error(message);
    }

    /// Records an export's outcome and wakes the waiters it served.
    pub(crate) fn report(&self, ticket: u64, outcome: &ExportOutcome) {
        self.counters.count(outcome);
        let mut c = self.control();
        c.sent_total += outcome.sent_traces as u64;
        if let Some(e) = &outcome.error {
            c.record_error(e);
        }
        c.served = c.served.max(ticket);
        c.last_outcome = outcome.clone();
        drop(c);
        self.reported.notify_all();
    }

    /// Waits until ticket `ticket` is served, `deadline` passes or `wait` is
    /// interrupted. Returns the guard, the result and whether it was served.
    fn wait_for<'a>(
        &'a self,
        mut c: MutexGuard<'a, Control>,
        ticket: u64,
        sent_before: u64,
        deadline: Instant,
        wait: &Wait,
    ) -> (MutexGuard<'a, Control>, FlushResult, bool) {
        loop {
            let sent = (c.sent_total.saturating_sub(sent_before)) as usize;
            if c.served >= ticket {
                let result = FlushResult {
                    sent,
                    failed: c.last_outcome.failed_traces,
                    error: c
                        .last_outcome
                        .is_failure()
                        .then(|| c.last_outcome.error.clone())
                        .flatten(),
                };
                return (c, result, true);
            }
            let gave_up = |error: String| FlushResult {
                sent,
                failed: 0,
                error: Some(error),
            };
            if wait.interrupted.load(Ordering::Acquire) {
                return (c, gave_up("interrupted".to_string()), false);
            }
            let now = Instant::now();
            if now >= deadline {
                let error = format!(
                    "timed out waiting for the export; what was not delivered waits in the \
                     store{}",
                    c.last_error
                        .as_ref()
                        .map(|e| format!(" (last error: {})", e.message))
                        .unwrap_or_default()
                );
                return (c, gave_up(error), false);
            }
            c = self
                .reported
                .wait_timeout(c, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }
}
