//! The OTLP/HTTP protobuf encoder (`Content-Type: application/x-protobuf`),
//! hand-written: no generated code, no protobuf runtime.
//!
//! It writes what the JSON encoder writes, from the same [`SpanView`]s, as
//! the protobuf encoding of `opentelemetry.proto.collector.trace.v1
//! .ExportTraceServiceRequest`, byte for byte what prost produces for the
//! same message: fields in field-number order, proto3 scalars at their
//! default (0, empty) left out, message fields and `oneof` members always
//! written, lengths as minimal varints.
//!
//! Nested messages are written in place: a one-byte length is reserved and,
//! when the message turns out longer than 127 bytes, its bytes are moved up
//! to make room for the longer varint. The request's outer frame
//! (`ResourceSpans`, `ScopeSpans`) is written last, into room reserved in
//! front of the spans.
//!
//! Also decodes `ExportTraceServiceResponse` (partial success) and the
//! message of a `google.rpc.Status` error body.

use super::payload::{
    double_item, AnyItem, AttributeEntries, EntryValue, Lossy, PayloadAttributes, SeenKeys,
    ValueReader,
};
use super::resource::{Resource, SCOPE_NAME};
use super::span::{
    AttributeValue, Attributes, EventView, KeyValue, SpanLink, SpanView, StatusView,
};

// ---------------------------------------------------------------------------
// Wire format.

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 1 + the number of full 7-bit groups above the first.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn put_tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(buf, u64::from(field << 3 | wire));
}

/// An `int32`/`int64`/enum field (negative numbers take ten bytes, as in
/// protobuf), left out at 0.
fn put_int(buf: &mut Vec<u8>, field: u32, v: i64) {
    if v != 0 {
        put_tag(buf, field, VARINT);
        put_varint(buf, v as u64);
    }
}

/// A `fixed64` field, left out at 0.
fn put_fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// A `bytes` field (`always` for a oneof member; else left out when empty).
fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8], always: bool) {
    if always || !bytes.is_empty() {
        put_tag(buf, field, LEN);
        put_varint(buf, bytes.len() as u64);
        buf.extend_from_slice(bytes);
    }
}

/// A `string` field from bytes made valid UTF-8, after `prefix`.
fn put_text(buf: &mut Vec<u8>, field: u32, prefix: &str, text: &[u8], always: bool) {
    let lossy = Lossy(text);
    let len = prefix.len() + lossy.len();
    if always || len > 0 {
        put_tag(buf, field, LEN);
        put_varint(buf, len as u64);
        buf.extend_from_slice(prefix.as_bytes());
        lossy.write_to(buf);
    }
}

/// Starts a length-delimited field; returns where its length goes.
fn begin(buf: &mut Vec<u8>, field: u32) -> usize {
    put_tag(buf, field, LEN);
    buf.push(0);
    buf.len() - 1
}

/// Ends the field [`begin`] started: writes its length as a minimal varint,
/// moving the content up when the length needs more than the one byte.
fn end(buf: &mut Vec<u8>, at: usize) {
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
        return;
    }
    let n = varint_len(len as u64);
    let old_end = buf.len();
    buf.resize(old_end + n - 1, 0);
    buf.copy_within(at + 1..old_end, at + n);
    let mut v = len as u64;
    for b in &mut buf[at..at + n] {
        *b = (v as u8 & 0x7f) | 0x80;
        v >>= 7;
    }
    buf[at + n - 1] &= 0x7f;
}

// ---------------------------------------------------------------------------
// The request frame.

/// `ExportTraceServiceRequest { resource_spans: [ResourceSpans { resource,
/// scope_spans: [ScopeSpans { scope, spans }] }] }` around the spans.
pub(crate) struct Frame {
    /// `ResourceSpans.resource`, tag and length included.
    resource: Vec<u8>,
    /// `ScopeSpans.scope`, tag and length included.
    scope: Vec<u8>,
}

/// Most bytes the two tags and lengths of the frame take.
const FRAME_TAGS: usize = 2 * (1 + 10);

impl Frame {
    pub fn new(resource: &Resource) -> Frame {
        let packed = resource.packed_attributes();
        let mut r = Vec::with_capacity(256);
        let at = begin(&mut r, 1);
        write_attributes(
            &mut r,
            1,
            2,
            &Attributes::Payload(PayloadAttributes::plain(&packed)),
        );
        end(&mut r, at);
        let mut s = Vec::with_capacity(64);
        let at = begin(&mut s, 1);
        put_text(&mut s, 1, "", SCOPE_NAME.as_bytes(), false);
        put_text(&mut s, 2, "", resource.version.as_bytes(), false);
        end(&mut s, at);
        Frame {
            resource: r,
            scope: s,
        }
    }

    fn head(&self) -> usize {
        FRAME_TAGS + self.resource.len() + self.scope.len()
    }

    /// Starts a body: room for the frame, written at the end.
    pub fn start(&self, buf: &mut Vec<u8>) {
        buf.resize(buf.len() + self.head(), 0);
    }

    pub fn separator(_first: bool) -> usize {
        0
    }

