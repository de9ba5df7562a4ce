//! The one export path: take from the sources, encode, send, and put back
//! what was not delivered. `export_otlp` ([`encode_export`]), `push_otlp`
//! and the background exporter ([`push`]) all go through it.
//!
//! - Each lifecycle run is one trace (see [`crate::encode::run_spans`]); its
//!   spans go before the store's records, all in one request unless they
//!   alone pass the request size limit, so that a failed request puts back
//!   only the runs and records no earlier request delivered.
//! - With `drain`, what is taken is removed from its source, so each trace
//!   is exported exactly once; whatever was taken goes back when encoding or
//!   delivery fails or panics.
//! - With `include_open`, open runs are exported as they stand (open spans
//!   end at the export time) and stay in the tracer: they are exported whole
//!   again once they end, so they are never lost to an early export.
//! - The two sources are taken one after the other, never holding both
//!   locks at once.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use super::sources::Sources;
use crate::encode::run_spans::{run_spans, runs_spans};
use crate::encode::{encode_request, EncodeError, Encoder, OwnedSpan, Resource};
use crate::model::backend::store::{Key, Record};
use crate::model::lifecycle::Run;
use crate::model::{Source, Take, Taken};
use crate::support::clock::Stamp;
use crate::support::protocol::Protocol;
use crate::transport::{Cancel, Delivery, PushSender, Transport};

/// How long a finished run must have been idle before an explicit export or
/// push takes it: none. Tasker publishes a run's duplicate closing events
/// straight after each other in one thread, so an explicit export rarely
/// lands between them; one that does leaves the later duplicate counted as
/// late (`events_late`).
pub const EXPLICIT_SETTLE: Duration = Duration::ZERO;

/// How an export's requests are sent.
#[derive(Clone, Copy)]
pub enum Sending<'a> {
    /// On the calling thread (the background exporter's own): a cancel ends
    /// backoff waits and further attempts, not a request on the wire.
    Here(&'a Transport),
    /// Through the push thread, while the calling thread waits: a cancel
    /// ends the wait at once (`push_otlp`, which an interrupt may cancel).
    PushThread(&'a Transport, &'a PushSender),
}

impl Sending<'_> {
    fn transport(&self) -> &Transport {
        match self {
            Sending::Here(t) | Sending::PushThread(t, _) => t,
        }
    }

    fn send(&self, body: crate::encode::Body, cancel: &Cancel) -> Delivery {
        match self {
            Sending::Here(t) => t.send(body.bytes(), cancel),
            Sending::PushThread(t, sender) => sender.send(t, Box::new(body), cancel),
        }
    }
}

/// An export encoded as one request, and what it took from the sources.
pub struct Encoded {
    pub protocol: Protocol,
    pub body: Vec<u8>,
    /// The store's records it covers, in order.
    pub records: Taken<(Key, Arc<Record>)>,
    /// The lifecycle runs it covers (finished, then copies of open ones).
    pub runs: Taken<Run>,
}

impl Encoded {
    /// Lifecycle runs in the export (finished and open).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Puts what a drain took back into the sources (the export did not
    /// reach its caller). Copies (no drain) go nowhere.
    pub fn put_back(self, sources: Sources<'_>) {
        sources.put_back(self.records, self.runs);
    }
}

/// Encodes the store's records (finished, and open with `include_open`)
/// and the tracer's runs as one request in `protocol`. With `drain`, both
/// are removed as they are taken, and put back when encoding fails or
/// panics.
pub fn encode_export(
    sources: Sources<'_>,
    drain: bool,
    include_open: bool,
    resource: &Resource,
    protocol: Protocol,
) -> Result<Encoded, EncodeError> {
    let take = Take {
        drain,
        include_open,
        settled_for: EXPLICIT_SETTLE,
    };
    let records = sources.take_records(take);
    let runs = sources.take_runs(take);
    let now = Stamp::now();
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        let prefix = sources.attribute_prefix();
        let limits = &resource.span_limits;
        let mut spans = runs_spans(&runs.ready, &prefix, now, limits);
        spans.extend(runs_spans(&runs.open, &prefix, now, limits));
        encode_request(&records.ready, &spans, resource, now, protocol)
    }));
    match encoded {
        Ok(Ok(body)) => Ok(Encoded {
            protocol,
            body,
            records,
            runs,
        }),
        Ok(Err(e)) => {
            sources.put_back(records, runs);
            Err(e)
        }
        Err(panic) => {
            sources.put_back(records, runs);
            resume_unwind(panic)
        }
    }
}

