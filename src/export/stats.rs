//! What the exporter reports: its counters (atomics the worker bumps), one
//! export's outcome, a flush's result and `exporter_stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::pipeline::PushOutcome;
use crate::model::sampling::KeptSpans;
use crate::support::fork::Inherited;

/// Counters of this process's exporter (zeroed in a fork child when its own
/// exporter starts).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    exports: AtomicU64,
    exported_traces: AtomicU64,
    exported_spans: AtomicU64,
    failed_exports: AtomicU64,
    retries: AtomicU64,
    inherited_discarded: AtomicU64,
    /// Dropped from the retry queue by its bound.
    retry_dropped: AtomicU64,
    /// Traces the collector refused for good (400, 413), and the spans it
    /// rejected (those, and partial successes').
    rejected_traces: AtomicU64,
    rejected_spans: AtomicU64,
}

impl Counters {
    pub(crate) fn count(&self, e: &ExportOutcome) {
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        if e.is_empty() {
            return;
        }
        if e.is_failure() {
            add(&self.failed_exports, 1);
        } else {
            add(&self.exports, 1);
        }
        add(&self.exported_traces, e.sent_traces as u64);
        add(&self.exported_spans, e.sent_spans as u64);
        add(&self.retries, u64::from(e.retries));
        add(&self.rejected_traces, e.rejected_traces as u64);
        add(&self.rejected_spans, e.rejected_spans);
    }

    pub(crate) fn count_discarded(&self, n: usize) {
        self.inherited_discarded
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_retry_dropped(&self, n: usize) {
        self.retry_dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Dropped from the retry queue by its bound so far.
    pub(crate) fn retry_dropped(&self) -> u64 {
        self.retry_dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.retry_dropped,
            &self.rejected_traces,
            &self.rejected_spans,
            &self.exports,
            &self.exported_traces,
            &self.exported_spans,
            &self.failed_exports,
            &self.retries,
            &self.inherited_discarded,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The counters into `s`.
    pub(crate) fn read_into(&self, s: &mut ExporterStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.exports = get(&self.exports);
        s.exported_traces = get(&self.exported_traces);
        s.exported_spans = get(&self.exported_spans);
        s.failed_exports = get(&self.failed_exports);
        s.retries = get(&self.retries);
        s.inherited_discarded = get(&self.inherited_discarded);
        s.dropped_traces = get(&self.retry_dropped);
        s.rejected_traces = get(&self.rejected_traces);
        s.rejected_spans = get(&self.rejected_spans);
    }
}

/// What the sources (the store, the tracer) had dropped when a fork child
/// first looked: its ancestors' drops, which they report. Their totals are
/// kept for the life of the process image, so a child subtracts these to
/// report its own.
#[derive(Debug, Default)]
pub(crate) struct InheritedDrops(Inherited<1>);

impl InheritedDrops {
    /// What this process dropped, of `total` (the sources' drops since the
    /// first process began). In a fork child, the first call takes the
    /// total it is given as its ancestors' (the exporter's start calls it
    /// first, before anything is taken).
    pub(crate) fn own(&self, total: u64) -> u64 {
        self.0.own([total])[0]
    }
}

/// What the sources had sampled out, and kept by each keep rule, when a
/// fork child first looked (as [`InheritedDrops`]).
#[derive(Debug, Default)]
pub(crate) struct InheritedSampling(Inherited<4>);

impl InheritedSampling {
    /// This process's `sampled_out` and kept spans, of the sources' totals.
    pub(crate) fn own(&self, sampled_out: u64, kept: KeptSpans) -> (u64, KeptSpans) {
        let [sampled_out, errors, slow, retried] =
            self.0
                .own([sampled_out, kept.errors, kept.slow, kept.retried]);
        (
            sampled_out,
            KeptSpans {
                errors,
                slow,
                retried,
            },
        )
    }
}

/// What one export (one wake of the worker) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Traces (store traces, generic events, lifecycle runs) delivered.
    pub sent_traces: usize,
    pub sent_spans: usize,
    /// Traces not delivered, kept in the retry queue for the next attempt.
    pub failed_traces: usize,
    /// Traces the collector refused for good (not sent again, not in
    /// `sent_traces`), and the spans it rejected (refused, or reported in
    /// a partial success).
    pub rejected_traces: usize,
    pub rejected_spans: u64,
    /// Attempts beyond the first of each request.
    pub retries: u32,
    /// Why delivery failed, or the collector's partial-success message.
    pub error: Option<String>,
}

impl ExportOutcome {
    /// Nothing was waiting, nothing was sent, nothing went wrong.
    pub fn is_empty(&self) -> bool {
        self.sent_traces == 0
            && self.failed_traces == 0
            && self.rejected_traces == 0
            && self.error.is_none()
    }

    /// Something was to be delivered and was not (partial success, where the
    /// collector took the request but rejected some spans, is not a failure;
    /// nor is an export whose every trace was delivered or refused for good).
    pub fn is_failure(&self) -> bool {
        self.failed_traces > 0
            || (self.sent_traces == 0 && self.rejected_traces == 0 && self.error.is_some())
    }

    pub fn failed(error: impl Into<String>) -> ExportOutcome {
        ExportOutcome {
            error: Some(error.into()),
            ..ExportOutcome::default()
        }
    }
}

impl From<PushOutcome> for ExportOutcome {
    /// A push's outcome as the exporter counts it (a run is one trace).
    fn from(outcome: PushOutcome) -> ExportOutcome {
        match outcome {
            PushOutcome::Nothing => ExportOutcome::default(),
            PushOutcome::Sent {
                records,
                rejected_traces,
                spans,
                attempts,
                partial,
                requests,
                rejected_spans,
                ..
            } => ExportOutcome {
                sent_traces: records.saturating_sub(rejected_traces),
                sent_spans: spans,
                failed_traces: 0,
                rejected_traces,
                rejected_spans,
                retries: attempts.saturating_sub(u32::try_from(requests).unwrap_or(u32::MAX)),
                error: partial,
            },
            PushOutcome::Failed {
                records,
                delivered,
                rejected_traces,
                delivered_spans,
                requests,
                rejected_spans,
                attempts,
                error,
                ..
            } => ExportOutcome {
                sent_traces: delivered.saturating_sub(rejected_traces),
                sent_spans: delivered_spans,
                failed_traces: records,
                rejected_traces,
                rejected_spans,
                // Each request's first attempt is no retry.
                retries: attempts
                    .saturating_sub(u32::try_from(requests.max(1)).unwrap_or(u32::MAX)),
                error: Some(error),
            },
        }
    }
}

/// What `flush` and `shutdown` return.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushResult {
    /// Traces delivered while the call waited.
    pub sent: usize,
    /// Traces the last export could not deliver (they wait in the retry
    /// queue).
    pub failed: usize,
    /// Why the last export failed, why the call gave up waiting, or `None`.
    pub error: Option<String>,
}

/// The last failure: when (wall clock, nanoseconds since the epoch) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastError {
    pub at_wall_ns: i64,
    pub message: String,
}

