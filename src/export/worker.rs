//! The exporter thread: waits for the schedule delay, a full batch, a flush
//! or a stop; exports; reports; repeats. It never touches a foreign runtime
//! (no Ruby, no GVL) and catches the panics of each export itself.
//!
//! Lock discipline: the worker takes the exporter's control lock only to
//! read its settings and to report an export, never while it takes from
//! the sources (which take the store's and the tracer's own locks, once
//! each per take, to swap containers out), so it never holds two registered
//! locks. What it could not deliver stays in its own retry queue: nothing
//! is put back under an app thread's lock while it exports.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::Taken;
use crate::support::clock::wall_now_ns;
use crate::support::thread::spawn_native;
use crate::transport::retry::jitter;
use crate::transport::{Cancel, Destination, Transport};

use super::announce::Observed;
use super::console::{print_runs, ConsoleOutput};
use super::pipeline::{deliver, Batch, Sending};
use super::retry_queue::{backoff, RetryQueue};
use super::sources::{Dropped, RUN_SETTLE};
use super::state::{Shared, Signal, FINAL, NOW, RUN};
use super::stats::ExportOutcome;
use crate::model::lifecycle::Run;

/// What the worker starts with.
pub(super) struct Start {
    pub shared: Arc<Shared>,
    pub signal: Arc<Signal>,
    pub target: Result<Destination, String>,
    /// In a fork child's first exporter: the fork's time; what finished
    /// before it is the parent's to export.
    pub discard_before_ns: Option<u64>,
    /// Flush tickets already served when this worker started.
    pub served: u64,
}

/// The transport, built on the worker thread (TLS setup is not free) and
/// again when the export timeout changes.
struct Link {
    timeout: Duration,
    transport: Transport,
}

pub(super) fn run(start: Start) {
    let Start {
        shared,
        signal,
        target,
        discard_before_ns,
        mut served,
    } = start;
    lower_priority();
    if let Some(forked_at) = discard_before_ns {
        match catch_unwind(AssertUnwindSafe(|| {
            shared.sources.discard_finished_before(forked_at)
        })) {
            Ok(n) => shared.counters.count_discarded(n),
            Err(panic) => shared.note_error(&panic_text(panic.as_ref())),
        }
    }
    // What the sources dropped before this process's exporter started is
    // its ancestors' (in a fork child): its own count starts here.
    if let Ok(total) = catch_unwind(AssertUnwindSafe(|| shared.sources.dropped())) {
        shared.inherited_drops.own(total);
    }
    // So are what they sampled out and kept, and the limits' cuts.
    if let Ok((sampled_out, kept)) = catch_unwind(AssertUnwindSafe(|| {
        (shared.sources.sampled_out(), shared.sources.kept_spans())
    })) {
        shared.inherited_sampling.own(sampled_out, kept);
    }
    crate::encode::limits::own_cuts();
    if let Some(tracer) = shared.sources.runs {
        tracer.set_export_settle(Some(RUN_SETTLE));
    }
    let mut link: Option<Link> = None;
    let mut queue = RetryQueue::default();
    // Failed exports in a row, and when the next attempt is due.
    let mut failures = 0u32;
    let mut next_attempt: Option<Instant> = None;
    // The sources' drop totals as of the latest take (read under the locks
    // the take takes anyway: backing off, the exporter takes no lock of
    // theirs).
    let mut dropped = Dropped::default();
    let mut due = Instant::now() + shared.schedule().delay;
    loop {
        // Wait for a reason to export: the schedule delay (or, after
        // failures, the backoff), a full batch (not while backing off), a
        // flush or a stop.
        loop {
            if signal.state() != RUN || shared.requested.load(Ordering::Acquire) > served {
                break;
            }
            let schedule = shared.schedule();
            if next_attempt.is_none()
                && shared.ready.load(Ordering::Relaxed) >= schedule.max_batch_size as u64
            {
                break;
            }
            let wake = next_attempt.map_or(due, |n| n.max(due));
            let now = Instant::now();
            if now >= wake {
                break;
            }
            std::thread::park_timeout(wake - now);
        }
        if signal.state() == NOW {
            break;
        }
        let ticket = shared.requested.load(Ordering::Acquire);
        let everything = ticket > served || signal.state() == FINAL;
        shared.ready.store(0, Ordering::Relaxed);
        // Backing off, the exporter retries what it holds and takes
        // nothing new; a flush or the final export takes everything.
        let take = everything || queue.is_empty();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            export(
                &shared,
                &mut link,
                &target,
                &mut queue,
                take,
                everything,
                &mut dropped,
            )
        }))
        .unwrap_or_else(|panic| ExportOutcome::failed(panic_text(panic.as_ref())));
        if !queue.is_empty() {
            let excess = queue.split_excess(shared.schedule().max_queue_size);
            if !excess.is_empty() {
                // The store's bound counts only what the queue still holds.
                shared
                    .sources
                    .store
                    .set_held_for_export(queue.batch.records.len());
                give_back(&shared, excess);
            }
        }
        shared
            .retry_queued
            .store(queue.len() as u64, Ordering::Relaxed);
        shared
            .sources
            .store
            .set_held_for_export(queue.batch.records.len());
        let now = Instant::now();
        let ended_at = wall_now_ns();
        due = now + shared.schedule().delay;
        if queue.is_empty() && failures > 0 {
            // Recovered: what the sources dropped while the exporter backed
            // off (it took nothing then) is told with the recovery.
            if let Ok(now_dropped) = catch_unwind(AssertUnwindSafe(|| shared.sources.dropped_now()))
            {
                dropped = now_dropped;
            }
        }
        if queue.is_empty() {
            failures = 0;
            next_attempt = None;
            shared.next_attempt_wall_ns.store(0, Ordering::Relaxed);
            if !take && outcome.sent_traces > 0 {
                // The retry queue went out: take what waits at once.
                due = now;
            }
        } else {
            failures = failures.saturating_add(1);
            // At least what the collector's Retry-After asked, when longer
            // than the backoff (the request gave up on it within its timeout).
            let asked = link.as_ref().and_then(|l| l.transport.asked_to_wait());
            let wait = backoff(failures, jitter()).max(asked.unwrap_or_default());
            next_attempt = Some(now + wait);
            let wait_ns = i64::try_from(wait.as_nanos()).unwrap_or(i64::MAX);
            shared
                .next_attempt_wall_ns
                .store(ended_at.saturating_add(wait_ns), Ordering::Relaxed);
        }
        // Announced before the report wakes a waiting flush, so that the
        // flush hands its lines to Ruby; "retrying every" is the backoff's
        // current wait (the schedule delay when not backing off).
        let retry_every = next_attempt.map_or(shared.schedule().delay, |n| n - now);
        announce(&shared, &outcome, retry_every, dropped);
        shared.report(ticket, &outcome, ended_at);
        served = served.max(ticket);
        if signal.state() == FINAL && served >= signal.final_ticket.load(Ordering::Acquire) {
            break;
        }
    }
    // What was never delivered goes back to its sources (an explicit push,
    // or a later exporter, may still send it); this worker is done.
    shared.retry_queued.store(0, Ordering::Relaxed);
    shared.sources.store.set_held_for_export(0);
    shared.next_attempt_wall_ns.store(0, Ordering::Relaxed);
    give_back(&shared, std::mem::take(&mut queue.batch));
}

