//! Lifecycle runs as OTLP spans: written once here, for every wire format
//! and every exporter (`export_otlp`, `push_otlp`, the background exporter).
//!
//! Per run (one trace, the run's trace id):
//! - the root `tasker.task.execution` and one `tasker.step.execution` per
//!   attempt, parent = the root, kind INTERNAL, ids as the tracer made them;
//! - times: the root's start is its wall-clock time; every other time in the
//!   run is that plus the monotonic interval from the root's start, so
//!   durations are exact and never negative. A span still open (only with
//!   `include_open`) ends at the export time;
//! - status: UNSET is left out, OK, or ERROR with the message;
//! - attributes and span events' attributes: `<prefix><key>` (the prefix is
//!   `<service name>.`, `tasker.` by default) with typed values;
//! - links: the root's link to the task's previous run.

use crate::encode::limits::SpanLimits;
use crate::encode::span::{limit_owned_span, unix_nanos};
use crate::encode::{
    AttributeValue, KeyValue, OwnedEvent, OwnedSpan, SpanLink, SPAN_KIND_INTERNAL,
    STATUS_CODE_ERROR, STATUS_CODE_OK,
};
use crate::support::clock::Stamp;

use crate::input::lifecycle::attributes::{Attr, AttrValue};
use crate::model::lifecycle::{Run, Span, SpanStatus, StatusCode};

/// The attribute prefix for a service name: `<service_name>.`.
pub fn attribute_prefix(service_name: &str) -> String {
    let mut prefix = String::with_capacity(service_name.len() + 1);
    prefix.push_str(service_name);
    prefix.push('.');
    prefix
}

/// The clock of one run: every time in it as Unix nanoseconds, measured from
/// the root's start on the monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    anchor: Stamp,
}

impl RunClock {
    pub fn new(run: &Run) -> RunClock {
        let anchor = run.root().map_or(
            Stamp {
                wall_ns: 0,
                mono_ns: 0,
            },
            |r| r.start,
        );
        RunClock { anchor }
    }

    /// `at` as Unix nanoseconds.
    pub fn nanos(&self, at: Stamp) -> u64 {
        unix_nanos(self.anchor, at)
    }

    /// A span's start and end (`None` while open) as Unix nanoseconds; the
    /// end is never before the start.
    pub fn span_times(&self, span: &Span) -> (u64, Option<u64>) {
        let start = self.nanos(span.start);
        (start, span.end.map(|e| self.nanos(e).max(start)))
    }
}

/// A typed value as an OTLP attribute value.
pub fn attribute_value(v: &AttrValue) -> AttributeValue {
    match v {
        AttrValue::Int(n) => AttributeValue::Int(*n),
        AttrValue::Float(x) => AttributeValue::Double(*x),
        AttrValue::Bool(b) => AttributeValue::Bool(*b),
        AttrValue::Str(t) => AttributeValue::String(t.as_str().to_string()),
        AttrValue::Array(items) => {
            AttributeValue::Array(items.iter().map(attribute_value).collect())
        }
        AttrValue::Map(pairs) => AttributeValue::KvList(
            pairs
                .iter()
                .map(|(k, v)| KeyValue::new(k.as_str(), attribute_value(v)))
                .collect(),
        ),
    }
}

/// `<prefix><key>`.
pub fn prefixed_key(prefix: &str, key: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + key.len());
    k.push_str(prefix);
    k.push_str(key);
    k
}

/// The attributes as KeyValues, and how many were left out: keys are
/// unique, the first wins (a `lifecycle_attributes` key may be shown under
/// the name of a known one).
fn unique_attributes(prefix: &str, attrs: &[Attr]) -> (Vec<KeyValue>, u32) {
    let mut out = Vec::with_capacity(attrs.len());
    let mut dropped = 0u32;
    for (i, (k, v)) in attrs.iter().enumerate() {
        let name = k.as_str();
        if attrs[..i].iter().any(|(seen, _)| seen.as_str() == name) {
            dropped = dropped.saturating_add(1);
            continue;
        }
        out.push(KeyValue::new(
            prefixed_key(prefix, name),
            attribute_value(v),
        ));
    }
    (out, dropped)
}

/// The OTLP status: `None` for UNSET.
pub fn status(s: &SpanStatus) -> Option<(i32, String)> {
    let message = || {
        s.message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default()
    };
    match s.code {
        StatusCode::Unset => None,
        StatusCode::Ok => Some((STATUS_CODE_OK, String::new())),
        StatusCode::Error => Some((STATUS_CODE_ERROR, message())),
    }
}