    /// Appends one span (`ScopeSpans.spans`, field 2).
    pub fn write_span(buf: &mut Vec<u8>, span: &SpanView<'_>) {
        let at = begin(buf, 2);
        write_span(buf, span);
        end(buf, at);
    }

    /// (frame length, ScopeSpans length, ResourceSpans length) for spans of
    /// `spans_len` bytes.
    fn lengths(&self, spans_len: usize) -> (usize, usize, usize) {
        let ss = self.scope.len() + spans_len;
        let rs = self.resource.len() + 1 + varint_len(ss as u64) + ss;
        let frame = 1
            + varint_len(rs as u64)
            + self.resource.len()
            + 1
            + varint_len(ss as u64)
            + self.scope.len();
        (frame, ss, rs)
    }

    /// The body's length once finished.
    pub fn finished_len(&self, buf_len: usize) -> usize {
        let spans = buf_len.saturating_sub(self.head());
        self.lengths(spans).0 + spans
    }

    /// Writes the frame in front of the spans; returns where the body starts.
    pub fn finish(&self, buf: &mut [u8]) -> usize {
        let head = self.head();
        let spans = buf.len().saturating_sub(head);
        let (frame_len, ss, rs) = self.lengths(spans);
        let mut frame = Vec::with_capacity(frame_len);
        put_tag(&mut frame, 1, LEN);
        put_varint(&mut frame, rs as u64);
        frame.extend_from_slice(&self.resource);
        put_tag(&mut frame, 2, LEN);
        put_varint(&mut frame, ss as u64);
        frame.extend_from_slice(&self.scope);
        let start = head - frame.len();
        buf[start..head].copy_from_slice(&frame);
        start
    }
}

// ---------------------------------------------------------------------------
// Spans.

fn write_span(buf: &mut Vec<u8>, span: &SpanView<'_>) {
    put_bytes(buf, 1, &span.trace_id, false);
    put_bytes(buf, 2, &span.span_id, false);
    if let Some(parent) = &span.parent_span_id {
        put_bytes(buf, 4, parent, false);
    }
    put_text(buf, 5, "", span.name, false);
    put_int(buf, 6, i64::from(span.kind));
    put_fixed64(buf, 7, span.start_time_unix_nano);
    put_fixed64(
        buf,
        8,
        span.end_time_unix_nano.max(span.start_time_unix_nano),
    );
    write_attributes(buf, 9, 10, &span.attributes);
    for event in span.events.iter() {
        let at = begin(buf, 11);
        write_event(buf, &event);
        end(buf, at);
    }
    put_int(buf, 12, i64::from(span.dropped_events));
    for link in span.links {
        let at = begin(buf, 13);
        write_link(buf, link);
        end(buf, at);
    }
    put_int(buf, 14, i64::from(span.dropped_links));
    if let Some(status) = &span.status {
        let at = begin(buf, 15);
        write_status(buf, status);
        end(buf, at);
    }
}

fn write_event(buf: &mut Vec<u8>, e: &EventView<'_>) {
    put_fixed64(buf, 1, e.time_unix_nano);
    put_text(buf, 2, "", e.name, false);
    write_attributes(buf, 3, 4, &e.attributes);
}

fn write_link(buf: &mut Vec<u8>, link: &SpanLink) {
    put_bytes(buf, 1, &link.trace_id, false);
    put_bytes(buf, 2, &link.span_id, false);
}

fn write_status(buf: &mut Vec<u8>, status: &StatusView<'_>) {
    if let Some(message) = status.message.as_deref() {
        put_text(buf, 2, "", message.as_bytes(), false);
    }
    put_int(buf, 3, i64::from(status.code));
}

/// An attribute list as repeated `KeyValue`s in field `field`, and the count
/// of those dropped (duplicates, beyond a limit) in field `dropped_field`.
fn write_attributes(buf: &mut Vec<u8>, field: u32, dropped_field: u32, attrs: &Attributes<'_>) {
    match attrs {
        Attributes::Payload(p) => {
            let mut entries = p.entries();
            write_payload_attributes(buf, field, &mut entries);
            put_int(buf, dropped_field, i64::from(entries.dropped()));
        }
        Attributes::Owned(kvs, dropped) => {
            for kv in *kvs {
                write_owned_key_value(buf, field, kv);
            }
            put_int(buf, dropped_field, i64::from(*dropped));
        }
    }
}

fn write_payload_attributes(buf: &mut Vec<u8>, field: u32, entries: &mut AttributeEntries<'_>) {
    let prefix = entries.prefix();
    while let Some((key, source)) = entries.next_key() {
        let at = begin(buf, field);
        put_text(buf, 1, prefix, key.bytes(), false);
        let value = begin(buf, 2);
        match source {
            EntryValue::Item(item) => write_scalar(buf, item),
            EntryValue::Next => {
                if let Some(r) = entries.reader() {
                    write_streamed(buf, r, 1);
                }
            }
        }
        end(buf, value);
        end(buf, at);
    }
}

