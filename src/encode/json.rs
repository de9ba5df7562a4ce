//! The OTLP/HTTP JSON encoder (`Content-Type: application/json`).
//!
//! Written with serde_json straight from [`SpanView`]s: no value trees, no
//! intermediate JSON document. It follows the OTLP JSON rules: lowerCamelCase
//! keys, trace and span ids as lowercase hex, 64-bit integers as decimal
//! strings, enums as integers, bytes as standard base64.
//!
//! Also decodes the JSON `ExportTraceServiceResponse` (partial success) and
//! the message of a JSON `google.rpc.Status` error body.

use std::cell::RefCell;

use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use super::payload::{AnyItem, AttributeEntries, EntryValue, Lossy, PayloadAttributes, SeenKeys};
use super::resource::{Resource, SCOPE_NAME};
use super::span::{
    AttributeValue, Attributes, EncodeError, EventView, KeyValue, SpanLink, SpanView, StatusView,
};
use crate::value::Packed;

/// The request around the spans: `{"resourceSpans":[{"resource":…,
/// "scopeSpans":[{"scope":…,"spans":[` … `]}]}]}`.
pub(crate) struct Frame {
    head: Vec<u8>,
}

const TAIL: &[u8] = b"]}]}]}";

impl Frame {
    pub fn new(resource: &Resource) -> Result<Frame, EncodeError> {
        let mut head = Vec::with_capacity(512);
        head.extend_from_slice(b"{\"resourceSpans\":[{\"resource\":");
        let packed = resource.packed_attributes();
        serde_json::to_writer(&mut head, &ResourceJson(&packed))?;
        head.extend_from_slice(b",\"scopeSpans\":[{\"scope\":");
        serde_json::to_writer(&mut head, &Scope(&resource.version))?;
        head.extend_from_slice(b",\"spans\":[");
        Ok(Frame { head })
    }

    /// Starts a body: the bytes before the first span.
    pub fn start(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.head);
    }

    /// Bytes a span adds before its own (a comma after the first).
    pub fn separator(first: bool) -> usize {
        usize::from(!first)
    }

    /// Appends one span.
    pub fn write_span(
        buf: &mut Vec<u8>,
        first: bool,
        span: &SpanView<'_>,
    ) -> Result<(), EncodeError> {
        if !first {
            buf.push(b',');
        }
        serde_json::to_writer(&mut *buf, &SpanJson(span))?;
        Ok(())
    }

    /// The body's length once finished.
    pub fn finished_len(buf_len: usize) -> usize {
        buf_len + TAIL.len()
    }

    /// Ends the body; it starts at offset 0.
    pub fn finish(buf: &mut Vec<u8>) -> usize {
        buf.extend_from_slice(TAIL);
        0
    }
}

// ---------------------------------------------------------------------------
// Small writers.

/// Trace and span ids as lowercase hex (ids are at most 16 bytes).
pub(crate) struct Hex<'a>(pub &'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 32];
        let bytes = &self.0[..self.0.len().min(16)];
        for (i, b) in bytes.iter().enumerate() {
            buf[2 * i] = DIGITS[(b >> 4) as usize];
            buf[2 * i + 1] = DIGITS[(b & 15) as usize];
        }
        s.serialize_str(std::str::from_utf8(&buf[..bytes.len() * 2]).unwrap_or_default())
    }
}

/// A 64-bit integer as a JSON string of its decimal digits.
pub(crate) enum Decimal {
    Signed(i64),
    Unsigned(u64),
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 20];
        let len = match *self {
            Decimal::Signed(n) => crate::support::digits::write_i64(&mut buf, n),
            Decimal::Unsigned(n) => crate::support::digits::write_u64(&mut buf, n),
        };
        s.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or_default())
    }
}

/// Bytes as a JSON string, made valid UTF-8.
struct Text<'a>(&'a [u8]);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match Lossy(self.0).as_str() {
            Some(text) => s.serialize_str(text),
            None => s.collect_str(&Lossy(self.0)),
        }
    }
}