/// How a push ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// No finished trace or generic event (and no extra span) was waiting;
    /// nothing was sent.
    Nothing,
    /// Delivered: `records` traces and generic events (`spans` spans, extra
    /// spans included) left the store for good, in `requests` requests;
    /// `rejected_traces` of them the collector refused (400, or 413 at the
    /// smallest request size), which are not sent again.
    Sent {
        records: usize,
        rejected_traces: usize,
        spans: usize,
        /// The last response's status.
        status: u16,
        /// Attempts over all requests.
        attempts: u32,
        /// `collector rejected N span(s): <message>` when the collector
        /// reported rejected spans or refused a request (they are not
        /// retried), and what could not be read of an accepted response (a
        /// body over the limit).
        partial: Option<String>,
        /// Spans the collector reported rejected, or that requests it
        /// refused carried, over all requests.
        rejected_spans: u64,
        requests: usize,
        /// Spans that went alone in a request of their own, each over the
        /// request size limit (delivered or refused as any request is).
        oversized_spans: usize,
    },
    /// Not delivered: the `records` not delivered were put back into the
    /// store. When the export took several requests, `delivered` records
    /// went out in the requests before the one that failed (a record split
    /// across that boundary is put back whole and may arrive twice).
    Failed {
        records: usize,
        /// Traces that went out in the requests before the failed one, or
        /// that the collector refused for good in them (`rejected_traces`).
        delivered: usize,
        rejected_traces: usize,
        /// Lifecycle runs (the first ones) that went out whole in the
        /// requests that succeeded; the others are put back whole.
        runs_delivered: usize,
        /// Spans the requests that succeeded carried.
        delivered_spans: usize,
        /// Requests made, the failed one included.
        requests: usize,
        /// Spans the collector reported rejected, or refused, in the
        /// requests before the failed one.
        rejected_spans: u64,
        status: Option<u16>,
        attempts: u32,
        error: String,
    },
}

/// What one delivery covers: finished lifecycle runs and the store's
/// records, each oldest first. [`deliver`] leaves in it exactly what was not
/// delivered.
#[derive(Debug, Default)]
pub struct Batch {
    pub runs: Vec<Run>,
    pub records: Vec<(Key, Arc<Record>)>,
}

