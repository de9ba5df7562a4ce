//! The span-writer interface: what one span says, independent of the wire
//! format.
//!
//! The mapping (`mapping`) describes each span of the store's records as a
//! [`SpanView`] and hands it to a [`SpanWriter`]; each wire format (`json`,
//! `protobuf`) implements [`SpanWriter`]. Spans that do not come from the
//! store ([`OwnedSpan`], e.g. from a lifecycle tracer) describe themselves
//! with [`OwnedSpan::view`] and go through the same writers, so they can share
//! a request with the store's records (see [`crate::encode::Encoder`]).

use std::borrow::Cow;

use super::payload::PayloadAttributes;
use crate::model::backend::store::{Finish, TraceRecord};
use crate::support::clock::Stamp;
use crate::value::Packed;

/// `SPAN_KIND_INTERNAL`.
pub const SPAN_KIND_INTERNAL: i32 = 1;
/// `STATUS_CODE_UNSET`.
pub const STATUS_CODE_UNSET: i32 = 0;
/// `STATUS_CODE_OK`.
pub const STATUS_CODE_OK: i32 = 1;
/// `STATUS_CODE_ERROR`.
pub const STATUS_CODE_ERROR: i32 = 2;

/// Writes spans in one wire format.
pub trait SpanWriter {
    /// Appends one span.
    fn write_span(&mut self, span: &SpanView<'_>) -> Result<(), EncodeError>;
}

/// An encoding failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl From<serde_json::Error> for EncodeError {
    fn from(e: serde_json::Error) -> Self {
        EncodeError(e.to_string())
    }
}

/// One span, borrowed from wherever it lives. Text given as bytes is made
/// valid UTF-8 when written (invalid sequences become U+FFFD).
#[derive(Clone)]
pub struct SpanView<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    pub name: &'a [u8],
    /// A `SPAN_KIND_*` value.
    pub kind: i32,
    pub start_time_unix_nano: u64,
    /// Written as at least the start.
    pub end_time_unix_nano: u64,
    pub attributes: Attributes<'a>,
    pub events: Events<'a>,
    pub links: &'a [SpanLink],
    /// `None` leaves the status out (UNSET).
    pub status: Option<StatusView<'a>>,
}

/// A span's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusView<'a> {
    /// A `STATUS_CODE_*` value.
    pub code: i32,
    /// Left out when `None` or empty.
    pub message: Option<Cow<'a, str>>,
}

/// Where an attribute list comes from.
#[derive(Clone, Copy)]
pub enum Attributes<'a> {
    /// Streamed from packed payloads (the store's records).
    Payload(PayloadAttributes<'a>),
    /// Typed values, written as given (keys should be unique).
    Owned(&'a [KeyValue]),
}

/// Nanoseconds since the epoch of `at`, measured from `anchor` on the monotonic
/// clock, so that every time in a trace is consistent with its durations.
pub(crate) fn unix_nanos(anchor: Stamp, at: Stamp) -> u64 {
    let offset = i128::from(at.mono_ns) - i128::from(anchor.mono_ns);
    let t = i128::from(anchor.wall_ns) + offset;
    t.clamp(0, i128::from(u64::MAX)) as u64
}

pub(crate) fn wall_nanos(at: Stamp) -> u64 {
    u64::try_from(at.wall_ns).unwrap_or(0)
}

/// A span's events.
#[derive(Clone, Copy)]
pub enum Events<'a> {
    None,
    /// A trace's root span: its unpaired span events, then the finish event
    /// of a failed trace.
    Root(RootEvents<'a>),
    Owned(&'a [OwnedEvent]),
}

/// One span event.
#[derive(Clone, Copy)]
pub struct EventView<'a> {
    pub time_unix_nano: u64,
    pub name: &'a [u8],
    pub attributes: Attributes<'a>,
}

impl<'a> Events<'a> {
    /// The events in order.
    pub fn iter(&self) -> impl Iterator<Item = EventView<'a>> + 'a {
        let (root, owned): (Option<RootEvents<'a>>, &'a [OwnedEvent]) = match *self {
            Events::None => (None, &[]),
            Events::Root(r) => (Some(r), &[]),
            Events::Owned(o) => (None, o),
        };
        root.into_iter()
            .flat_map(RootEvents::iter)
            .chain(owned.iter().map(OwnedEvent::view))
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Events::None => true,
            Events::Root(r) => r.unpaired.is_empty() && r.failure().is_none(),
            Events::Owned(o) => o.is_empty(),
        }
    }
}

