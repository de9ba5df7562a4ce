//! What the exporter drains: the store's finished traces and generic events,
//! and the lifecycle tracer's finished runs; how one export sends them
//! together and puts back what was not delivered; what a fork child leaves
//! to its parent.
//!
//! [`Sources::export_once`] is the one place where the exporter drains
//! lifecycle runs, turns them into spans (with the lifecycle tracer's own
//! mapping, the one `export_otlp` and `push_otlp` use) and puts them back.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::encode::run_spans::{attribute_prefix, runs_spans};
use crate::encode::Resource;
use crate::export::{push_finished_with, PushOutcome};
use crate::model::backend::store::{Backend, Record};
use crate::model::lifecycle::{Run, Tracer};
use crate::support::clock::Stamp;
use crate::transport::{Cancel, Transport};

use super::stats::ExportOutcome;

/// How long a finished run waits for late duplicates before a scheduled
/// export takes it (a flush takes it at once).
pub const RUN_SETTLE: Duration = Duration::from_secs(1);

/// Where the exporter's traces come from.
pub struct Sources {
    /// The drop-in backend's store.
    pub store: &'static Backend,
    /// The lifecycle tracer, when the process has one.
    pub runs: Option<&'static Tracer>,
    /// What describes the process in each request, as it is now (the pid
    /// after a fork, the resource settings in force). Called on the exporter
    /// thread: it must not touch a foreign runtime.
    pub resource: fn() -> Resource,
}

impl Sources {
    /// One export: drains what is ready (`everything`: every finished run,
    /// settled or not), sends it through `transport` and puts back what was
    /// not delivered, panics included. Touches no foreign runtime.
    pub fn export_once(
        &self,
        transport: &Transport,
        cancel: &Cancel,
        everything: bool,
    ) -> ExportOutcome {
        // Lifecycle runs: drained here, sent with the store's records, put
        // back here when they were not delivered.
        let settle = if everything {
            Duration::ZERO
        } else {
            RUN_SETTLE
        };
        let runs = self
            .runs
            .map(|t| t.drain_finished(settle))
            .unwrap_or_default();
        let pushed = catch_unwind(AssertUnwindSafe(|| {
            let resource = (self.resource)();
            // The same spans as export_otlp/push_otlp make of runs: the
            // attribute keys carry the service name's prefix.
            let prefix = attribute_prefix(&resource.service_name);
            let extra = runs_spans(&runs, &prefix, Stamp::now());
            push_finished_with(self.store, &resource, transport, cancel, &extra)
        }));
        let outcome = match pushed {
            Ok(outcome) => outcome,
            Err(panic) => {
                // The store's records are back already (push_finished_with).
                self.put_back_runs(runs);
                resume_unwind(panic)
            }
        };
        match outcome {
            PushOutcome::Nothing => ExportOutcome::default(),
            PushOutcome::Sent {
                records,
                spans,
                attempts,
                partial,
                requests,
                ..
            } => ExportOutcome {
                sent_traces: records + runs.len(),
                sent_spans: spans,
                failed_traces: 0,
                retries: attempts.saturating_sub(u32::try_from(requests).unwrap_or(u32::MAX)),
                error: partial,
            },
            PushOutcome::Failed {
                records,
                delivered,
                extra_delivered,
                attempts,
                error,
                ..
            } => {
                let run_count = runs.len();
                if !extra_delivered {
                    self.put_back_runs(runs);
                }
                let (sent_runs, failed_runs) = if extra_delivered {
                    (run_count, 0)
                } else {
                    (0, run_count)
                };
                ExportOutcome {
                    sent_traces: delivered + sent_runs,
                    sent_spans: 0,
                    failed_traces: records + failed_runs,
                    retries: attempts.saturating_sub(1),
                    error: Some(error),
                }
            }
        }
    }

    fn put_back_runs(&self, runs: Vec<Run>) {
        if let (Some(tracer), false) = (self.runs, runs.is_empty()) {
            tracer.restore(runs);
        }
    }

    /// In a fork child: removes the finished traces, generic events and runs
    /// that finished at or before `forked_at_ns` (monotonic clock), which
    /// belong to the parent's exporter; what finished after stays. Returns
    /// how many were removed.
    pub fn discard_finished_before(&self, forked_at_ns: u64) -> usize {
        let (inherited, own): (Vec<_>, Vec<_>) = self
            .store
            .drain(false)
            .into_iter()
            .partition(|(_, rec)| finished_at(rec).is_some_and(|at| at <= forked_at_ns));
        self.store.restore(own);
        let mut discarded = inherited.len();
        if let Some(tracer) = self.runs {
            let (inherited_runs, own_runs): (Vec<_>, Vec<_>) = tracer
                .drain_finished(Duration::ZERO)
                .into_iter()
                .partition(|run| run_finished_at(run).is_some_and(|at| at <= forked_at_ns));
            if !own_runs.is_empty() {
                tracer.restore(own_runs);
            }
            discarded += inherited_runs.len();
        }
        discarded
    }

    /// Finished traces, generic events and runs waiting for export.
    pub fn queued(&self) -> usize {
        let store = self
            .store
            .snapshot()
            .entries
            .iter()
            .filter(|(_, rec)| rec.is_complete())
            .count();
        store + self.runs.map_or(0, |t| t.stats().finished_runs)
    }

    /// Traces evicted from the store and finished runs dropped before export.
    pub fn dropped(&self) -> u64 {
        let runs = self.runs.map_or(0, |t| t.stats().finished_runs_dropped);
        self.store.stats().evicted_traces + runs
    }
}

/// When a record finished (its finish event, or a generic event's time).
fn finished_at(rec: &Record) -> Option<u64> {
    match rec {
        Record::Trace(t) => t.finish.as_ref().map(|f| f.at.mono_ns),
        Record::Generic(g) => Some(g.at.mono_ns),
    }
}

fn run_finished_at(run: &Run) -> Option<u64> {
    run.root().and_then(|root| root.end).map(|end| end.mono_ns)
}