impl Batch {
    /// Runs and records in it (a run counts as one).
    pub fn len(&self) -> usize {
        self.runs.len() + self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drains the store's finished records and the tracer's runs finished (and
/// idle for `settled_for`), sends them, and puts back whatever was not
/// delivered, panics included. The outcome counts a run as one record
/// (`records`, `delivered`). Touches no foreign runtime: safe to run with
/// the Ruby GVL released. (The background exporter does not put back: it
/// keeps what failed in its own retry queue, see [`deliver`].)
pub fn push(
    sources: Sources<'_>,
    resource: &Resource,
    sending: Sending<'_>,
    cancel: &Cancel,
    settled_for: Duration,
) -> PushOutcome {
    let prefix = sources.attribute_prefix();
    let runs = sources.take_runs(Take::finished(settled_for)).ready;
    let records = sources.take_records(Take::finished(Duration::ZERO)).ready;
    let mut batch = Batch { runs, records };
    let outcome = deliver(&mut batch, &prefix, resource, sending, cancel);
    // Whatever is left was not delivered (or, after a panic, is not known
    // to have been: it may then arrive twice, never not at all).
    if !batch.runs.is_empty() {
        sources.put_back_runs(Taken {
            drained: true,
            ready: batch.runs,
            open: Vec::new(),
        });
    }
    if !batch.records.is_empty() {
        sources.store.put_back(batch.records);
    }
    outcome.unwrap_or_else(|panic| resume_unwind(panic))
}

/// Encodes and sends `batch` (its runs' spans first, with `prefix` on their
/// attribute keys) and removes from it what was delivered; what stays was
/// not. A panic is caught and returned once `batch` holds what is not known
/// to have been delivered. The outcome counts a run as one record.
pub fn deliver(
    batch: &mut Batch,
    prefix: &str,
    resource: &Resource,
    sending: Sending<'_>,
    cancel: &Cancel,
) -> std::thread::Result<PushOutcome> {
    if batch.is_empty() {
        return Ok(PushOutcome::Nothing);
    }
    let n = batch.runs.len();
    // How far delivery got, kept outside the unwinding region so that a
    // panic removes only what was delivered.
    let delivered_records = Cell::new(0usize);
    let delivered_runs = Cell::new(0usize);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let now = Stamp::now();
        let limits = &resource.span_limits;
        let runs: Vec<Vec<OwnedSpan>> = batch
            .runs
            .iter()
            .map(|run| run_spans(run, prefix, now, limits))
            .collect();
        send_records(
            &batch.records,
            &runs,
            resource,
            sending,
            cancel,
            now,
            Delivered {
                records: &delivered_records,
                runs: &delivered_runs,
            },
        )
    }));
    match result {
        Ok(mut outcome) => {
            match &mut outcome {
                PushOutcome::Sent { records, .. } => {
                    *records += n;
                    batch.runs.clear();
                    batch.records.clear();
                }
                PushOutcome::Failed {
                    records,
                    delivered,
                    runs_delivered,
                    ..
                } => {
                    batch.records.drain(..*delivered);
                    let sent = (*runs_delivered).min(n);
                    batch.runs.drain(..sent);
                    *delivered += sent;
                    *records += n - sent;
                }
                PushOutcome::Nothing => {}
            }
            Ok(outcome)
        }
        Err(panic) => {
            batch.records.drain(..delivered_records.get());
            batch.runs.drain(..delivered_runs.get().min(n));
            Err(panic)
        }
    }
}

/// How far delivery got: the records and the runs (the first ones) that
/// requests delivered, followed as each request succeeds.
struct Delivered<'a> {
    records: &'a Cell<usize>,
    runs: &'a Cell<usize>,
}

