//! Exports and pushes that carry everything the process traced: the drop-in
//! backend's records and the lifecycle tracer's runs, in the same request(s).
//!
//! - Each lifecycle run is one trace (see [`crate::encode::run_spans`]); its
//!   spans go before the backend's records.
//! - With `drain`, finished runs are removed from the tracer (and records
//!   from the store) as they are taken, so each is exported exactly once;
//!   whatever was taken goes back when encoding or delivery fails or panics.
//! - With `include_open`, open runs are exported as they stand (open spans
//!   end at the export time) and stay in the tracer: they are exported
//!   whole again once they end, so they are never lost to an early export.
//! - The two sources are taken one after the other, never holding both
//!   locks at once.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

use super::pipeline::{push_finished_with, select, Export, PushOutcome};
use crate::encode::run_spans::{attribute_prefix, runs_spans};
use crate::encode::{encode_request, EncodeError, Resource};
use crate::model::backend::store::Backend;
use crate::model::lifecycle::{ExportRuns, Tracer};
use crate::support::clock::Stamp;
use crate::transport::{Cancel, Protocol, Transport};

/// How long a finished run must have been idle before an explicit export or
/// push takes it: none. Tasker publishes a run's duplicate closing events
/// straight after each other in one thread, so an explicit export rarely
/// lands between them; one that does leaves the later duplicate counted as
/// late (`events_late`).
pub const EXPLICIT_SETTLE: Duration = Duration::ZERO;

/// An export of both sources: the backend's records, the runs, the body.
pub struct CombinedExport {
    pub export: Export,
    pub runs: ExportRuns,
}

impl CombinedExport {
    /// Lifecycle runs in the export (finished and open).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Puts what a drain took back into both sources (the export did not
    /// reach its caller). Copies (no drain) go nowhere.
    pub fn restore(self, backend: &Backend, tracer: &Tracer) {
        if self.runs.drained {
            backend.restore(self.export.records);
        }
        self.runs.restore_into(tracer);
    }
}

/// Encodes the backend's records (finished, and open with `include_open`)
/// and the tracer's runs as one request in `protocol`. With `drain`, both
/// are removed as they are taken, and put back when encoding fails or
/// panics.
pub fn export(
    backend: &Backend,
    tracer: &Tracer,
    drain: bool,
    include_open: bool,
    resource: &Resource,
    protocol: Protocol,
) -> Result<CombinedExport, EncodeError> {
    let records = select(backend, drain, include_open);
    let runs = tracer.export_runs(drain, include_open, EXPLICIT_SETTLE);
    let now = Stamp::now();
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        let prefix = attribute_prefix(&resource.service_name);
        let mut spans = runs_spans(&runs.taken, &prefix, now);
        spans.extend(runs_spans(&runs.open, &prefix, now));
        encode_request(&records, &spans, resource, now, protocol)
    }));
    let taken = CombinedExport {
        export: Export {
            records,
            protocol,
            body: Vec::new(),
        },
        runs,
    };
    match encoded {
        Ok(Ok(body)) => Ok(CombinedExport {
            export: Export {
                body,
                ..taken.export
            },
            runs: taken.runs,
        }),
        Ok(Err(e)) => {
            taken.restore(backend, tracer);
            Err(e)
        }
        Err(panic) => {
            taken.restore(backend, tracer);
            resume_unwind(panic)
        }
    }
}

/// Drains the backend's finished records and the tracer's runs finished
/// (and idle for `settled_for`), sends them through `transport`, and puts
/// back whatever was not delivered, panics included. The outcome counts a
/// run as one record (`records`, `delivered`). Safe to run with the Ruby
/// GVL released.
pub fn push(
    backend: &Backend,
    tracer: &Tracer,
    resource: &Resource,
    transport: &Transport,
    cancel: &Cancel,
    settled_for: Duration,
) -> PushOutcome {
    let runs = tracer.export_runs(true, false, settled_for);
    let n = runs.taken.len();
    let pushed = catch_unwind(AssertUnwindSafe(|| {
        let prefix = attribute_prefix(&resource.service_name);
        let spans = runs_spans(&runs.taken, &prefix, Stamp::now());
        push_finished_with(backend, resource, transport, cancel, &spans)
    }));
    match pushed {
        Ok(mut outcome) => {
            let mut put_back = false;
            match &mut outcome {
                PushOutcome::Sent { records, .. } => *records += n,
                PushOutcome::Failed {
                    delivered,
                    extra_delivered: true,
                    ..
                } => *delivered += n,
                PushOutcome::Failed { records, .. } => {
                    *records += n;
                    put_back = true;
                }
                PushOutcome::Nothing => {}
            }
            if put_back {
                runs.restore_into(tracer);
            }
            outcome
        }
        Err(panic) => {
            // Whether the runs went out is unknown: put them back (a run may
            // then arrive twice, never not at all).
            runs.restore_into(tracer);
            resume_unwind(panic)
        }
    }
}
