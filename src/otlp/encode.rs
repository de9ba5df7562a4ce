//! Records to an OTLP/HTTP JSON `ExportTraceServiceRequest`.
//!
//! The JSON is written in one pass with serde_json straight from the stored
//! records and their packed payloads: no value trees, no intermediate JSON
//! document. It follows the OTLP JSON rules: lowerCamelCase keys, trace and
//! span ids as lowercase hex, 64-bit integers as decimal strings, enums as
//! integers, fields at their default values left out.
//!
//! Mapping, per record:
//! - a trace becomes a root span (kind INTERNAL) named after its start event
//!   without `.started`, with `tasker.trace_key` and the start payload as
//!   `tasker.<key>` attributes, status OK or ERROR (message from the finish
//!   payload's `:error` or `:error_message`). Its `.before_X`/`.after_X`
//!   events pair into child spans named `<prefix>.X`; unpaired ones, and the
//!   finish event of a failed trace, become events on the root span;
//! - a generic event becomes a zero-length span in a trace of its own.
//!
//! Times come from the native clock: a span's start is its event's wall time,
//! and every later time in the trace is the start plus the monotonic interval,
//! so durations are exact and an end is never before its start.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use super::attributes::{field, Decimal, Hex, Lossy, PayloadAttributes};
use crate::backend::routing::Status;
use crate::backend::store::{Finish, GenericRecord, Key, Record, SpanEvent, TraceRecord};
use crate::clock::Stamp;
use crate::value::{Packed, Str, Value};

pub use super::attributes::{error_message, render_text, str_text, ATTRIBUTE_PREFIX};

/// The instrumentation scope's name.
pub const SCOPE_NAME: &str = "tasker_trace_native";
/// `SPAN_KIND_INTERNAL`.
pub const SPAN_KIND_INTERNAL: i32 = 1;
/// `STATUS_CODE_OK`.
pub const STATUS_CODE_OK: i32 = 1;
/// `STATUS_CODE_ERROR`.
pub const STATUS_CODE_ERROR: i32 = 2;