/// The root span's events: unpaired span events, then the finish event of a
/// failed trace (its payload holds the error's details; a successful finish
/// adds nothing the span does not already say).
#[derive(Clone, Copy)]
pub struct RootEvents<'a> {
    pub(crate) trace: &'a TraceRecord,
    pub(crate) unpaired: &'a [usize],
}

impl<'a> RootEvents<'a> {
    fn failure(&self) -> Option<&'a Finish> {
        self.trace
            .finish
            .as_ref()
            .filter(|f| f.status == crate::input::backend::routing::Status::Error)
    }

    fn iter(self) -> impl Iterator<Item = EventView<'a>> + 'a {
        let t = self.trace;
        let event = move |at, name: &'a [u8], payload: &'a Packed| EventView {
            time_unix_nano: unix_nanos(t.start, at),
            name,
            attributes: Attributes::Payload(PayloadAttributes::span(None, payload)),
        };
        let start = wall_nanos(t.start);
        self.unpaired
            .iter()
            .map(move |&i| {
                let ev = &t.spans[i];
                event(ev.at, ev.event_name.bytes(), &ev.payload)
            })
            .chain(self.failure().map(move |f| {
                let mut e = event(f.at, f.event_name.bytes(), &f.payload);
                e.time_unix_nano = e.time_unix_nano.max(start);
                e
            }))
    }
}

// ---------------------------------------------------------------------------
// Owned spans: spans that do not come from the store.

/// A typed attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    String(String),
    Int(i64),
    /// NaN and ±Infinity travel as the strings `NaN`, `Infinity`,
    /// `-Infinity`, as payload floats do (OTLP JSON cannot carry them).
    Double(f64),
    Bool(bool),
    Array(Vec<AttributeValue>),
    /// A `kvlistValue`: keys as given, in order.
    KvList(Vec<KeyValue>),
}

/// One attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: AttributeValue,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: AttributeValue) -> Self {
        KeyValue {
            key: key.into(),
            value,
        }
    }
}

/// An event of an [`OwnedSpan`].
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedEvent {
    pub time_unix_nano: u64,
    pub name: String,
    pub attributes: Vec<KeyValue>,
}

impl OwnedEvent {
    pub fn view(&self) -> EventView<'_> {
        EventView {
            time_unix_nano: self.time_unix_nano,
            name: self.name.as_bytes(),
            attributes: Attributes::Owned(&self.attributes),
        }
    }
}

/// A link to another span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanLink {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// A span built outside the store (a lifecycle tracer's, for instance).
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    /// A `SPAN_KIND_*` value; [`SPAN_KIND_INTERNAL`] for tracer spans.
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<KeyValue>,
    pub events: Vec<OwnedEvent>,
    pub links: Vec<SpanLink>,
    /// A `STATUS_CODE_*` value and a message; `None` leaves the status UNSET.
    pub status: Option<(i32, String)>,
}

impl OwnedSpan {
    /// The span as the writers take it.
    pub fn view(&self) -> SpanView<'_> {
        SpanView {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            name: self.name.as_bytes(),
            kind: self.kind,
            start_time_unix_nano: self.start_time_unix_nano,
            end_time_unix_nano: self.end_time_unix_nano,
            attributes: Attributes::Owned(&self.attributes),
            events: Events::Owned(&self.events),
            links: &self.links,
            status: self.status.as_ref().map(|(code, message)| StatusView {
                code: *code,
                message: Some(Cow::Borrowed(message.as_str())),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_nanos_follow_the_monotonic_offset_and_clamp() {
        let anchor = Stamp {
            wall_ns: 1_000,
            mono_ns: 500,
        };
        let later = Stamp {
            wall_ns: 0,
            mono_ns: 800,
        };
        assert_eq!(unix_nanos(anchor, later), 1_300);
        let start = Stamp {
            wall_ns: 100,
            mono_ns: 1_000,
        };
        let before_epoch = Stamp {
            wall_ns: 0,
            mono_ns: 0,
        };
        assert_eq!(unix_nanos(start, before_epoch), 0);
    }
}
