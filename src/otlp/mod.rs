//! OpenTelemetry export: records to OTLP/HTTP JSON, and delivery to a
//! collector.
//!
//! - [`encode`]: the `ExportTraceServiceRequest` JSON encoder and the mapping
//!   (attribute values are streamed from the packed payloads by `attributes`)
//! - [`push`]: the blocking HTTP client with retries, backoff and `Retry-After`
//! - [`env`]: endpoint, headers and resource defaults from `OTEL_*` values
//!
//! [`select`] picks what an export covers; with `drain` it removes it from the
//! store in the same step, so each record is exported exactly once.

mod attributes;
pub mod encode;
pub mod env;
pub mod push;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

pub use encode::{encode_request, Resource, SCOPE_NAME};
pub use push::{post, Cancel, Delivery, Target};

use crate::backend::store::{Backend, Key, Record};

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
        .map(|(_, rec)| match &**rec {
            Record::Trace(t) => 1 + encode::pair_spans(&t.spans).pairs.len(),
            Record::Generic(_) => 1,
        })
        .sum()
}

/// An export: the records it covers and their encoding.
pub struct Export {
    pub records: Vec<(Key, Arc<Record>)>,
    pub json: Vec<u8>,
}

/// Selects (and with `drain`, removes) records and encodes them. When
/// encoding fails or panics after a drain, the records are put back before
/// the error or the panic goes on, so nothing is lost.
pub fn export(
    backend: &Backend,
    drain: bool,
    include_open: bool,
    resource: &Resource,
) -> Result<Export, serde_json::Error> {
    let records = select(backend, drain, include_open);
    let now = crate::clock::Stamp::now();
    let encoded = catch_unwind(AssertUnwindSafe(|| encode_request(&records, resource, now)));
    match encoded {
        Ok(Ok(json)) => Ok(Export { records, json }),
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
    /// No finished trace or generic event was waiting; nothing was sent.
    Nothing,
    /// Delivered: `records` traces and generic events (`spans` spans) left the
    /// store for good.
    Sent {
        records: usize,
        spans: usize,
        status: u16,
        attempts: u32,
        /// A partial success reported by the collector.
        partial: Option<String>,
    },
    /// Not delivered: the `records` drained were put back into the store.
    Failed {
        records: usize,
        status: Option<u16>,
        attempts: u32,
        error: String,
    },
}

/// Drains the finished traces and generic events, sends them to `target`, and
/// puts them back into the store when delivery fails (or panics), so nothing
/// is lost. Touches no foreign runtime: safe to run with the Ruby GVL released.
pub fn push_finished(
    backend: &Backend,
    resource: &Resource,
    target: &Target,
    cancel: &Cancel,
) -> PushOutcome {
    let records = backend.drain(false);
    if records.is_empty() {
        return PushOutcome::Nothing;
    }
    let now = crate::clock::Stamp::now();
    let delivered = catch_unwind(AssertUnwindSafe(|| {
        let spans = span_count(&records);
        match encode_request(&records, resource, now) {
            Ok(json) => (spans, post(&json, target, cancel)),
            Err(e) => (
                spans,
                Delivery::Failed {
                    status: None,
                    attempts: 0,
                    error: format!("encoding failed: {e}"),
                },
            ),
        }
    }));
    let count = records.len();
    match delivered {
        Ok((
            spans,
            Delivery::Sent {
                status,
                attempts,
                partial,
            },
        )) => {
            drop(records);
            PushOutcome::Sent {
                records: count,
                spans,
                status,
                attempts,
                partial,
            }
        }
        Ok((
            _,
            Delivery::Failed {
                status,
                attempts,
                error,
            },
        )) => {
            backend.restore(records);
            PushOutcome::Failed {
                records: count,
                status,
                attempts,
                error,
            }
        }
        Err(panic) => {
            backend.restore(records);
            resume_unwind(panic)
        }
    }
}
