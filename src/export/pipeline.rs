//! The export path: records selected (or drained) from the store, encoded,
//! sent, and put back when delivery fails.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::encode::{encode_request, EncodeError, Encoder, OwnedSpan, Resource};
use crate::model::backend::store::{Backend, Key, Record};
use crate::transport::{Cancel, Delivery, Protocol, Transport};

/// The partial success a collector reported in a 2xx response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialSuccess {
    /// Spans the collector rejected (0 with a message: a warning).
    pub rejected_spans: i64,
    pub error_message: String,
}

/// The records an export covers, in store order: finished traces and generic
/// events, and open traces too with `include_open`. With `drain` they are
/// removed from the store atomically (one step under its lock); without, the
/// store is left as it was.
pub fn select(backend: &Backend, drain: bool, include_open: bool) -> Vec<(Key, Arc<Record>)> {
    if drain {
        backend.drain(include_open)
    } else {
        let mut entries = backend.snapshot().entries;
        if !include_open {
            entries.retain(|(_, rec)| rec.is_complete());
        }
        entries
    }
}

/// Number of spans `records` encode to (roots, children and generic spans).
pub fn span_count(records: &[(Key, Arc<Record>)]) -> usize {
    records
        .iter()
        .map(|(_, rec)| crate::encode::record_spans::record_span_count(rec))
        .sum()
}

/// An export: the records it covers and their encoding (one request body in
/// `protocol`, however large).
pub struct Export {
    pub records: Vec<(Key, Arc<Record>)>,
    pub protocol: Protocol,
    pub body: Vec<u8>,
}