/// `exporter_stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExporterStats {
    /// The settings turn the exporter on (and `OTEL_SDK_DISABLED` does not).
    pub enabled: bool,
    /// This process has an exporter thread.
    pub running: bool,
    pub pid: u32,
    /// Exports that delivered, and exports that failed.
    pub exports: u64,
    pub failed_exports: u64,
    pub exported_traces: u64,
    pub exported_spans: u64,
    pub retries: u64,
    /// Traces the collector refused for good (a 400, or a 413 at the
    /// smallest request size), never sent again, and the spans it rejected
    /// (those traces', and what partial successes reported).
    pub rejected_traces: u64,
    pub rejected_spans: u64,
    /// Traces evicted from the store (`max_traces`), finished lifecycle
    /// runs dropped (`max_finished_runs`) and traces dropped from the retry
    /// queue (the same bounds) before they could be exported.
    pub dropped_traces: u64,
    /// Finished traces, generic events and lifecycle runs waiting now, in
    /// the sources and in the retry queue.
    pub queued: usize,
    /// Traces and runs sampling left out of exports (not drops).
    pub sampled_out: u64,
    /// Spans of runs the head sampling left out that each keep rule
    /// brought back.
    pub kept_spans: KeptSpans,
    /// After failed exports: when the next attempt is due (wall clock,
    /// nanoseconds since the epoch); `None` when not backing off.
    pub next_attempt_at_ns: Option<i64>,
    /// Finished traces a fork child found from its parent and left to it.
    pub inherited_discarded: u64,
    pub last_error: Option<LastError>,
    /// Settings or variables that could not be used.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_export_that_failed_counts_what_its_first_requests_delivered() {
        let outcome = ExportOutcome::from(PushOutcome::Failed {
            records: 917,
            delivered: 2083,
            rejected_traces: 0,
            runs_delivered: 0,
            delivered_spans: 2083,
            requests: 2,
            rejected_spans: 0,
            status: Some(400),
            attempts: 2,
            error: "request 2 of 2: HTTP 400".into(),
        });
        assert_eq!(
            (
                outcome.sent_traces,
                outcome.sent_spans,
                outcome.failed_traces
            ),
            (2083, 2083, 917)
        );
        assert_eq!(outcome.retries, 0, "a 400 is not retried");
        let retried = ExportOutcome::from(PushOutcome::Failed {
            records: 3,
            delivered: 0,
            rejected_traces: 0,
            runs_delivered: 0,
            delivered_spans: 0,
            requests: 1,
            rejected_spans: 0,
            status: Some(503),
            attempts: 4,
            error: "HTTP 503".into(),
        });
        assert_eq!(retried.retries, 3);
    }
}
