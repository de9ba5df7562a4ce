//! Spans and their OTLP encoding: what each record and run becomes, and the
//! request bodies in either wire format.
//!
//! - [`span`]: the span-writer interface ([`SpanView`], [`SpanWriter`]) and
//!   spans that do not come from the store ([`OwnedSpan`])
//! - [`record_spans`]: the store's records to spans
//! - [`run_spans`]: lifecycle runs to spans
//! - [`resource`]: what describes the process, its settings and defaults
//! - [`limits`]: OpenTelemetry's span limits, applied here, and what they cut
//! - `payload` (private): reading packed payloads as OTLP values
//! - [`json`], [`protobuf`]: one encoder per wire format
//! - [`request`]: request bodies, split where one would pass 16 MiB
//! - [`waterfall`]: a run drawn as text (the console exporter, `bin/demo`)

pub mod json;
pub mod limits;
mod payload;
pub mod protobuf;
pub mod record_spans;
pub mod request;
pub mod resource;
pub mod run_spans;
pub mod span;
pub mod waterfall;

pub use limits::SpanLimits;
pub use payload::{error_message, render_text, str_text, PayloadAttributes, ATTRIBUTE_PREFIX};
pub use record_spans::{child_span_id, pair_spans, Pair, Pairing};
pub use request::{encode_request, Body, Encoder};
pub use resource::{Resource, ResourceConfig, ResourceSettings, SCOPE_NAME};
pub use span::{
    AttributeValue, EncodeError, KeyValue, OwnedEvent, OwnedSpan, SpanLink, SpanView, SpanWriter,
    SPAN_KIND_INTERNAL, STATUS_CODE_ERROR, STATUS_CODE_OK, STATUS_CODE_UNSET,
};
