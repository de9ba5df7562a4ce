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

use super::limits::{cut_text, kept, Limit, SpanLimits};
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
    /// Events and links left out by the span limits.
    pub dropped_events: u32,
    pub dropped_links: u32,
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
    /// Typed values, written as given (keys should be unique), and how
    /// many were left out.
    Owned(&'a [KeyValue], u32),
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
            Events::Root(r) => r.total().min(r.limits.span_event_count) == 0,
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
    /// The span limits: the first `span_event_count` events are written,
    /// each with its attributes limited.
    pub(crate) limits: SpanLimits,
}

impl<'a> RootEvents<'a> {
    /// Events before the event count limit.
    pub(crate) fn total(&self) -> usize {
        self.unpaired.len() + usize::from(self.failure().is_some())
    }

    fn failure(&self) -> Option<&'a Finish> {
        self.trace
            .finish
            .as_ref()
            .filter(|f| f.status == crate::input::backend::routing::Status::Error)
    }

    fn iter(self) -> impl Iterator<Item = EventView<'a>> + 'a {
        let t = self.trace;
        let limits = self.limits;
        let event = move |at, name: &'a [u8], payload: &'a Packed| EventView {
            time_unix_nano: unix_nanos(t.start, at),
            name,
            attributes: Attributes::Payload(PayloadAttributes::span(None, payload).limited(
                limits.event_attributes(),
                limits.value_length(),
                Limit::EventAttributes,
            )),
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
            .take(limits.span_event_count)
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
    /// Attributes left out by the span limits.
    pub dropped_attributes_count: u32,
}

impl OwnedEvent {
    pub fn view(&self) -> EventView<'_> {
        EventView {
            time_unix_nano: self.time_unix_nano,
            name: self.name.as_bytes(),
            attributes: Attributes::Owned(&self.attributes, self.dropped_attributes_count),
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
    /// What the span limits left out (see [`crate::encode::limits`]).
    pub dropped_attributes_count: u32,
    pub dropped_events_count: u32,
    pub dropped_links_count: u32,
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
            attributes: Attributes::Owned(&self.attributes, self.dropped_attributes_count),
            events: Events::Owned(&self.events),
            links: &self.links,
            status: self.status.as_ref().map(|(code, message)| StatusView {
                code: *code,
                message: Some(Cow::Borrowed(message.as_str())),
            }),
            dropped_events: self.dropped_events_count,
            dropped_links: self.dropped_links_count,
        }
    }
}

// ---------------------------------------------------------------------------
// The span limits on owned spans.

fn cut_owned_value(v: &mut AttributeValue, limit: usize) {
    match v {
        AttributeValue::String(s) => {
            let cut = cut_text(s.as_bytes(), limit).len();
            // `cut_text` cuts at a character boundary.
            s.truncate(cut);
        }
        AttributeValue::Array(items) => items.iter_mut().for_each(|i| cut_owned_value(i, limit)),
        AttributeValue::KvList(pairs) => pairs
            .iter_mut()
            .for_each(|kv| cut_owned_value(&mut kv.value, limit)),
        AttributeValue::Int(_) | AttributeValue::Double(_) | AttributeValue::Bool(_) => {}
    }
}

/// Applies the count limit `max` (counted as `limit`) and the value length
/// limit to an owned attribute list; returns how many were left out.
fn limit_owned_attributes(
    attributes: &mut Vec<KeyValue>,
    max: usize,
    limit: Limit,
    limits: &SpanLimits,
) -> u32 {
    let keep = kept(attributes.len(), max, limit);
    let dropped = attributes.len() - keep;
    attributes.truncate(keep);
    if let Some(length) = limits.attribute_value_length {
        attributes
            .iter_mut()
            .for_each(|kv| cut_owned_value(&mut kv.value, length));
    }
    u32::try_from(dropped).unwrap_or(u32::MAX)
}

/// Applies every span limit (see [`super::limits`]) to a span built outside the store (a lifecycle
/// run's), adding what it leaves out to the span's `dropped_*` counts.
pub fn limit_owned_span(span: &mut OwnedSpan, limits: &SpanLimits) {
    let dropped = limit_owned_attributes(
        &mut span.attributes,
        limits.span_attributes(),
        Limit::SpanAttributes,
        limits,
    );
    span.dropped_attributes_count = span.dropped_attributes_count.saturating_add(dropped);
    let keep = kept(
        span.events.len(),
        limits.span_event_count,
        Limit::SpanEvents,
    );
    let dropped = u32::try_from(span.events.len() - keep).unwrap_or(u32::MAX);
    span.events.truncate(keep);
    span.dropped_events_count = span.dropped_events_count.saturating_add(dropped);
    for event in &mut span.events {
        let dropped = limit_owned_attributes(
            &mut event.attributes,
            limits.event_attributes(),
            Limit::EventAttributes,
            limits,
        );
        event.dropped_attributes_count = event.dropped_attributes_count.saturating_add(dropped);
    }
    let keep = kept(span.links.len(), limits.span_link_count, Limit::SpanLinks);
    let dropped = u32::try_from(span.links.len() - keep).unwrap_or(u32::MAX);
    span.links.truncate(keep);
    span.dropped_links_count = span.dropped_links_count.saturating_add(dropped);
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

    #[test]
    fn an_owned_span_keeps_the_first_of_each_and_counts_the_rest() {
        let kv = |k: &str, v: &str| KeyValue::new(k, AttributeValue::String(v.into()));
        let mut span = OwnedSpan {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name: "s".into(),
            kind: 1,
            start_time_unix_nano: 0,
            end_time_unix_nano: 0,
            attributes: vec![kv("a", "long value"), kv("b", "x"), kv("c", "y")],
            events: (0..3)
                .map(|i| OwnedEvent {
                    time_unix_nano: i,
                    name: format!("e{i}"),
                    attributes: vec![kv("x", "1"), kv("y", "2")],
                    dropped_attributes_count: 0,
                })
                .collect(),
            links: vec![SpanLink {
                trace_id: [3; 16],
                span_id: [4; 8],
            }],
            status: None,
            dropped_attributes_count: 0,
            dropped_events_count: 0,
            dropped_links_count: 0,
        };
        let limits = SpanLimits {
            attribute_value_length: Some(4),
            span_attribute_count: Some(2),
            span_event_count: 2,
            span_link_count: 0,
            event_attribute_count: Some(1),
            ..SpanLimits::DEFAULT
        };
        limit_owned_span(&mut span, &limits);
        assert_eq!(span.attributes, vec![kv("a", "long"), kv("b", "x")]);
        assert_eq!(span.dropped_attributes_count, 1);
        assert_eq!(span.events.len(), 2);
        assert_eq!(span.dropped_events_count, 1);
        assert!(span
            .events
            .iter()
            .all(|e| e.attributes == vec![kv("x", "1")] && e.dropped_attributes_count == 1));
        assert!(span.links.is_empty());
        assert_eq!(span.dropped_links_count, 1);
    }
}