/// `<prefix><key>`, written without building the string when it is short.
struct Prefixed<'a>(&'static str, &'a [u8]);

impl Serialize for Prefixed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            return Text(self.1).serialize(s);
        }
        // Short keys (nearly all) are joined on the stack and written at once.
        let mut buf = [0u8; 96];
        let (prefix, key) = (self.0.as_bytes(), self.1);
        let len = prefix.len() + key.len();
        if len <= buf.len() {
            buf[..prefix.len()].copy_from_slice(prefix);
            buf[prefix.len()..len].copy_from_slice(key);
            return Text(&buf[..len]).serialize(s);
        }
        let mut joined = Vec::with_capacity(len);
        joined.extend_from_slice(prefix);
        joined.extend_from_slice(key);
        Text(&joined).serialize(s)
    }
}

struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
    }
}

fn single<S: Serializer, T: Serialize + ?Sized>(
    s: S,
    key: &'static str,
    v: &T,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry(key, v)?;
    m.end()
}

/// A scalar AnyValue (containers are written by their callers).
fn scalar<S: Serializer>(s: S, item: AnyItem<'_>) -> Result<S::Ok, S::Error> {
    match item {
        AnyItem::Empty | AnyItem::Array(_) | AnyItem::KvList(_) => s.serialize_map(Some(0))?.end(),
        AnyItem::Bool(b) => single(s, "boolValue", &b),
        AnyItem::Int(i) => single(s, "intValue", &Decimal::Signed(i)),
        AnyItem::Double(f) => single(s, "doubleValue", &f),
        AnyItem::Text(t) => single(s, "stringValue", &Text(t)),
        AnyItem::Bytes(b) => single(s, "bytesValue", &Base64(b)),
    }
}

/// `{"values": …}`, the body of an ArrayValue or a KeyValueList.
struct Values<T>(T);

impl<T: Serialize> Serialize for Values<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        single(s, "values", &self.0)
    }
}

// ---------------------------------------------------------------------------
// Values streamed from payloads.

/// The next value of an attribute list's reader as an AnyValue. `depth`
/// counts the containers above it.
struct Streamed<'r, 'a> {
    entries: &'r RefCell<AttributeEntries<'a>>,
    depth: usize,
}

impl<'a> Streamed<'_, 'a> {
    fn read(&self) -> AnyItem<'a> {
        let mut e = self.entries.borrow_mut();
        match e.reader() {
            Some(r) => r.value(self.depth),
            None => AnyItem::Empty,
        }
    }
}

impl Serialize for Streamed<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.read() {
            AnyItem::Array(n) => single(
                s,
                "arrayValue",
                &Values(StreamedItems {
                    entries: self.entries,
                    n,
                    depth: self.depth + 1,
                }),
            ),
            AnyItem::KvList(n) => single(
                s,
                "kvlistValue",
                &Values(StreamedPairs {
                    entries: self.entries,
                    n,
                    depth: self.depth + 1,
                }),
            ),
            item => scalar(s, item),
        }
    }
}

struct StreamedItems<'r, 'a> {
    entries: &'r RefCell<AttributeEntries<'a>>,
    n: u32,
    depth: usize,
}

impl Serialize for StreamedItems<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.n as usize))?;
        for _ in 0..self.n {
            seq.serialize_element(&Streamed {
                entries: self.entries,
                depth: self.depth,
            })?;
        }
        seq.end()
    }
}

/// The pairs of a nested Hash as KeyValues (keys as they are, first wins).
struct StreamedPairs<'r, 'a> {
    entries: &'r RefCell<AttributeEntries<'a>>,
    n: u32,
    depth: usize,
}

