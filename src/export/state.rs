//! The background exporter's shared state: what its thread and the app's
//! threads share ([`Shared`]), the control state under its one lock, how
//! one worker is told to stop ([`Signal`]), and a waiting flush ([`Wait`]).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::Instant;

use super::announce::Announcer;
use super::console::ConsoleOutput;
use super::settings::{BackgroundSettings, Schedule};
use super::sources::Sources;
use super::stats::{self, ExportOutcome, FlushResult, LastError};
use crate::encode::Resource;
use crate::support::clock::wall_now_ns;
use crate::support::fork::{self, ForkSafeMutex};
use crate::support::interrupt;
use crate::transport::{Cancel, Destination};

/// Where the exporter's target comes from: called when a worker starts, on
/// the thread that starts it, with any warnings about unusable settings.
pub type DestinationFn = Box<dyn Fn() -> (Result<Destination, String>, Vec<String>) + Send + Sync>;

/// A flush or shutdown waiting: interrupt it from another thread with
/// [`Exporter::interrupt`](super::Exporter::interrupt).
#[derive(Debug, Default)]
pub struct Wait {
    pub(super) interrupted: AtomicBool,
}

/// How [`Exporter::ensure_running`](super::Exporter::ensure_running) found the exporter.
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

pub(super) struct Shared {
    pub(super) sources: Sources<'static>,
    /// What describes the process in each request, as it is now (the pid
    /// after a fork, the resource settings in force). Called on the exporter
    /// thread: it must not touch a foreign runtime.
    pub(super) resource: fn() -> Resource,
    pub(super) target: DestinationFn,
    /// The settings turn the exporter on: checked first on every event.
    pub(super) enabled: AtomicBool,
    /// The fork generation + 1 in which a start was last attempted.
    pub(super) started_in: AtomicU64,
    /// Events recorded since the last export began.
    pub(super) ready: AtomicU64,
    /// `max_batch_size`, for the recording path.
    pub(super) batch: AtomicU64,
    /// Flush tickets handed out.
    pub(super) requested: AtomicU64,
    pub(super) counters: stats::Counters,
    /// The sources' drops a fork child inherited (see `InheritedDrops`).
    pub(super) inherited_drops: stats::InheritedDrops,
    /// The sources' sampling counts a fork child inherited.
    pub(super) inherited_sampling: stats::InheritedSampling,
    /// Runs and records in the worker's retry queue.
    pub(super) retry_queued: AtomicU64,
    /// When the worker tries again after failed exports (wall clock,
    /// nanoseconds since the epoch); 0 when it is not backing off.
    pub(super) next_attempt_wall_ns: AtomicI64,
    pub(super) control: ForkSafeMutex<Control>,
    /// Drops and failing exports announced (lines wait for Ruby).
    pub(super) announcer: Announcer,
    /// Signalled when an export is reported or a waiter is interrupted.
    pub(super) reported: Condvar,
}

#[derive(Default)]
pub(super) struct Control {
    pub(super) config: BackgroundSettings,
    /// Where the console sink writes (`console_output`).
    pub(super) console_output: ConsoleOutput,
    /// The fork generation this state belongs to.
    pub(super) generation: u64,
    pub(super) worker: Option<WorkerHandle>,
    pub(super) stopped: bool,
    /// The first worker of a fork child removes what the parent left.
    pub(super) inherited_handled: bool,
    /// In a process `Process.daemon` made from a fork child that had not
    /// removed what its own parent left: what finished at or before this
    /// (that fork) is still that ancestor's, removed when the exporter
    /// starts (see `Control::take_inherited`).
    pub(super) adopted_before: Option<u64>,
    pub(super) start_error: Option<String>,
    /// The highest flush ticket an export has served.
    pub(super) served: u64,
    /// Traces delivered by this process's exporter, for flush results.
    pub(super) sent_total: u64,
    pub(super) last_outcome: ExportOutcome,
    pub(super) last_error: Option<LastError>,
    pub(super) warnings: Vec<String>,
    pub(super) target_warnings: Vec<String>,
    /// The export in flight, to cancel when shutdown runs out of time.
    pub(super) in_flight: Option<Arc<Cancel>>,
}

pub(super) struct WorkerHandle {
    pub(super) thread: Thread,
    pub(super) signal: Arc<Signal>,
    /// Dropped (detached) when the worker is let go; forgotten in a fork
    /// child, where its thread does not exist.
    pub(super) join: Option<JoinHandle<()>>,
}

/// Keep running.
pub(super) const RUN: u8 = 0;
/// Export once more (serving `final_ticket`), then end.
pub(super) const FINAL: u8 = 1;
/// End without exporting again.
pub(super) const NOW: u8 = 2;

/// How the exporter tells one worker to stop. Each worker has its own, so a
/// worker being stopped never picks up a newer worker's orders.
#[derive(Debug, Default)]
pub(super) struct Signal {
    stop: AtomicU8,
    pub(super) final_ticket: AtomicU64,
}

