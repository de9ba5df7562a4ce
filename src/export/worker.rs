//! The exporter thread: waits for the schedule delay, a full batch, a flush
//! or a stop; exports; reports; repeats. It never touches a foreign runtime
//! (no Ruby, no GVL) and catches the panics of each export itself.
//!
//! Lock discipline: the worker takes the exporter's control lock only to
//! read its settings and to report an export, never while it drains or puts
//! back records (those take the store's and the tracer's own locks), so it
//! never holds two registered locks.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::thread::spawn_native;
use crate::transport::{Cancel, Destination, Transport};

use super::announce::Observed;
use super::console::print_runs;
use super::pipeline::{print_only, push_tapped, Sending};
use super::sources::RUN_SETTLE;
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
    let mut link: Option<Link> = None;
    let mut due = Instant::now() + shared.schedule().delay;
    loop {
        // Wait for a reason to export.
        loop {
            if signal.state() != RUN || shared.requested.load(Ordering::Acquire) > served {
                break;
            }
            let schedule = shared.schedule();
            if shared.ready.load(Ordering::Relaxed) >= schedule.max_batch_size as u64 {
                break;
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::park_timeout(due - now);
        }
        if signal.state() == NOW {
            break;
        }
        let ticket = shared.requested.load(Ordering::Acquire);
        let everything = ticket > served || signal.state() == FINAL;
        shared.ready.store(0, Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            export(&shared, &mut link, &target, everything)
        }))
        .unwrap_or_else(|panic| ExportOutcome::failed(panic_text(panic.as_ref())));
        // Announced before the report wakes a waiting flush, so that the
        // flush hands its lines to Ruby.
        announce(&shared, &outcome);
        shared.report(ticket, &outcome);
        served = served.max(ticket);
        due = Instant::now() + shared.schedule().delay;
        if signal.state() == FINAL && served >= signal.final_ticket.load(Ordering::Acquire) {
            break;
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string());
    format!("internal error in the exporter: {text}")
}

/// Tells the announcer how the export went and how many traces have been
/// dropped so far (the store's and the tracer's locks, one after the other).
fn announce(shared: &Shared, outcome: &ExportOutcome) {
    let seen = Observed {
        dropped_total: shared.sources.dropped(),
        failure: outcome
            .is_failure()
            .then(|| outcome.error.clone())
            .flatten(),
        delivered: outcome.sent_traces,
        retry_every: shared.schedule().delay,
    };
    shared.announcer.observe(&seen);
}

/// One export, with a cancel token the exporter can reach (shutdown cancels
/// an export still retrying when its time is up). The OTLP sink sends; the
/// console sink draws the runs taken (before they are sent, once each).
fn export(
    shared: &Shared,
    link: &mut Option<Link>,
    target: &Result<Destination, String>,
    everything: bool,
) -> ExportOutcome {
    let (mode, output) = {
        let c = shared.control();
        (c.config.mode, c.console_output.clone())
    };
    // A flush or the final export takes every finished run, settled or not.
    let settle = if everything {
        Duration::ZERO
    } else {
        RUN_SETTLE
    };
    if !mode.otlp() {
        let mut print = |runs: &mut [Run]| print_runs(runs, &output).map(drop);
        return print_only(shared.sources, settle, &mut print).into();
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
            Err(e) => return ExportOutcome::failed(format!("exporter target: {e}")),
        }
    }
    let Some(link) = link.as_ref() else {
        return ExportOutcome::failed("exporter target: not built");
    };
    let cancel = Arc::new(Cancel::for_current_thread());
    shared.set_in_flight(Some(cancel.clone()));
    let mut tap = |runs: &mut [Run]| {
        if mode.console() {
            if let Err(e) = print_runs(runs, &output) {
                shared.note_error(&e);
            }
        }
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let resource = (shared.resource)();
        let sending = Sending::Here(&link.transport);
        push_tapped(
            shared.sources,
            &resource,
            sending,
            &cancel,
            settle,
            &mut tap,
        )
        .into()
    }));
    shared.set_in_flight(None);
    outcome.unwrap_or_else(|panic| ExportOutcome::failed(panic_text(panic.as_ref())))
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