/// One span of `run`; open spans end at `now`; `limits` cut it.
fn owned_span(
    run: &Run,
    clock: &RunClock,
    span: &Span,
    prefix: &str,
    now: Stamp,
    limits: &SpanLimits,
) -> OwnedSpan {
    let (start, end) = clock.span_times(span);
    let end = end.unwrap_or_else(|| clock.nanos(now).max(start));
    let (attributes, dropped_attributes_count) = unique_attributes(prefix, &span.attributes);
    let mut owned = OwnedSpan {
        trace_id: run.trace_id,
        span_id: span.span_id,
        parent_span_id: span.parent_span_id,
        name: span.name.to_string(),
        kind: SPAN_KIND_INTERNAL,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        events: span
            .events
            .iter()
            .map(|e| {
                let (attributes, dropped_attributes_count) =
                    unique_attributes(prefix, &e.attributes);
                OwnedEvent {
                    time_unix_nano: clock.nanos(e.at),
                    name: e.name.as_str().to_string(),
                    attributes,
                    dropped_attributes_count,
                }
            })
            .collect(),
        links: span
            .links
            .iter()
            .map(|l| SpanLink {
                trace_id: l.trace_id,
                span_id: l.span_id,
            })
            .collect(),
        status: status(&span.status),
        dropped_attributes_count,
        dropped_events_count: 0,
        dropped_links_count: 0,
    };
    limit_owned_span(&mut owned, limits);
    owned
}

/// The spans of one run: the root first, then the attempts, cut by `limits`.
pub fn run_spans(run: &Run, prefix: &str, now: Stamp, limits: &SpanLimits) -> Vec<OwnedSpan> {
    let clock = RunClock::new(run);
    run.spans
        .iter()
        .map(|span| owned_span(run, &clock, span, prefix, now, limits))
        .collect()
}

/// The spans of several runs, run by run.
pub fn runs_spans(runs: &[Run], prefix: &str, now: Stamp, limits: &SpanLimits) -> Vec<OwnedSpan> {
    let mut out = Vec::with_capacity(runs.iter().map(|r| r.spans.len()).sum());
    for run in runs {
        out.extend(run_spans(run, prefix, now, limits));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::lifecycle::{AttrKey, LifecycleEvent, Text};
    use crate::model::lifecycle::Tracer;
    use std::time::Duration;

    fn at(ms: u64) -> Stamp {
        Stamp {
            wall_ns: 1_000_000_000_000 + ms as i64 * 1_000_000,
            mono_ns: 5_000_000_000 + ms * 1_000_000,
        }
    }

    fn ev(name: &str, ms: u64) -> LifecycleEvent {
        LifecycleEvent::named(name.as_bytes(), at(ms)).with_task(1)
    }

    #[test]
    fn times_follow_the_monotonic_clock_from_the_root_start() {
        let t = Tracer::default();
        t.record(
            ev("task.start_requested", 0)
                .with_to_state(crate::input::lifecycle::ToState::InProgress),
        );
        t.record(ev("step.execution_requested", 3).with_step(9));
        t.record(
            ev("step.failed", 10)
                .with_step(9)
                .with_attr(AttrKey::Error, "boom"),
        );
        // An open second attempt, ended at `now` in the export.
        t.record(ev("step.execution_requested", 12).with_step(9));
        let runs = t.snapshot(true);
        let spans = run_spans(&runs[0], "svc.", at(20), &SpanLimits::NONE);
        assert_eq!(spans.len(), 3);
        let root = &spans[0];
        assert_eq!(root.start_time_unix_nano, 1_000_000_000_000);
        assert_eq!(root.end_time_unix_nano, 1_000_020_000_000);
        assert_eq!(root.parent_span_id, None);
        assert_eq!(root.status, None);
        assert_eq!(root.attributes[0].key, "svc.task_id");
        let failed = &spans[1];
        assert_eq!(failed.parent_span_id, Some(root.span_id));
        assert_eq!(failed.start_time_unix_nano, 1_000_003_000_000);
        assert_eq!(failed.end_time_unix_nano, 1_000_010_000_000);
        assert_eq!(failed.status, Some((STATUS_CODE_ERROR, "boom".to_string())));
        assert_eq!(spans[2].end_time_unix_nano, 1_000_020_000_000);
        assert!(spans.iter().all(|s| s.trace_id == runs[0].trace_id));
        // An explicit drain after the run ended: no open span left.
        t.record(ev("task.completed", 30));
        let done = t.drain_finished(Duration::ZERO);
        let spans = run_spans(&done[0], "tasker.", at(99), &SpanLimits::NONE);
        assert_eq!(spans[0].status, Some((STATUS_CODE_OK, String::new())));
        assert_eq!(spans[2].end_time_unix_nano, 1_000_030_000_000);
    }

    #[test]
    fn values_keep_their_types() {
        let arr: std::sync::Arc<[AttrValue]> = vec![AttrValue::Int(1), "x".into()].into();
        assert_eq!(
            attribute_value(&AttrValue::Int(-4)),
            AttributeValue::Int(-4)
        );
        assert_eq!(
            attribute_value(&AttrValue::Float(0.5)),
            AttributeValue::Double(0.5)
        );
        assert_eq!(
            attribute_value(&AttrValue::Bool(true)),
            AttributeValue::Bool(true)
        );
        assert_eq!(
            attribute_value(&AttrValue::Array(arr)),
            AttributeValue::Array(vec![
                AttributeValue::Int(1),
                AttributeValue::String("x".into())
            ])
        );
        let map: std::sync::Arc<[(Text, AttrValue)]> =
            vec![(Text::from("password"), "[FILTERED]".into())].into();
        assert_eq!(
            attribute_value(&AttrValue::Map(map)),
            AttributeValue::KvList(vec![KeyValue::new(
                "password",
                AttributeValue::String("[FILTERED]".into())
            )])
        );
        assert_eq!(attribute_prefix("orders"), "orders.");
    }
}