impl Serialize for StreamedPairs<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut seen = SeenKeys::default();
        let mut left = self.n;
        let mut dropped = 0;
        loop {
            let key = {
                let mut e = self.entries.borrow_mut();
                match e.reader() {
                    Some(r) => r.unique_key(&mut left, &mut seen, &mut dropped),
                    None => None,
                }
            };
            let Some(key) = key else { break };
            seq.serialize_element(&KeyValueJson {
                prefix: "",
                key: key.bytes(),
                value: ValueJson::Streamed(Streamed {
                    entries: self.entries,
                    depth: self.depth,
                }),
            })?;
        }
        seq.end()
    }
}

enum ValueJson<'r, 'a> {
    Streamed(Streamed<'r, 'a>),
    Item(AnyItem<'a>),
    Owned(&'a AttributeValue),
}

/// One KeyValue: `{"key": prefix + key, "value": AnyValue}`.
struct KeyValueJson<'k, 'r, 'a> {
    prefix: &'static str,
    key: &'k [u8],
    value: ValueJson<'r, 'a>,
}

impl Serialize for KeyValueJson<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("KeyValue", 2)?;
        m.serialize_field("key", &Prefixed(self.prefix, self.key))?;
        match &self.value {
            ValueJson::Streamed(v) => m.serialize_field("value", v)?,
            ValueJson::Item(item) => m.serialize_field("value", &ItemValue(*item))?,
            ValueJson::Owned(v) => m.serialize_field("value", &OwnedValueJson(v))?,
        }
        m.end()
    }
}

struct ItemValue<'a>(AnyItem<'a>);

impl Serialize for ItemValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        scalar(s, self.0)
    }
}

/// A payload attribute list (the entries are read as it is written).
struct PayloadAttributesJson<'r, 'a>(&'r RefCell<AttributeEntries<'a>>);

impl Serialize for PayloadAttributesJson<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let prefix = self.0.borrow().prefix();
        loop {
            let next = self.0.borrow_mut().next_key();
            let Some((key, source)) = next else { break };
            let value = match source {
                EntryValue::Item(item) => ValueJson::Item(item),
                EntryValue::Next => ValueJson::Streamed(Streamed {
                    entries: self.0,
                    depth: 1,
                }),
            };
            seq.serialize_element(&KeyValueJson {
                prefix,
                key: key.bytes(),
                value,
            })?;
        }
        seq.end()
    }
}

// ---------------------------------------------------------------------------
// Owned values.

struct OwnedValueJson<'a>(&'a AttributeValue);

impl Serialize for OwnedValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            AttributeValue::Array(items) => single(s, "arrayValue", &Values(OwnedItems(items))),
            AttributeValue::KvList(pairs) => {
                single(s, "kvlistValue", &Values(OwnedAttributesJson(pairs)))
            }
            AttributeValue::String(t) => scalar(s, AnyItem::Text(t.as_bytes())),
            AttributeValue::Int(i) => scalar(s, AnyItem::Int(*i)),
            AttributeValue::Double(f) => scalar(s, super::payload::double_item(*f)),
            AttributeValue::Bool(b) => scalar(s, AnyItem::Bool(*b)),
        }
    }
}

struct OwnedItems<'a>(&'a [AttributeValue]);

impl Serialize for OwnedItems<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&OwnedValueJson(v))?;
        }
        seq.end()
    }
}

struct OwnedAttributesJson<'a>(&'a [KeyValue]);

impl Serialize for OwnedAttributesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for kv in self.0 {
            seq.serialize_element(&KeyValueJson {
                prefix: "",
                key: kv.key.as_bytes(),
                value: ValueJson::Owned(&kv.value),
            })?;
        }
        seq.end()
    }
}

// ---------------------------------------------------------------------------
// Spans.