/// Encodes the `runs`' spans (each run's together) and `records` into
/// bodies and sends them one by one until one fails; `delivered` follows
/// how far delivery got.
fn send_records(
    records: &[(Key, Arc<Record>)],
    runs: &[Vec<OwnedSpan>],
    resource: &Resource,
    sending: Sending<'_>,
    cancel: &Cancel,
    now: Stamp,
    delivered: Delivered<'_>,
) -> PushOutcome {
    let failed = |error: String| PushOutcome::Failed {
        records: records.len(),
        delivered: 0,
        rejected_traces: 0,
        runs_delivered: 0,
        delivered_spans: 0,
        requests: 0,
        rejected_spans: 0,
        status: None,
        attempts: 0,
        error,
    };
    let transport = sending.transport();
    let target = transport.target();
    let mut enc = match Encoder::with_limit(target.protocol, resource, transport.request_limit()) {
        Ok(enc) => enc,
        Err(e) => return failed(format!("encoding failed: {e}")),
    };
    enc.reserve_spans(runs.iter().map(Vec::len).sum::<usize>() + records.len() * 2);
    let mut encoded = Ok(());
    for run in runs {
        encoded = encoded.and_then(|()| enc.group(run));
    }
    for (key, record) in records {
        encoded = encoded.and_then(|()| enc.record(key, record, now));
    }
    if let Err(e) = encoded {
        return failed(format!("encoding failed: {e}"));
    }
    let oversized_spans = enc.oversized();
    let bodies = enc.finish();
    let requests = bodies.len();
    // Where each body starts: what is known of the bodies once each is
    // handed to the transport.
    let first_records: Vec<usize> = bodies.iter().map(|b| b.first_record).collect();
    let first_runs: Vec<usize> = bodies.iter().map(|b| b.first_group).collect();
    let mut spans = 0usize;
    let mut attempts = 0u32;
    let mut rejected_spans = 0u64;
    let mut rejected_traces = 0usize;
    let mut messages: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut last_status = 0u16;
    for (i, body) in bodies.into_iter().enumerate() {
        let body_spans = body.spans;
        let body_len = body.bytes().len();
        let next_first = first_records.get(i + 1).copied().unwrap_or(records.len());
        let next_run = first_runs.get(i + 1).copied().unwrap_or(runs.len());
        match sending.send(body, cancel) {
            Delivery::Sent {
                status,
                attempts: a,
                partial,
                note,
            } => {
                notes.extend(note);
                attempts = attempts.saturating_add(a);
                last_status = status;
                spans += body_spans;
                if let Some(p) = partial.filter(|p| p.rejected_spans > 0) {
                    rejected_spans = rejected_spans.saturating_add(p.rejected_spans as u64);
                    messages.push(p.error_message);
                }
                delivered.records.set(next_first);
                delivered.runs.set(next_run);
            }
            Delivery::Failed {
                status,
                too_large,
                attempts: a,
                error,
            } => {
                attempts = attempts.saturating_add(a);
                let error = if requests > 1 {
                    format!("request {} of {requests}: {error}", i + 1)
                } else {
                    error
                };
                // The collector refused what this request carried for good
                // (a 400, or a 413 at the smallest request size: the
                // specification says neither is retried). It is dropped,
                // counted as rejected, and the next requests go on, so
                // that one bad trace never holds back the ones after it.
                // A request refused as too large (a 413, or the
                // Collector's 400 for a body over its limit) that can be
                // cut smaller keeps what it carried for the next attempt,
                // in smaller requests.
                let refused = match status {
                    _ if too_large => !transport.too_large(body_len),
                    Some(400) => true,
                    _ => false,
                };
                if refused {
                    last_status = status.unwrap_or(last_status);
                    rejected_spans = rejected_spans.saturating_add(body_spans as u64);
                    rejected_traces += next_first.saturating_sub(first_records[i])
                        + next_run.saturating_sub(first_runs[i]);
                    messages.push(format!("{error} ({body_spans} span(s), not sent again)"));
                    delivered.records.set(next_first);
                    delivered.runs.set(next_run);
                    continue;
                }
                let error = if too_large {
                    format!(
                        "{error}; what it carried goes again in requests of at most {} KiB",
                        transport.request_limit() >> 10
                    )
                } else {
                    error
                };
                let first_record = first_records[i];
                return PushOutcome::Failed {
                    records: records.len() - first_record,
                    delivered: first_record,
                    rejected_traces,
                    runs_delivered: first_runs[i],
                    delivered_spans: spans,
                    requests: i + 1,
                    rejected_spans,
                    status,
                    attempts,
                    error,
                };
            }
        }
    }
    PushOutcome::Sent {
        records: records.len(),
        rejected_traces,
        spans,
        status: last_status,
        attempts,
        partial: {
            let rejected = (rejected_spans > 0).then(|| {
                format!(
                    "collector rejected {rejected_spans} span(s): {}",
                    messages.join("; ")
                )
            });
            let all: Vec<String> = rejected.into_iter().chain(notes).collect();
            (!all.is_empty()).then(|| all.join("; "))
        },
        rejected_spans,
        requests,
        oversized_spans,
    }
}