/// What describes the process in every request.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// `service.name`.
    pub service_name: String,
    /// `host.name` (the backend's instance id).
    pub host_name: String,
    /// `process.pid`.
    pub pid: u32,
    /// The gem version: `telemetry.sdk.version` and the scope's version.
    pub version: String,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES` or the setting).
    /// They replace the detected ones of the same key, except `service.name`.
    pub attributes: Vec<(String, Value)>,
}

impl Resource {
    /// The resource attributes in order, each key once: `service.name`, the
    /// extra ones, then the detected ones that the extra ones do not replace.
    pub fn attribute_values(&self) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = Vec::with_capacity(self.attributes.len() + 6);
        out.push((
            "service.name".to_string(),
            Value::string(&self.service_name),
        ));
        for (k, v) in &self.attributes {
            if !out.iter().any(|(seen, _)| seen == k) {
                out.push((k.clone(), v.clone()));
            }
        }
        let detected = [
            ("host.name", Value::string(&self.host_name)),
            ("process.pid", Value::Int(i64::from(self.pid))),
            ("telemetry.sdk.name", Value::string(SCOPE_NAME)),
            ("telemetry.sdk.language", Value::string("ruby")),
            ("telemetry.sdk.version", Value::string(&self.version)),
        ];
        for (k, v) in detected {
            if !out.iter().any(|(seen, _)| seen == k) {
                out.push((k.to_string(), v));
            }
        }
        out
    }

    fn packed_attributes(&self) -> Packed {
        Packed::from_value(&Value::Hash(
            self.attribute_values()
                .into_iter()
                .map(|(k, v)| (Value::string(&k), v))
                .collect(),
        ))
    }
}

/// Bytes per record of the last export, to size the next one's buffer.
static BYTES_PER_RECORD: AtomicUsize = AtomicUsize::new(1500);

/// Encodes `records` as one `ExportTraceServiceRequest`. `now` closes the root
/// spans of open traces (exported only when asked for).
pub fn encode_request(
    records: &[(Key, Arc<Record>)],
    resource: &Resource,
    now: Stamp,
) -> Result<Vec<u8>, serde_json::Error> {
    // Sized from what the last export wrote per record, so that a large
    // export is written without reallocating and copying as it grows.
    let per_record = BYTES_PER_RECORD
        .load(Ordering::Relaxed)
        .clamp(256, 64 * 1024);
    let mut out = Vec::with_capacity(1024 + records.len().saturating_mul(per_record));
    let request = Request {
        resource,
        resource_attributes: resource.packed_attributes(),
        spans: Spans { records, now },
    };
    serde_json::to_writer(&mut out, &request)?;
    if !records.is_empty() {
        // A little over the average, so the next export of the same shape fits.
        BYTES_PER_RECORD.store(out.len() / records.len() + 64, Ordering::Relaxed);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Times and ids.

/// Nanoseconds since the epoch of `at`, measured from `anchor` on the monotonic
/// clock, so that every time in a trace is consistent with its durations.
fn unix_nanos(anchor: Stamp, at: Stamp) -> u64 {
    let offset = i128::from(at.mono_ns) - i128::from(anchor.mono_ns);
    let t = i128::from(anchor.wall_ns) + offset;
    t.clamp(0, i128::from(u64::MAX)) as u64
}

fn wall_nanos(at: Stamp) -> u64 {
    u64::try_from(at.wall_ns).unwrap_or(0)
}

/// A child span's id: derived from the root's id and the index of its
/// `.before_` event, so it is the same at every export. The mixing function
/// is a bijection, so children of one root never share an id.
pub fn child_span_id(root: [u8; 8], index: usize) -> [u8; 8] {
    let root_n = u64::from_be_bytes(root);
    let mut z = root_n
        ^ (index as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z == 0 || z == root_n {
        z = !root_n | 1;
    }
    z.to_be_bytes()
}

// ---------------------------------------------------------------------------
// Pairing `.before_X` with `.after_X`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Before,
    After,
}

/// Splits `prefix.before_X` / `prefix.after_X` at the first marker.
fn split_marker(name: &[u8]) -> Option<(Side, &[u8], &[u8])> {
    const BEFORE: &[u8] = b".before_";
    const AFTER: &[u8] = b".after_";
    let find = |needle: &[u8]| name.windows(needle.len()).position(|w| w == needle);
    let (side, at, len) = match (find(BEFORE), find(AFTER)) {
        (Some(b), Some(a)) if a < b => (Side::After, a, AFTER.len()),
        (Some(b), _) => (Side::Before, b, BEFORE.len()),
        (None, Some(a)) => (Side::After, a, AFTER.len()),
        (None, None) => return None,
    };
    Some((side, &name[..at], &name[at + len..]))
}

/// A `.before_X` event and the `.after_X` event that closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    pub before: usize,
    pub after: usize,
}

/// Span events paired into child spans, and those left over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    /// In the order of their `.before_` events.
    pub pairs: Vec<Pair>,
    /// Indexes of unpaired events, in order.
    pub unpaired: Vec<usize>,
}

/// Pairs each `.after_X` with the latest still-open `.before_X` of the same
/// prefix and the same `workflow_step_id` (or both without one).
pub fn pair_spans(spans: &[SpanEvent]) -> Pairing {
    struct Open<'a> {
        prefix: &'a [u8],
        x: &'a [u8],
        step: Option<Value>,
        index: usize,
    }
    let mut open: Vec<Open<'_>> = Vec::new();
    let mut paired = vec![false; spans.len()];
    let mut pairs = Vec::new();
    for (index, ev) in spans.iter().enumerate() {
        let Some((side, prefix, x)) = split_marker(ev.event_name.bytes()) else {
            continue;
        };
        let step = field(&ev.payload, "workflow_step_id");
        match side {
            Side::Before => open.push(Open {
                prefix,
                x,
                step,
                index,
            }),
            Side::After => {
                if let Some(pos) = open
                    .iter()
                    .rposition(|o| o.prefix == prefix && o.x == x && o.step == step)
                {
                    let o = open.remove(pos);
                    paired[o.index] = true;
                    paired[index] = true;
                    pairs.push(Pair {
                        before: o.index,
                        after: index,
                    });
                }
            }
        }
    }
    pairs.sort_unstable_by_key(|p| p.before);
    let unpaired = (0..spans.len()).filter(|&i| !paired[i]).collect();
    Pairing { pairs, unpaired }
}

/// `prefix.X` for a pair's `prefix.before_X`.
fn child_name(before: &Str) -> String {
    match split_marker(before.bytes()) {
        Some((_, prefix, x)) => {
            let mut s = String::with_capacity(prefix.len() + x.len() + 1);
            let _ = write!(s, "{}.{}", Lossy(prefix), Lossy(x));
            s
        }
        None => before.to_string_lossy(),
    }
}

/// The root span's name: the start event's name without `.started`.
fn root_name(start: &Str) -> &[u8] {
    let b = start.bytes();
    b.strip_suffix(b".started").unwrap_or(b)
}

// ---------------------------------------------------------------------------
// The request.

struct Request<'a> {
    resource: &'a Resource,
    resource_attributes: Packed,
    spans: Spans<'a>,
}

impl Serialize for Request<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("ExportTraceServiceRequest", 1)?;
        m.serialize_field("resourceSpans", &[ResourceSpans(self)])?;
        m.end()
    }
}

struct ResourceSpans<'a, 'b>(&'b Request<'a>);

impl Serialize for ResourceSpans<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("ResourceSpans", 2)?;
        m.serialize_field("resource", &ResourceJson(&self.0.resource_attributes))?;
        m.serialize_field("scopeSpans", &[ScopeSpans(self.0)])?;
        m.end()
    }
}

struct ResourceJson<'a>(&'a Packed);

impl Serialize for ResourceJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Resource", 1)?;
        m.serialize_field("attributes", &PayloadAttributes::plain(self.0))?;
        m.end()
    }
}

struct ScopeSpans<'a, 'b>(&'b Request<'a>);

impl Serialize for ScopeSpans<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("ScopeSpans", 2)?;
        m.serialize_field("scope", &Scope(&self.0.resource.version))?;
        m.serialize_field("spans", &self.0.spans)?;
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

struct Spans<'a> {
    records: &'a [(Key, Arc<Record>)],
    now: Stamp,
}

impl Serialize for Spans<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for (key, rec) in self.records {
            match &**rec {
                Record::Trace(t) => {
                    let pairing = pair_spans(&t.spans);
                    seq.serialize_element(&RootSpan {
                        key,
                        trace: t,
                        pairing: &pairing,
                        now: self.now,
                    })?;
                    for pair in &pairing.pairs {
                        seq.serialize_element(&ChildSpan { trace: t, pair })?;
                    }
                }
                Record::Generic(g) => seq.serialize_element(&GenericSpan { key, generic: g })?,
            }
        }
        seq.end()
    }
}

/// The fields every span has, in the order OTLP lists them.
struct SpanHead<'a> {
    trace_id: &'a [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<&'a [u8; 8]>,
    name: &'a [u8],
    start: u64,
    end: u64,
}

fn serialize_span<S: Serializer>(
    s: S,
    head: SpanHead<'_>,
    attributes: &PayloadAttributes<'_>,
    events: Option<RootEvents<'_>>,
    status: Option<(i32, Option<String>)>,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_struct("Span", 11)?;
    m.serialize_field("traceId", &Hex(head.trace_id))?;
    m.serialize_field("spanId", &Hex(&head.span_id))?;
    if let Some(p) = head.parent_span_id {
        m.serialize_field("parentSpanId", &Hex(p))?;
    }
    m.serialize_field("name", &Lossy(head.name))?;
    m.serialize_field("kind", &SPAN_KIND_INTERNAL)?;
    m.serialize_field("startTimeUnixNano", &Decimal(i128::from(head.start)))?;
    m.serialize_field(
        "endTimeUnixNano",
        &Decimal(i128::from(head.end.max(head.start))),
    )?;
    m.serialize_field("attributes", attributes)?;
    // Known once the attributes are written.
    let dropped = attributes.dropped.get();
    if dropped > 0 {
        m.serialize_field("droppedAttributesCount", &dropped)?;
    }
    if let Some(events) = events.filter(|e| !e.is_empty()) {
        m.serialize_field("events", &events)?;
    }
    if let Some((code, message)) = status {
        m.serialize_field("status", &StatusJson { code, message })?;
    }
    m.end()
}

struct StatusJson {
    code: i32,
    message: Option<String>,
}

impl Serialize for StatusJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Status", 2)?;
        if let Some(msg) = &self.message {
            m.serialize_field("message", msg)?;
        }
        m.serialize_field("code", &self.code)?;
        m.end()
    }
}

struct RootSpan<'a> {
    key: &'a Key,
    trace: &'a TraceRecord,
    pairing: &'a Pairing,
    now: Stamp,
}

impl Serialize for RootSpan<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.trace;
        let start = wall_nanos(t.start);
        let end_stamp = t.finish.as_ref().map(|f| f.at).unwrap_or(self.now);
        let status = t.finish.as_ref().map(|f| match f.status {
            Status::Success => (STATUS_CODE_OK, None),
            Status::Error => (STATUS_CODE_ERROR, error_message(&f.payload)),
        });
        serialize_span(
            s,
            SpanHead {
                trace_id: &t.trace_id,
                span_id: t.span_id,
                parent_span_id: None,
                name: root_name(&t.event_name),
                start,
                end: unix_nanos(t.start, end_stamp),
            },
            &PayloadAttributes::span(Some(self.key), &t.payload),
            Some(RootEvents {
                trace: t,
                unpaired: &self.pairing.unpaired,
            }),
            status,
        )
    }
}

/// The root span's events: unpaired span events, then the finish event of a
/// failed trace (its payload holds the error's details; a successful finish
/// adds nothing the span does not already say).
struct RootEvents<'a> {
    trace: &'a TraceRecord,
    unpaired: &'a [usize],
}

impl<'a> RootEvents<'a> {
    fn failure(&self) -> Option<&'a Finish> {
        self.trace
            .finish
            .as_ref()
            .filter(|f| f.status == Status::Error)
    }

    fn is_empty(&self) -> bool {
        self.unpaired.is_empty() && self.failure().is_none()
    }
}

impl Serialize for RootEvents<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.trace;
        let mut seq = s.serialize_seq(None)?;
        for &i in self.unpaired {
            let ev = &t.spans[i];
            seq.serialize_element(&EventJson {
                time: unix_nanos(t.start, ev.at),
                name: ev.event_name.bytes(),
                payload: &ev.payload,
            })?;
        }
        if let Some(f) = self.failure() {
            seq.serialize_element(&EventJson {
                time: unix_nanos(t.start, f.at).max(wall_nanos(t.start)),
                name: f.event_name.bytes(),
                payload: &f.payload,
            })?;
        }
        seq.end()
    }
}

struct EventJson<'a> {
    time: u64,
    name: &'a [u8],
    payload: &'a Packed,
}

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let attributes = PayloadAttributes::span(None, self.payload);
        let mut m = s.serialize_struct("Event", 4)?;
        m.serialize_field("timeUnixNano", &Decimal(i128::from(self.time)))?;
        m.serialize_field("name", &Lossy(self.name))?;
        m.serialize_field("attributes", &attributes)?;
        let dropped = attributes.dropped.get();
        if dropped > 0 {
            m.serialize_field("droppedAttributesCount", &dropped)?;
        }
        m.end()
    }
}

struct ChildSpan<'a> {
    trace: &'a TraceRecord,
    pair: &'a Pair,
}

impl Serialize for ChildSpan<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.trace;
        let before = &t.spans[self.pair.before];
        let after = &t.spans[self.pair.after];
        let start = unix_nanos(t.start, before.at);
        let name = child_name(&before.event_name);
        serialize_span(
            s,
            SpanHead {
                trace_id: &t.trace_id,
                span_id: child_span_id(t.span_id, self.pair.before),
                parent_span_id: Some(&t.span_id),
                name: name.as_bytes(),
                start,
                end: unix_nanos(t.start, after.at),
            },
            // The step's keys from both events; a key in both takes the
            // `.after_` value (what the step reported last).
            &PayloadAttributes::merged(&before.payload, &after.payload),
            None,
            None,
        )
    }
}

struct GenericSpan<'a> {
    key: &'a Key,
    generic: &'a GenericRecord,
}

impl Serialize for GenericSpan<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let g = self.generic;
        let at = wall_nanos(g.at);
        serialize_span(
            s,
            SpanHead {
                trace_id: &g.trace_id,
                span_id: g.span_id,
                parent_span_id: None,
                name: g.event_name.bytes(),
                start: at,
                end: at,
            },
            &PayloadAttributes::span(Some(self.key), &g.payload),
            None,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str, step: Option<i64>) -> SpanEvent {
        let payload = match step {
            Some(s) => Value::Hash(vec![(Value::symbol("workflow_step_id"), Value::Int(s))]),
            None => Value::Hash(vec![]),
        };
        SpanEvent {
            at: Stamp {
                wall_ns: 0,
                mono_ns: 0,
            },
            event_name: Str::utf8(name),
            payload: Packed::from_value(&payload),
        }
    }

    #[test]
    fn markers_split_at_the_first_one() {
        assert_eq!(
            split_marker(b"step.before_handle"),
            Some((Side::Before, &b"step"[..], &b"handle"[..]))
        );
        assert_eq!(
            split_marker(b"task.after_transition.x"),
            Some((Side::After, &b"task"[..], &b"transition.x"[..]))
        );
        assert_eq!(
            split_marker(b"a.after_b.before_c"),
            Some((Side::After, &b"a"[..], &b"b.before_c"[..]))
        );
        assert_eq!(split_marker(b"workflow.x"), None);
    }

    #[test]
    fn pairs_by_name_and_step_latest_open_first() {
        let spans = vec![
            span("step.before_handle", Some(1)), // 0
            span("step.before_handle", Some(2)), // 1
            span("step.after_handle", Some(1)),  // 2 closes 0
            span("step.after_other", Some(2)),   // 3 unpaired
            span("step.before_x", None),         // 4
            span("step.before_x", None),         // 5
            span("step.after_x", None),          // 6 closes 5
            span("step.after_x", None),          // 7 closes 4
            span("step.after_handle", Some(3)),  // 8 unpaired
        ];
        let p = pair_spans(&spans);
        assert_eq!(
            p.pairs,
            vec![
                Pair {
                    before: 0,
                    after: 2
                },
                Pair {
                    before: 4,
                    after: 7
                },
                Pair {
                    before: 5,
                    after: 6
                },
            ]
        );
        assert_eq!(p.unpaired, vec![1, 3, 8]);
    }

    #[test]
    fn an_after_without_a_before_stays_unpaired() {
        let p = pair_spans(&[
            span("step.after_handle", None),
            span("step.before_handle", None),
        ]);
        assert!(p.pairs.is_empty());
        assert_eq!(p.unpaired, vec![0, 1]);
    }

    #[test]
    fn child_ids_are_stable_distinct_and_non_zero() {
        let root = [1, 2, 3, 4, 5, 6, 7, 8];
        let ids: Vec<_> = (0..1000).map(|i| child_span_id(root, i)).collect();
        assert_eq!(ids[7], child_span_id(root, 7));
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
        assert!(ids.iter().all(|id| *id != [0; 8] && *id != root));
    }

    #[test]
    fn resource_attributes_are_unique_and_ordered() {
        let r = Resource {
            service_name: "svc".into(),
            host_name: "h".into(),
            pid: 7,
            version: "1.2.3".into(),
            attributes: vec![
                ("service.name".into(), Value::string("ignored")),
                ("host.name".into(), Value::string("pod")),
                ("team".into(), Value::string("a")),
            ],
        };
        let keys: Vec<_> = r.attribute_values().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "service.name",
                "host.name",
                "team",
                "process.pid",
                "telemetry.sdk.name",
                "telemetry.sdk.language",
                "telemetry.sdk.version"
            ]
        );
        let values = r.attribute_values();
        assert_eq!(values[0].1, Value::string("svc"));
        assert_eq!(values[1].1, Value::string("pod"));
    }

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