/// The fields of an AnyValue holding a scalar (containers are written by
/// their callers; an empty AnyValue has no field).
fn write_scalar(buf: &mut Vec<u8>, item: AnyItem<'_>) {
    match item {
        AnyItem::Empty | AnyItem::Array(_) | AnyItem::KvList(_) => {}
        AnyItem::Text(t) => put_text(buf, 1, "", t, true),
        AnyItem::Bool(b) => {
            put_tag(buf, 2, VARINT);
            buf.push(u8::from(b));
        }
        AnyItem::Int(i) => {
            put_tag(buf, 3, VARINT);
            put_varint(buf, i as u64);
        }
        AnyItem::Double(f) => {
            put_tag(buf, 4, FIXED64);
            buf.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        AnyItem::Bytes(b) => put_bytes(buf, 7, b, true),
    }
}

/// The fields of the AnyValue of the reader's next value.
fn write_streamed(buf: &mut Vec<u8>, r: &mut ValueReader<'_>, depth: usize) {
    match r.value(depth) {
        AnyItem::Array(n) => {
            let array = begin(buf, 5);
            for _ in 0..n {
                let v = begin(buf, 1);
                write_streamed(buf, r, depth + 1);
                end(buf, v);
            }
            end(buf, array);
        }
        AnyItem::KvList(mut n) => {
            let list = begin(buf, 6);
            let mut seen = SeenKeys::default();
            let mut dropped = 0;
            while let Some(key) = r.unique_key(&mut n, &mut seen, &mut dropped) {
                let kv = begin(buf, 1);
                put_text(buf, 1, "", key.bytes(), false);
                let v = begin(buf, 2);
                write_streamed(buf, r, depth + 1);
                end(buf, v);
                end(buf, kv);
            }
            end(buf, list);
        }
        item => write_scalar(buf, item),
    }
}

fn write_owned_key_value(buf: &mut Vec<u8>, field: u32, kv: &KeyValue) {
    let at = begin(buf, field);
    put_text(buf, 1, "", kv.key.as_bytes(), false);
    let v = begin(buf, 2);
    write_owned_value(buf, &kv.value);
    end(buf, v);
    end(buf, at);
}

fn write_owned_value(buf: &mut Vec<u8>, value: &AttributeValue) {
    match value {
        AttributeValue::String(s) => write_scalar(buf, AnyItem::Text(s.as_bytes())),
        AttributeValue::Int(i) => write_scalar(buf, AnyItem::Int(*i)),
        AttributeValue::Double(f) => write_scalar(buf, double_item(*f)),
        AttributeValue::Bool(b) => write_scalar(buf, AnyItem::Bool(*b)),
        AttributeValue::Array(items) => {
            let array = begin(buf, 5);
            for item in items {
                let v = begin(buf, 1);
                write_owned_value(buf, item);
                end(buf, v);
            }
            end(buf, array);
        }
        AttributeValue::KvList(pairs) => {
            let list = begin(buf, 6);
            for kv in pairs {
                write_owned_key_value(buf, 1, kv);
            }
            end(buf, list);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_minimal() {
        for (v, bytes) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
    }

    #[test]
    fn nested_lengths_grow_in_place() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 70_000] {
            let mut buf = vec![9u8];
            let at = begin(&mut buf, 3);
            buf.extend(std::iter::repeat_n(7u8, len));
            end(&mut buf, at);
            let mut want = vec![9u8, 3 << 3 | 2];
            put_varint(&mut want, len as u64);
            want.extend(std::iter::repeat_n(7u8, len));
            assert_eq!(buf, want, "{len}");
        }
    }

    #[test]
    fn defaults_are_left_out_but_oneof_members_are_not() {
        let mut buf = Vec::new();
        put_int(&mut buf, 6, 0);
        put_fixed64(&mut buf, 7, 0);
        put_bytes(&mut buf, 4, &[], false);
        put_text(&mut buf, 5, "", b"", false);
        assert!(buf.is_empty());
        write_scalar(&mut buf, AnyItem::Text(b""));
        write_scalar(&mut buf, AnyItem::Int(0));
        write_scalar(&mut buf, AnyItem::Bool(false));
        assert_eq!(buf, [0x0a, 0x00, 0x18, 0x00, 0x10, 0x00]);
        let mut neg = Vec::new();
        put_int(&mut neg, 6, -1);
        assert_eq!(neg.len(), 11);
    }

    #[test]
    fn owned_kvlists_nest_as_key_value_lists() {
        // {"a": {"b": 1}} as an AnyValue: kvlist_value (6) { values (1) {
        // key (1) "a", value (2) { kvlist_value { values { key "b",
        // value { int_value (3) 1 } } } } } }
        let v = AttributeValue::KvList(vec![KeyValue::new(
            "a",
            AttributeValue::KvList(vec![KeyValue::new("b", AttributeValue::Int(1))]),
        )]);
        let mut buf = Vec::new();
        write_owned_value(&mut buf, &v);
        let inner = [
            0x32, 0x09, 0x0a, 0x07, 0x0a, 0x01, b'b', 0x12, 0x02, 0x18, 0x01,
        ];
        let mut want = vec![0x32, 0x12, 0x0a, 0x10, 0x0a, 0x01, b'a', 0x12, 0x0b];
        want.extend_from_slice(&inner);
        assert_eq!(buf, want);
    }
}
