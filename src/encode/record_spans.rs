//! The mapping of the store's records to OTLP spans, written once for every
//! wire format: which spans a record makes, their names, ids, times,
//! attributes, events and status. Each span is described as a [`SpanView`]
//! and handed to a [`SpanWriter`] (the JSON or the protobuf encoder).
//!
//! Per record:
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

use std::borrow::Cow;
use std::fmt::Write as _;

use super::limits::{kept, Limit, SpanLimits};
use super::payload::{error_message, field, Lossy, PayloadAttributes};
use super::span::{
    unix_nanos, wall_nanos, Attributes, EncodeError, Events, RootEvents, SpanView, SpanWriter,
    StatusView, SPAN_KIND_INTERNAL, STATUS_CODE_ERROR, STATUS_CODE_OK,
};
use crate::input::backend::routing::Status;
use crate::model::backend::store::{GenericRecord, Key, Record, SpanEntry, TraceRecord};
use crate::support::clock::Stamp;
use crate::value::{Str, Value};

// ---------------------------------------------------------------------------
// Times and ids.

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
pub fn pair_spans(spans: &[SpanEntry]) -> Pairing {
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
// Records to spans.

/// Describes the spans of one record to `w`, in order: a trace's root span,
/// then its child spans in the order of their `.before_` events; a generic
/// event's one span. `now` closes the root span of an open trace; `limits`
/// cut attributes and events (see [`super::limits`]).
pub fn write_record(
    key: &Key,
    record: &Record,
    now: Stamp,
    limits: &SpanLimits,
    w: &mut dyn SpanWriter,
) -> Result<(), EncodeError> {
    match record {
        Record::Trace(t) => {
            let pairing = pair_spans(&t.spans);
            w.write_span(&root_span(key, t, &pairing, now, limits))?;
            for pair in &pairing.pairs {
                let name = child_name(&t.spans[pair.before].event_name);
                w.write_span(&child_span(t, pair, name.as_bytes(), limits))?;
            }
            Ok(())
        }
        Record::Generic(g) => w.write_span(&generic_span(key, g, limits)),
    }
}

/// A span's payload attributes under the span limits.
fn span_attributes<'a>(attributes: PayloadAttributes<'a>, limits: &SpanLimits) -> Attributes<'a> {
    Attributes::Payload(attributes.limited(
        limits.span_attributes(),
        limits.value_length(),
        Limit::SpanAttributes,
    ))
}

/// Number of spans a record describes.
pub fn record_span_count(record: &Record) -> usize {
    match record {
        Record::Trace(t) => 1 + pair_spans(&t.spans).pairs.len(),
        Record::Generic(_) => 1,
    }
}

/// A trace's root span: named after its start event without `.started`, the
/// trace key and the start payload as attributes, status from the finish.
fn root_span<'a>(
    key: &'a Key,
    t: &'a TraceRecord,
    pairing: &'a Pairing,
    now: Stamp,
    limits: &SpanLimits,
) -> SpanView<'a> {
    let end_stamp = t.finish.as_ref().map(|f| f.at).unwrap_or(now);
    let events = RootEvents {
        trace: t,
        unpaired: &pairing.unpaired,
        limits: *limits,
    };
    let total = events.total();
    let dropped_events = total - kept(total, limits.span_event_count, Limit::SpanEvents);
    SpanView {
        trace_id: t.trace_id,
        span_id: t.span_id,
        parent_span_id: None,
        name: root_name(&t.event_name),
        kind: SPAN_KIND_INTERNAL,
        start_time_unix_nano: wall_nanos(t.start),
        end_time_unix_nano: unix_nanos(t.start, end_stamp),
        attributes: span_attributes(PayloadAttributes::span(Some(key), &t.payload), limits),
        events: Events::Root(events),
        links: &[],
        status: t.finish.as_ref().map(|f| match f.status {
            Status::Success => StatusView {
                code: STATUS_CODE_OK,
                message: None,
            },
            Status::Error => StatusView {
                code: STATUS_CODE_ERROR,
                message: error_message(&f.payload).map(Cow::Owned),
            },
        }),
        dropped_events: u32::try_from(dropped_events).unwrap_or(u32::MAX),
        dropped_links: 0,
    }
}

/// A `.before_X`/`.after_X` pair's span, a child of the root.
fn child_span<'a>(
    t: &'a TraceRecord,
    pair: &Pair,
    name: &'a [u8],
    limits: &SpanLimits,
) -> SpanView<'a> {
    let before = &t.spans[pair.before];
    let after = &t.spans[pair.after];
    SpanView {
        trace_id: t.trace_id,
        span_id: child_span_id(t.span_id, pair.before),
        parent_span_id: Some(t.span_id),
        name,
        kind: SPAN_KIND_INTERNAL,
        start_time_unix_nano: unix_nanos(t.start, before.at),
        end_time_unix_nano: unix_nanos(t.start, after.at),
        // The step's keys from both events; a key in both takes the
        // `.after_` value (what the step reported last).
        attributes: span_attributes(
            PayloadAttributes::merged(&before.payload, &after.payload),
            limits,
        ),
        events: Events::None,
        links: &[],
        status: None,
        dropped_events: 0,
        dropped_links: 0,
    }
}

/// A generic event: a zero-length span in a trace of its own.
fn generic_span<'a>(key: &'a Key, g: &'a GenericRecord, limits: &SpanLimits) -> SpanView<'a> {
    let at = wall_nanos(g.at);
    SpanView {
        trace_id: g.trace_id,
        span_id: g.span_id,
        parent_span_id: None,
        name: g.event_name.bytes(),
        kind: SPAN_KIND_INTERNAL,
        start_time_unix_nano: at,
        end_time_unix_nano: at,
        attributes: span_attributes(PayloadAttributes::span(Some(key), &g.payload), limits),
        events: Events::None,
        links: &[],
        status: None,
        dropped_events: 0,
        dropped_links: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Packed;

    fn span(name: &str, step: Option<i64>) -> SpanEntry {
        let payload = match step {
            Some(s) => Value::Hash(vec![(Value::symbol("workflow_step_id"), Value::Int(s))]),
            None => Value::Hash(vec![]),
        };
        SpanEntry {
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
}