/// Writes `"attributes"` (and `"droppedAttributesCount"` when some were
/// dropped) into a struct being serialized.
fn attributes_fields<M: SerializeStruct>(
    m: &mut M,
    attrs: &Attributes<'_>,
) -> Result<(), M::Error> {
    match attrs {
        Attributes::Payload(p) => {
            let entries = RefCell::new(p.entries());
            m.serialize_field("attributes", &PayloadAttributesJson(&entries))?;
            // Known once the attributes are written.
            let dropped = entries.borrow().dropped();
            if dropped > 0 {
                m.serialize_field("droppedAttributesCount", &dropped)?;
            }
        }
        Attributes::Owned(kvs, dropped) => {
            m.serialize_field("attributes", &OwnedAttributesJson(kvs))?;
            if *dropped > 0 {
                m.serialize_field("droppedAttributesCount", dropped)?;
            }
        }
    }
    Ok(())
}

struct ResourceJson<'a>(&'a Packed);

impl Serialize for ResourceJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Resource", 2)?;
        attributes_fields(
            &mut m,
            &Attributes::Payload(PayloadAttributes::plain(self.0)),
        )?;
        m.end()
    }
}

struct Scope<'a>(&'a str);

impl Serialize for Scope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("InstrumentationScope", 2)?;
        m.serialize_field("name", SCOPE_NAME)?;
        m.serialize_field("version", self.0)?;
        m.end()
    }
}

struct SpanJson<'s, 'a>(&'s SpanView<'a>);

impl Serialize for SpanJson<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let mut m = s.serialize_struct("Span", 14)?;
        m.serialize_field("traceId", &Hex(&span.trace_id))?;
        m.serialize_field("spanId", &Hex(&span.span_id))?;
        if let Some(p) = &span.parent_span_id {
            m.serialize_field("parentSpanId", &Hex(p))?;
        }
        m.serialize_field("name", &Text(span.name))?;
        m.serialize_field("kind", &span.kind)?;
        m.serialize_field(
            "startTimeUnixNano",
            &Decimal::Unsigned(span.start_time_unix_nano),
        )?;
        m.serialize_field(
            "endTimeUnixNano",
            &Decimal::Unsigned(span.end_time_unix_nano.max(span.start_time_unix_nano)),
        )?;
        attributes_fields(&mut m, &span.attributes)?;
        if !span.events.is_empty() {
            m.serialize_field("events", &EventsJson(span))?;
        }
        if span.dropped_events > 0 {
            m.serialize_field("droppedEventsCount", &span.dropped_events)?;
        }
        if !span.links.is_empty() {
            m.serialize_field("links", &LinksJson(span.links))?;
        }
        if span.dropped_links > 0 {
            m.serialize_field("droppedLinksCount", &span.dropped_links)?;
        }
        if let Some(status) = &span.status {
            m.serialize_field("status", &StatusJson(status))?;
        }
        m.end()
    }
}

struct EventsJson<'s, 'a>(&'s SpanView<'a>);

impl Serialize for EventsJson<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for event in self.0.events.iter() {
            seq.serialize_element(&EventJson(&event))?;
        }
        seq.end()
    }
}

struct EventJson<'s, 'a>(&'s EventView<'a>);

impl Serialize for EventJson<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_struct("Event", 4)?;
        m.serialize_field("timeUnixNano", &Decimal::Unsigned(e.time_unix_nano))?;
        m.serialize_field("name", &Text(e.name))?;
        attributes_fields(&mut m, &e.attributes)?;
        m.end()
    }
}

struct LinksJson<'a>(&'a [SpanLink]);

impl Serialize for LinksJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for link in self.0 {
            seq.serialize_element(&LinkJson(link))?;
        }
        seq.end()
    }
}

struct LinkJson<'a>(&'a SpanLink);

impl Serialize for LinkJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Link", 2)?;
        m.serialize_field("traceId", &Hex(&self.0.trace_id))?;
        m.serialize_field("spanId", &Hex(&self.0.span_id))?;
        m.end()
    }
}

struct StatusJson<'s, 'a>(&'s StatusView<'a>);