/// Puts runs and records the exporter took back into their sources (an
/// explicit push, a later export or a later exporter may still send them);
/// the sources' bounds apply there, counted by them.
fn give_back(shared: &Shared, batch: Batch) {
    let Batch { runs, records } = batch;
    let _ = catch_unwind(AssertUnwindSafe(|| {
        shared.sources.put_back_runs(Taken {
            drained: true,
            ready: runs,
            open: Vec::new(),
        });
        Taken {
            drained: true,
            ready: records,
            open: Vec::new(),
        }
        .put_back(shared.sources.store);
    }));
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string());
    format!("internal error in the exporter: {text}")
}

/// Tells the announcer how the export went, how many traces have been
/// dropped so far (by the sources, as of the latest take, and by the retry
/// queue's bounds) and when the exporter tries again. Takes no lock an app
/// thread takes.
fn announce(shared: &Shared, outcome: &ExportOutcome, retry_every: Duration, dropped: Dropped) {
    let seen = Observed {
        dropped_total: shared
            .inherited_drops
            .own(dropped.runs + dropped.records.unwrap_or(0))
            + shared.counters.retry_dropped(),
        failure: outcome
            .is_failure()
            .then(|| outcome.error.clone())
            .flatten(),
        delivered: outcome.sent_traces,
        retry_every,
    };
    shared.announcer.observe(&seen);
}