impl Signal {
    pub(super) fn stop_after(&self, ticket: u64) {
        self.final_ticket.store(ticket, Ordering::Release);
        self.stop.store(FINAL, Ordering::Release);
    }

    pub(super) fn stop_now(&self) {
        self.stop.store(NOW, Ordering::Release);
    }

    pub(super) fn state(&self) -> u8 {
        self.stop.load(Ordering::Acquire)
    }
}

impl Control {
    /// `None` when a worker should be started now.
    pub(super) fn running_state(&self) -> Option<Running> {
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

    pub(super) fn record_error(&mut self, message: &str) {
        self.record_error_at(message, wall_now_ns());
    }

    pub(super) fn record_error_at(&mut self, message: &str, at_wall_ns: i64) {
        self.last_error = Some(LastError {
            at_wall_ns,
            message: message.to_string(),
        });
    }
}

impl Control {
    /// What finished at or before the returned time is not this process's
    /// to export (an ancestor's, which exports it); `None`: everything is.
    pub(super) fn unowned_before(&self) -> Option<u64> {
        if self.inherited_handled {
            self.adopted_before
        } else {
            fork::forked_at_ns()
        }
    }

    /// [`Control::unowned_before`], for the one caller that removes those
    /// now (the exporter's start, or a push before it): from then on this
    /// process owns everything it holds.
    pub(super) fn take_inherited(&mut self) -> Option<u64> {
        let before = self.unowned_before();
        self.inherited_handled = true;
        self.adopted_before = None;
        before
    }
}

impl Shared {
    /// The control state of this process: inherited state from before a
    /// fork is reset first (the parent's worker does not exist here).
    pub(super) fn control(&self) -> MutexGuard<'_, Control> {
        let mut c = self.control.lock();
        let generation = fork::forks();
        if c.generation != generation {
            if let Some(w) = c.worker.take() {
                // Its thread is the parent's: never join or detach it here.
                std::mem::forget(w.join);
            }
            let config = c.config;
            let warnings = std::mem::take(&mut c.warnings);
            let console_output = std::mem::take(&mut c.console_output);
            *c = Control {
                config,
                console_output,
                generation,
                warnings,
                ..Control::default()
            };
            self.requested.store(0, Ordering::Release);
            self.ready.store(0, Ordering::Relaxed);
            // The parent's retry queue is its worker's, not this process's.
            self.retry_queued.store(0, Ordering::Relaxed);
            self.sources.store.set_held_for_export(0);
            self.next_attempt_wall_ns.store(0, Ordering::Relaxed);
            self.counters.reset();
        }
        c
    }

    pub(super) fn schedule(&self) -> Schedule {
        self.control().config.schedule
    }

    pub(super) fn set_in_flight(&self, cancel: Option<Arc<Cancel>>) {
        self.control().in_flight = cancel;
    }

    pub(super) fn note_error(&self, message: &str) {
        self.control().record_error(message);
    }

    /// Records an export's outcome, which ended at `at_wall_ns`, and wakes
    /// the waiters it served.
    pub(super) fn report(&self, ticket: u64, outcome: &ExportOutcome, at_wall_ns: i64) {
        self.counters.count(outcome);
        let mut c = self.control();
        c.sent_total += outcome.sent_traces as u64;
        if let Some(e) = &outcome.error {
            c.record_error_at(e, at_wall_ns);
        }
        c.served = c.served.max(ticket);
        c.last_outcome = outcome.clone();
        drop(c);
        self.reported.notify_all();
    }

    /// Waits until ticket `ticket` is served, `deadline` passes or `wait` is
    /// interrupted. Returns the guard, the result and whether it was served.
    pub(super) fn wait_for<'a>(
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
                if !interrupt::has_poll() {
                    return (c, gave_up("interrupted".to_string()), false);
                }
                // The host woke this wait: the host's poll says whether an
                // interrupt is pending (Ruby wakes a waiting thread without
                // one too: a signal whose trap handler raises nothing, and
                // Ruby 3.3 in a fork child). Cleared first, so that a wake
                // that comes during the poll is seen at the next turn.
                wait.interrupted.store(false, Ordering::Release);
                drop(c);
                let pending = interrupt::poll_due();
                c = self.control();
                if pending {
                    return (c, gave_up("interrupted".to_string()), false);
                }
                continue;
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
            let until = interrupt::wait_until(deadline);
            c = self
                .reported
                .wait_timeout(c, until.saturating_duration_since(now))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
            if interrupt::poll_fits(deadline) && c.served < ticket {
                // The host's poll runs with no lock held.
                drop(c);
                if interrupt::poll_due() {
                    wait.interrupted.store(true, Ordering::Release);
                }
                c = self.control();
            }
        }
    }
}