impl Serialize for StatusJson<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Status", 2)?;
        if let Some(msg) = self.0.message.as_deref().filter(|m| !m.is_empty()) {
            m.serialize_field("message", msg)?;
        }
        m.serialize_field("code", &self.0.code)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn hex_and_decimal_writers() {
        assert_eq!(json(&Hex(&[0x00, 0xab, 0x0f])), "\"00ab0f\"");
        assert_eq!(json(&Hex(&[0xff; 16])).len(), 34);
        assert_eq!(json(&Decimal::Signed(0)), "\"0\"");
        assert_eq!(json(&Decimal::Signed(i64::MIN)), "\"-9223372036854775808\"");
        assert_eq!(
            json(&Decimal::Unsigned(u64::MAX)),
            "\"18446744073709551615\""
        );
    }

    #[test]
    fn long_prefixed_keys_and_invalid_text() {
        let long = vec![b'k'; 200];
        assert_eq!(
            json(&Prefixed("tasker.", &long)),
            format!("\"tasker.{}\"", "k".repeat(200))
        );
        assert_eq!(
            json(&Prefixed("tasker.", b"a\xffb")),
            "\"tasker.a\u{fffd}b\""
        );
    }

    #[test]
    fn payload_attributes_stream_as_otlp_json() {
        use crate::value::Value;
        let before = Packed::from_value(&Value::Hash(vec![
            (Value::symbol("a"), Value::Int(1)),
            (
                Value::symbol("b"),
                Value::Array(vec![Value::Nil, Value::Bool(true)]),
            ),
        ]));
        let after = Packed::from_value(&Value::Hash(vec![
            (Value::symbol("b"), Value::Float(0.5)),
            (
                Value::symbol("c"),
                Value::Hash(vec![(Value::Int(1), Value::Nil)]),
            ),
        ]));
        let entries = RefCell::new(PayloadAttributes::merged(&before, &after).entries());
        assert_eq!(
            json(&PayloadAttributesJson(&entries)),
            concat!(
                r#"[{"key":"tasker.a","value":{"intValue":"1"}},"#,
                r#"{"key":"tasker.b","value":{"doubleValue":0.5}},"#,
                r#"{"key":"tasker.c","value":{"kvlistValue":{"values":[{"key":"1","value":{}}]}}}]"#
            )
        );
        // "b" from before was overwritten, not dropped.
        assert_eq!(entries.borrow().dropped(), 0);
    }

    #[test]
    fn owned_values_follow_the_payload_rules() {
        let v = AttributeValue::Array(vec![
            AttributeValue::Double(f64::NAN),
            AttributeValue::Int(-3),
            AttributeValue::String("x".into()),
            AttributeValue::Bool(false),
        ]);
        assert_eq!(
            json(&OwnedValueJson(&v)),
            concat!(
                r#"{"arrayValue":{"values":[{"stringValue":"NaN"},{"intValue":"-3"},"#,
                r#"{"stringValue":"x"},{"boolValue":false}]}}"#
            )
        );
    }

    #[test]
    fn owned_kvlists_keep_their_keys_and_nest() {
        let v = AttributeValue::KvList(vec![
            KeyValue::new("id", AttributeValue::Int(7)),
            KeyValue::new(
                "items",
                AttributeValue::Array(vec![AttributeValue::KvList(vec![KeyValue::new(
                    "sku",
                    AttributeValue::String("A1".into()),
                )])]),
            ),
        ]);
        assert_eq!(
            json(&OwnedValueJson(&v)),
            concat!(
                r#"{"kvlistValue":{"values":[{"key":"id","value":{"intValue":"7"}},"#,
                r#"{"key":"items","value":{"arrayValue":{"values":[{"kvlistValue":{"values":["#,
                r#"{"key":"sku","value":{"stringValue":"A1"}}]}}]}}}]}}"#
            )
        );
    }
}