/// One export, with a cancel token the exporter can reach (shutdown cancels
/// an export still retrying when its time is up): with `take`, what the
/// sources have ready joins the retry queue (everything finished with
/// `everything`, else the settled runs; the store's records only when the
/// OTLP sink is on); the console sink draws the runs it has not drawn yet
/// (once each: a run kept for another OTLP attempt is not drawn again);
/// then the OTLP sink sends the queue, and what was delivered leaves it.
/// With the console sink alone, a run leaves the queue once drawn.
fn export(
    shared: &Shared,
    link: &mut Option<Link>,
    target: &Result<Destination, String>,
    queue: &mut RetryQueue,
    take: bool,
    everything: bool,
    dropped: &mut Dropped,
) -> ExportOutcome {
    let (mode, output) = {
        let c = shared.control();
        (c.config.mode, c.console_output.clone())
    };
    if take {
        // A flush or the final export takes every finished run, settled or not.
        let settle = if everything {
            Duration::ZERO
        } else {
            RUN_SETTLE
        };
        let taken = shared.sources.take_for_exporter(settle, mode.otlp());
        *dropped = Dropped {
            runs: taken.dropped.runs,
            records: taken.dropped.records.or(dropped.records),
        };
        shared.counters.count_retry_dropped(queue.append(taken));
        // In flight from now on, and still waiting (`exporter_stats[:queued]`)
        // until delivered.
        shared
            .retry_queued
            .store(queue.len() as u64, Ordering::Relaxed);
        // What the queue holds counts against the store's bound from now on,
        // so that the two together never pass `max_traces`.
        shared
            .sources
            .store
            .set_held_for_export(queue.batch.records.len());
    }
    if queue.is_empty() {
        return ExportOutcome::default();
    }
    if !mode.otlp() {
        if !queue.batch.records.is_empty() {
            // Taken while the OTLP sink was on: the store keeps them.
            Taken {
                drained: true,
                ready: std::mem::take(&mut queue.batch.records),
                open: Vec::new(),
            }
            .put_back(shared.sources.store);
        }
        return print_only(&mut queue.batch, &output);
    }
    if mode.console() {
        if let Err(e) = print_runs(&mut queue.batch.runs, &output) {
            shared.note_error(&e);
        }
    }
    let timeout = shared.schedule().export_timeout;
    if link.as_ref().is_none_or(|l| l.timeout != timeout) {
        let built = target.clone().and_then(|t| {
            let per_request = t.timeout.min(timeout);
            Transport::new(Destination {
                timeout: per_request,
                ..t
            })
        });
        match built {
            Ok(transport) => *link = Some(Link { timeout, transport }),
            Err(e) => {
                return ExportOutcome {
                    failed_traces: queue.len(),
                    ..ExportOutcome::failed(format!("exporter target: {e}"))
                }
            }
        }
    }
    let Some(link) = link.as_ref() else {
        return ExportOutcome {
            failed_traces: queue.len(),
            ..ExportOutcome::failed("exporter target: not built")
        };
    };
    let cancel = Arc::new(Cancel::for_current_thread());
    shared.set_in_flight(Some(cancel.clone()));
    let resource = (shared.resource)();
    let sending = Sending::Here(&link.transport);
    let delivered = deliver(&mut queue.batch, &queue.prefix, &resource, sending, &cancel);
    shared.set_in_flight(None);
    match delivered {
        Ok(outcome) => outcome.into(),
        Err(panic) => ExportOutcome {
            failed_traces: queue.len(),
            ..ExportOutcome::failed(panic_text(panic.as_ref()))
        },
    }
}

/// The console sink alone: draws the queue's runs not drawn yet; they are
/// delivered once drawn, and wait in the queue (for the backoff) when the
/// output fails. The queue holds no records then (the console draws
/// lifecycle runs only; the store keeps its records).
fn print_only(batch: &mut Batch, output: &ConsoleOutput) -> ExportOutcome {
    let printed = print_runs(&mut batch.runs, output);
    let (drawn, waiting): (Vec<Run>, Vec<Run>) = std::mem::take(&mut batch.runs)
        .into_iter()
        .partition(|r| r.printed);
    batch.runs = waiting;
    ExportOutcome {
        sent_traces: drawn.len(),
        sent_spans: drawn.iter().map(|r| r.spans.len()).sum(),
        failed_traces: batch.len(),
        retries: 0,
        error: printed.err(),
        ..ExportOutcome::default()
    }
}

/// The exporter's CPU priority relative to the app's threads (a nice value,
/// the lowest): on an idle core it runs at full speed; on a core an app
/// thread wants, the scheduler gives that thread about 98.5% of it (nice 19
/// weighs 15 against nice 0's 1024), so exporting costs the app close to
/// nothing even on a saturated machine. The exporter then still gets about
/// 1.5% of a core per busy thread, enough for thousands of traces a second.
pub const NICE: i32 = 19;

/// Lowers this thread's CPU priority by [`NICE`] (Linux: nice is per thread).
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: gettid and setpriority only read and set this thread's
    // scheduling priority; a failure (not permitted) leaves it as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (current + NICE).min(19));
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// The exporter thread's name (the kernel shows its first 15 bytes).
pub const THREAD_NAME: &str = "tasker-otlp-export";

/// Spawns the worker (every signal blocked in it, see [`spawn_native`]).
pub(super) fn spawn(start: Start) -> std::io::Result<std::thread::JoinHandle<()>> {
    spawn_native(THREAD_NAME, move || run(start))
}
