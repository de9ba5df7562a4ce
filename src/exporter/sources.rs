//! What the exporter drains: the store's finished traces and generic events,
//! and the lifecycle tracer's finished runs; how one export sends them
//! together and puts back what was not delivered; what a fork child leaves
//! to its parent.
//!
//! [`Sources::export_once`] is the ONE place where lifecycle runs are
//! drained, turned into spans and put back: a merge that brings a shared
//! "push store records and lifecycle runs" function replaces its body.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::backend::store::{Backend, Record};
use crate::lifecycle::{AttrValue, Run, SpanStatus, StatusCode, Tracer};
use crate::otlp::mapping::unix_nanos;
use crate::otlp::{
    push_finished_with, AttributeValue, Cancel, KeyValue, OwnedEvent, OwnedSpan, PushOutcome,
    Resource, SpanLink, Transport, SPAN_KIND_INTERNAL, STATUS_CODE_ERROR, STATUS_CODE_OK,
};

use super::stats::ExportOutcome;

/// How long a finished run waits for late duplicates before a scheduled
/// export takes it (a flush takes it at once).
pub const RUN_SETTLE: Duration = Duration::from_secs(1);

/// Attribute keys of lifecycle spans carry this prefix on the wire.
pub const RUN_ATTRIBUTE_PREFIX: &str = "tasker.";

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
        let extra = runs_to_spans(&runs);
        let pushed = catch_unwind(AssertUnwindSafe(|| {
            let resource = (self.resource)();
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

fn attribute_value(v: &AttrValue) -> AttributeValue {
    match v {
        AttrValue::Int(n) => AttributeValue::Int(*n),
        AttrValue::Float(x) => AttributeValue::Double(*x),
        AttrValue::Bool(b) => AttributeValue::Bool(*b),
        AttrValue::Str(t) => AttributeValue::String(t.as_str().to_string()),
        AttrValue::Array(items) => {
            AttributeValue::Array(items.iter().map(attribute_value).collect())
        }
    }
}

fn attributes(attrs: &[crate::lifecycle::Attr]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| {
            KeyValue::new(
                format!("{RUN_ATTRIBUTE_PREFIX}{}", k.as_str()),
                attribute_value(v),
            )
        })
        .collect()
}

fn status(s: &SpanStatus) -> Option<(i32, String)> {
    match s.code {
        StatusCode::Unset => None,
        StatusCode::Ok => Some((STATUS_CODE_OK, String::new())),
        StatusCode::Error => Some((
            STATUS_CODE_ERROR,
            s.message
                .as_ref()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
        )),
    }
}

/// Lifecycle runs as OTLP spans, one trace per run: the root and its attempt
/// spans, their attributes (`tasker.` prefixed), events, links and statuses.
/// Times are the run's wall-clock start plus monotonic offsets, so durations
/// are exact. (A minimal mapping, to be replaced by the lifecycle exporter's
/// own when the two meet.)
pub fn runs_to_spans(runs: &[Run]) -> Vec<OwnedSpan> {
    let mut out = Vec::with_capacity(runs.iter().map(|r| r.spans.len()).sum());
    for run in runs {
        let Some(anchor) = run.root().map(|r| r.start) else {
            continue;
        };
        for span in &run.spans {
            let start = unix_nanos(anchor, span.start);
            let end = span.end.map_or(start, |e| unix_nanos(anchor, e)).max(start);
            out.push(OwnedSpan {
                trace_id: run.trace_id,
                span_id: span.span_id,
                parent_span_id: span.parent_span_id,
                name: span.name.to_string(),
                kind: SPAN_KIND_INTERNAL,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes: attributes(&span.attributes),
                events: span
                    .events
                    .iter()
                    .map(|e| OwnedEvent {
                        time_unix_nano: unix_nanos(anchor, e.at),
                        name: e.name.as_str().to_string(),
                        attributes: attributes(&e.attributes),
                    })
                    .collect(),
                links: span
                    .links
                    .iter()
                    .map(|l| SpanLink {
                        trace_id: l.trace_id,
                        span_id: l.span_id,
                    })
                    .collect(),
                status: status(&span.status),
            });
        }
    }
    out
}