/// Selects (and with `drain`, removes) records and encodes them. When
/// encoding fails or panics after a drain, the records are put back before
/// the error or the panic goes on, so nothing is lost.
pub fn export(
    backend: &Backend,
    drain: bool,
    include_open: bool,
    resource: &Resource,
    protocol: Protocol,
) -> Result<Export, EncodeError> {
    let records = select(backend, drain, include_open);
    let now = crate::support::clock::Stamp::now();
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        encode_request(&records, &[], resource, now, protocol)
    }));
    match encoded {
        Ok(Ok(body)) => Ok(Export {
            records,
            protocol,
            body,
        }),
        Ok(Err(e)) => {
            if drain {
                backend.restore(records);
            }
            Err(e)
        }
        Err(panic) => {
            if drain {
                backend.restore(records);
            }
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
    /// spans included) left the store for good, in `requests` requests.
    Sent {
        records: usize,
        spans: usize,
        /// The last response's status.
        status: u16,
        /// Attempts over all requests.
        attempts: u32,
        /// `collector rejected N span(s): <message>` when the collector
        /// reported rejected spans (they are not retried).
        partial: Option<String>,
        /// Spans the collector reported rejected, over all requests.
        rejected_spans: u64,
        requests: usize,
        /// Spans left out because one alone would pass the request size
        /// limit (their records count as delivered).
        oversized_spans: usize,
    },
    /// Not delivered: the `records` not delivered were put back into the
    /// store. When the export took several requests, `delivered` records
    /// went out in the requests before the one that failed (a record split
    /// across that boundary is put back whole and may arrive twice).
    Failed {
        records: usize,
        delivered: usize,
        /// Whether the extra spans went out (in the requests that succeeded).
        extra_delivered: bool,
        /// Spans the collector reported rejected in the requests that
        /// succeeded.
        rejected_spans: u64,
        status: Option<u16>,
        attempts: u32,
        error: String,
    },
}

/// Drains the finished traces and generic events, sends them through
/// `transport`, and puts them back into the store when delivery fails (or
/// panics), so nothing is lost. Touches no foreign runtime: safe to run with
/// the Ruby GVL released.
pub fn push_finished(
    backend: &Backend,
    resource: &Resource,
    transport: &Transport,
    cancel: &Cancel,
) -> PushOutcome {
    push_finished_with(backend, resource, transport, cancel, &[])
}

/// [`push_finished`] with `extra` spans (from outside the store) sent in the
/// same request(s), before the records. The caller keeps the extra spans:
/// they are delivered when the outcome is `Sent`, or `Failed` with
/// `extra_delivered`.
pub fn push_finished_with(
    backend: &Backend,
    resource: &Resource,
    transport: &Transport,
    cancel: &Cancel,
    extra: &[OwnedSpan],
) -> PushOutcome {
    let records = backend.drain(false);
    if records.is_empty() && extra.is_empty() {
        return PushOutcome::Nothing;
    }
    let now = crate::support::clock::Stamp::now();
    // How far delivery got, kept outside the unwinding region so that a
    // panic puts back only what was not delivered.
    let delivered_records = Cell::new(0usize);
    let result = catch_unwind(AssertUnwindSafe(|| {
        send_records(
            &records,
            extra,
            resource,
            transport,
            cancel,
            now,
            &delivered_records,
        )
    }));
    let mut records = records;
    match result {
        Ok(outcome) => {
            if let PushOutcome::Failed { delivered, .. } = &outcome {
                backend.restore(records.split_off(*delivered));
            }
            outcome
        }
        Err(panic) => {
            backend.restore(records.split_off(delivered_records.get()));
            resume_unwind(panic)
        }
    }
}

fn send_records(
    records: &[(Key, Arc<Record>)],
    extra: &[OwnedSpan],
    resource: &Resource,
    transport: &Transport,
    cancel: &Cancel,
    now: crate::support::clock::Stamp,
    delivered_records: &Cell<usize>,
) -> PushOutcome {
    let failed = |error: String| PushOutcome::Failed {
        records: records.len(),
        delivered: 0,
        extra_delivered: false,
        rejected_spans: 0,
        status: None,
        attempts: 0,
        error,
    };
    let target = transport.target();
    let mut enc = match Encoder::with_limit(target.protocol, resource, transport.request_limit()) {
        Ok(enc) => enc,
        Err(e) => return failed(format!("encoding failed: {e}")),
    };
    enc.reserve_spans(extra.len() + records.len() * 2);
    let mut encoded = Ok(());
    for span in extra {
        encoded = encoded.and_then(|()| enc.span(&span.view()));
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
    // Where each body starts, and the last body with extra spans: what is
    // known of the bodies once each is handed to the transport.
    let first_records: Vec<usize> = bodies.iter().map(|b| b.first_record).collect();
    let last_with_extra = bodies.iter().rposition(|b| b.has_extra);
    let mut spans = 0usize;
    let mut attempts = 0u32;
    let mut rejected_spans = 0u64;
    let mut messages: Vec<String> = Vec::new();
    let mut last_status = 0u16;
    for (i, body) in bodies.into_iter().enumerate() {
        let body_spans = body.spans;
        match transport.send(body, cancel) {
            Delivery::Sent {
                status,
                attempts: a,
                partial,
            } => {
                attempts = attempts.saturating_add(a);
                last_status = status;
                spans += body_spans;
                if let Some(p) = partial.filter(|p| p.rejected_spans > 0) {
                    rejected_spans = rejected_spans.saturating_add(p.rejected_spans as u64);
                    messages.push(p.error_message);
                }
                let next_first = first_records.get(i + 1).copied().unwrap_or(records.len());
                delivered_records.set(next_first);
            }
            Delivery::Failed {
                status,
                attempts: a,
                error,
            } => {
                let error = if requests > 1 {
                    format!("request {} of {requests}: {error}", i + 1)
                } else {
                    error
                };
                let first_record = first_records[i];
                return PushOutcome::Failed {
                    records: records.len() - first_record,
                    delivered: first_record,
                    extra_delivered: !extra.is_empty() && last_with_extra.is_none_or(|l| l < i),
                    rejected_spans,
                    status,
                    attempts: attempts.saturating_add(a),
                    error,
                };
            }
        }
    }
    PushOutcome::Sent {
        records: records.len(),
        spans,
        status: last_status,
        attempts,
        partial: (rejected_spans > 0).then(|| {
            format!(
                "collector rejected {rejected_spans} span(s): {}",
                messages.join("; ")
            )
        }),
        rejected_spans,
        requests,
        oversized_spans,
    }
}
