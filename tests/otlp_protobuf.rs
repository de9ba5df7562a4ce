//! The protobuf encoder against prost: for the same records (and extra
//! owned spans), the JSON export parsed into opentelemetry-proto's types and
//! encoded by prost must be byte for byte what the protobuf encoder writes,
//! and the protobuf bytes decoded strictly by prost must equal the parsed
//! JSON, field by field.

mod otlp_support;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use otlp_support::*;
use prost::Message as _;
use tasker_trace_core::encode::{
    encode_request, AttributeValue, Encoder, KeyValue, OwnedEvent, OwnedSpan, SpanLink,
    SPAN_KIND_INTERNAL, STATUS_CODE_ERROR, STATUS_CODE_OK,
};
use tasker_trace_core::input::backend::Event;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::support::clock::Stamp;
use tasker_trace_core::support::protocol::Protocol;
use tasker_trace_core::value::{Encoding, Str, Value};

fn encode(b: &Backend, extra: &[OwnedSpan], protocol: Protocol) -> Vec<u8> {
    let records = select(b, false, true);
    // One `now` for both formats (it closes open traces).
    let now = at(1_800_000_000, 0);
    encode_request(&records, extra, &resource(), now, protocol).expect("encodes")
}

/// Both checks; returns the decoded request.
fn assert_identical(b: &Backend, extra: &[OwnedSpan]) -> ExportTraceServiceRequest {
    let json = encode(b, extra, Protocol::HttpJson);
    // Parsed, and every key and value survives the round trip (`validate`
    // without its structural rules: zero times are encoded here too).
    let from_json = parse(&json);
    let again = serde_json::to_value(&from_json).expect("re-serialises");
    assert_survives(&raw(&json), &again, "$");
    let expected = from_json.encode_to_vec();
    let ours = encode(b, extra, Protocol::HttpProtobuf);
    if ours != expected {
        let at = ours
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(expected.len()));
        panic!(
            "protobuf differs from prost's at byte {at} of {} (prost: {}):\nours  {:02x?}\nprost {:02x?}",
            ours.len(),
            expected.len(),
            &ours[at.saturating_sub(16)..(at + 16).min(ours.len())],
            &expected[at.saturating_sub(16)..(at + 16).min(expected.len())],
        );
    }
    let decoded = ExportTraceServiceRequest::decode(&ours[..]).expect("prost decodes it strictly");
    assert_spans_equal(&decoded, &from_json);
    assert_eq!(decoded, from_json);
    decoded
}

/// Field by field, span by span, for a readable failure.
fn assert_spans_equal(got: &ExportTraceServiceRequest, want: &ExportTraceServiceRequest) {
    assert_eq!(got.resource_spans.len(), want.resource_spans.len());
    for (g, w) in got.resource_spans.iter().zip(&want.resource_spans) {
        assert_eq!(g.resource, w.resource, "resource");
        assert_eq!(g.scope_spans.len(), w.scope_spans.len());
        for (gs, ws) in g.scope_spans.iter().zip(&w.scope_spans) {
            assert_eq!(gs.scope, ws.scope, "scope");
            assert_eq!(gs.spans.len(), ws.spans.len(), "span count");
            for (a, b) in gs.spans.iter().zip(&ws.spans) {
                let name = &b.name;
                assert_eq!(a.trace_id, b.trace_id, "{name}: trace_id");
                assert_eq!(a.span_id, b.span_id, "{name}: span_id");
                assert_eq!(a.parent_span_id, b.parent_span_id, "{name}: parent");
                assert_eq!(a.name, b.name);
                assert_eq!(a.kind, b.kind, "{name}: kind");
                assert_eq!(a.start_time_unix_nano, b.start_time_unix_nano, "{name}");
                assert_eq!(a.end_time_unix_nano, b.end_time_unix_nano, "{name}");
                assert_eq!(a.attributes, b.attributes, "{name}: attributes");
                assert_eq!(
                    a.dropped_attributes_count, b.dropped_attributes_count,
                    "{name}: dropped"
                );
                assert_eq!(a.events, b.events, "{name}: events");
                assert_eq!(a.links, b.links, "{name}: links");
                assert_eq!(a.status, b.status, "{name}: status");
            }
        }
    }
}

fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

#[test]
fn varied_records_encode_exactly_as_prost_does() {
    let req = assert_identical(&rich_store(), &[]);
    assert_eq!(span_count(&req), 4);
}

#[test]
fn an_empty_export_encodes_exactly_as_prost_does() {
    let req = assert_identical(&Backend::new("h"), &[]);
    assert_eq!(span_count(&req), 0);
    assert_eq!(req.resource_spans.len(), 1);
}

#[test]
fn many_finished_tasks_encode_exactly_as_prost_does() {
    let b = Backend::new("h");
    for i in 0..200 {
        finished_task(&b, i);
    }
    assert_eq!(span_count(&assert_identical(&b, &[])), 400);
}

/// Payloads an application should never send, and sends anyway.
fn hostile_store() -> Backend {
    let b = Backend::new("h\u{0}ost");
    let mut deep = s("bottom");
    for _ in 0..5_000 {
        deep = Value::Array(vec![deep]);
    }
    let mut deep_hash = Value::Int(1);
    for i in 0..300 {
        deep_hash = hash(vec![(Value::Int(i), deep_hash), (s(""), s(""))]);
    }
    let mut many: Vec<(Value, Value)> = (0..60)
        .map(|i| (s(&format!("k{i}")), Value::Int(i)))
        .collect();
    many.push((s("k7"), s("duplicate")));
    b.ingest(Event::new(
        Str::new(&b"\xff\xfebad.started"[..], Encoding::Binary),
        task_key(1),
        hash(vec![
            (sym("task_id"), Value::Int(1)),
            (s(""), s("")),
            (
                Value::Str(Str::new(vec![0xc3, 0x28], Encoding::Binary)),
                Value::Str(Str::new(vec![0x80, 0x81], Encoding::Utf8)),
            ),
            (
                sym("big"),
                Value::BigInt(("-".to_string() + &"9".repeat(400)).into()),
            ),
            (sym("max"), Value::Int(i64::MAX)),
            (sym("min"), Value::Int(i64::MIN)),
            (sym("zero"), Value::Int(0)),
            (sym("nan"), Value::Float(f64::NAN)),
            (sym("inf"), Value::Float(f64::INFINITY)),
            (sym("ninf"), Value::Float(f64::NEG_INFINITY)),
            (sym("negzero"), Value::Float(-0.0)),
            (sym("tiny"), Value::Float(5e-324)),
            (sym("fzero"), Value::Float(0.0)),
            (sym("false"), Value::Bool(false)),
            (sym("deep"), deep),
            (sym("deep_hash"), deep_hash),
            (sym("many"), hash(many)),
            (
                sym("nested"),
                Value::Array(vec![
                    Value::Nil,
                    hash(vec![]),
                    Value::Array(vec![]),
                    hash(vec![(Value::Nil, Value::Nil), (Value::Nil, s("dup"))]),
                    Value::Str(Str::new(vec![0xe9], Encoding::Other(3))),
                    s("long ".repeat(100).as_str()),
                ]),
            ),
            (Value::Float(1.5), sym("")),
            (Value::Array(vec![Value::Int(1)]), Value::Bool(true)),
        ]),
        at(1_700_000_000, 10),
    ));
    let step = |name: &str, extra: Value| {
        Event::new(
            Str::utf8(name),
            task_key(1),
            hash(vec![
                (sym("task_id"), Value::Int(1)),
                (sym("workflow_step_id"), Value::Int(5)),
                (sym("v"), extra),
            ]),
            at(1_700_000_000, 20),
        )
    };
    b.ingest(step("step.before_", s("before")));
    b.ingest(step("step.after_", Value::Float(f64::NAN)));
    b.ingest(step("step.after_orphan", Value::Nil));
    b.ingest(Event::new(
        Str::utf8("task.failed"),
        task_key(1),
        hash(vec![
            (sym("task_id"), Value::Int(1)),
            (
                sym("error"),
                Value::Str(Str::new(vec![b'x', 0xff], Encoding::Binary)),
            ),
        ]),
        at(1_700_000_000, 30),
    ));
    // An empty name, an empty payload, a generic event.
    b.ingest(Event::new(
        Str::utf8(".started"),
        task_key(2),
        hash(vec![(sym("task_id"), Value::Int(2))]),
        at(1_700_000_001, 0),
    ));
    b.ingest(Event::new(
        Str::utf8(""),
        tasker_trace_core::input::backend::KeySource::Fresh,
        hash(vec![]),
        at(1_700_000_002, 0),
    ));
    // A start before the epoch (clamped to 0 in times).
    b.ingest(Event::new(
        Str::utf8("old.started"),
        task_key(3),
        hash(vec![(sym("task_id"), Value::Int(3))]),
        Stamp {
            wall_ns: -5,
            mono_ns: 0,
        },
    ));
    b.ingest(Event::new(
        Str::utf8("old.completed"),
        task_key(3),
        hash(vec![(sym("task_id"), Value::Int(3))]),
        Stamp {
            wall_ns: 0,
            mono_ns: 1,
        },
    ));
    b
}

#[test]
fn hostile_payloads_encode_exactly_as_prost_does() {
    let req = assert_identical(&hostile_store(), &[]);
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    let root = &spans[0];
    assert_eq!(root.name, "\u{fffd}\u{fffd}bad");
    let big = root
        .attributes
        .iter()
        .find(|kv| kv.key == "tasker.big")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(
        big,
        Some(Av::StringValue("-".to_string() + &"9".repeat(400)))
    );
    assert!(spans.iter().any(|s| s.name.is_empty()));
}

fn owned_spans() -> Vec<OwnedSpan> {
    vec![
        OwnedSpan {
            trace_id: [7; 16],
            span_id: [1, 2, 3, 4, 5, 6, 7, 8],
            parent_span_id: Some([9; 8]),
            name: "lifecycle.step ☃".to_string(),
            kind: SPAN_KIND_INTERNAL,
            start_time_unix_nano: 1_700_000_000_000_000_001,
            end_time_unix_nano: 1_700_000_000_500_000_000,
            attributes: vec![
                KeyValue::new("s", AttributeValue::String("text".into())),
                KeyValue::new("empty", AttributeValue::String(String::new())),
                KeyValue::new("i", AttributeValue::Int(-42)),
                KeyValue::new("d", AttributeValue::Double(2.5)),
                KeyValue::new("nan", AttributeValue::Double(f64::NAN)),
                KeyValue::new("b", AttributeValue::Bool(true)),
                KeyValue::new(
                    "a",
                    AttributeValue::Array(vec![
                        AttributeValue::Int(1),
                        AttributeValue::Array(vec![AttributeValue::Bool(false)]),
                        AttributeValue::Array(vec![]),
                    ]),
                ),
                KeyValue::new("", AttributeValue::Int(0)),
            ],
            events: vec![
                OwnedEvent {
                    time_unix_nano: 1_700_000_000_100_000_000,
                    name: "retry".into(),
                    attributes: vec![KeyValue::new("attempt", AttributeValue::Int(2))],
                    dropped_attributes_count: 0,
                },
                OwnedEvent {
                    time_unix_nano: 0,
                    name: String::new(),
                    attributes: vec![],
                    dropped_attributes_count: 0,
                },
            ],
            links: vec![SpanLink {
                trace_id: [3; 16],
                span_id: [4; 8],
            }],
            status: Some((STATUS_CODE_ERROR, "step failed".into())),
            dropped_attributes_count: 0,
            dropped_events_count: 0,
            dropped_links_count: 0,
        },
        OwnedSpan {
            trace_id: [8; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name: String::new(),
            kind: SPAN_KIND_INTERNAL,
            start_time_unix_nano: 5,
            end_time_unix_nano: 3,
            attributes: vec![],
            events: vec![],
            links: vec![],
            status: Some((STATUS_CODE_OK, String::new())),
            dropped_attributes_count: 0,
            dropped_events_count: 0,
            dropped_links_count: 0,
        },
    ]
}

#[test]
fn owned_spans_share_a_request_with_records_in_both_formats() {
    let extra = owned_spans();
    let req = assert_identical(&rich_store(), &extra);
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 4 + 2);
    // The extra spans come first, then the records'.
    let first = &spans[0];
    assert_eq!(first.name, "lifecycle.step ☃");
    assert_eq!(first.parent_span_id, vec![9; 8]);
    assert_eq!(first.links.len(), 1);
    assert_eq!(first.events[0].name, "retry");
    assert_eq!(
        first.status.as_ref().map(|s| (s.code, s.message.as_str())),
        Some((2, "step failed"))
    );
    let nan = first
        .attributes
        .iter()
        .find(|kv| kv.key == "nan")
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value);
    assert_eq!(nan, Some(Av::StringValue("NaN".into())));
    // An end before the start is written as the start.
    assert_eq!(spans[1].end_time_unix_nano, 5);
    assert_eq!(spans[2].name, "task");
}

#[test]
fn only_owned_spans_make_a_request_too() {
    let req = assert_identical(&Backend::new("h"), &owned_spans());
    assert_eq!(span_count(&req), 2);
}

#[test]
fn split_requests_hold_every_span_once_and_stay_under_the_limit() {
    let b = Backend::new("h");
    for i in 0..120 {
        finished_task(&b, i);
    }
    let records = select(&b, false, false);
    let now = Stamp::now();
    for protocol in [Protocol::HttpProtobuf, Protocol::HttpJson] {
        let whole = encode_request(&records, &owned_spans(), &resource(), now, protocol).unwrap();
        let limit = 4_096;
        let mut enc = Encoder::with_limit(protocol, &resource(), limit).unwrap();
        for span in owned_spans() {
            enc.span(&span.view()).unwrap();
        }
        for (key, rec) in &records {
            enc.record(key, rec, now).unwrap();
        }
        assert_eq!(enc.oversized(), 0);
        let bodies = enc.finish();
        assert!(bodies.len() > 5, "{} bodies", bodies.len());
        let decode = |bytes: &[u8]| match protocol {
            Protocol::HttpProtobuf => ExportTraceServiceRequest::decode(bytes).expect("decodes"),
            Protocol::HttpJson => validate(bytes),
        };
        // The record of each span of the whole export: the two extra spans
        // have none, then two spans per task.
        let owner: Vec<Option<usize>> = [None, None]
            .into_iter()
            .chain((0..records.len()).flat_map(|r| [Some(r), Some(r)]))
            .collect();
        let mut spans = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            assert!(
                body.bytes().len() <= limit,
                "body {i}: {}",
                body.bytes().len()
            );
            let req = decode(body.bytes());
            assert_eq!(span_count(&req), body.spans);
            let first_owner = owner[spans.len()].unwrap_or(0);
            assert_eq!(body.first_record, first_owner, "body {i}");
            assert_eq!(body.has_extra, owner[spans.len()].is_none(), "body {i}");
            spans.extend(req.resource_spans[0].scope_spans[0].spans.clone());
        }
        let all = decode(&whole).resource_spans[0].scope_spans[0]
            .spans
            .clone();
        assert_eq!(spans, all, "{protocol:?}: the same spans in the same order");
    }
}

#[test]
fn a_span_too_large_for_any_request_goes_alone_in_its_own() {
    let b = Backend::new("h");
    finished_task(&b, 1);
    event(
        &b,
        "big.started",
        task_key(2),
        hash(vec![(sym("blob"), s(&"x".repeat(10_000)))]),
        at(1, 0),
    );
    event(&b, "big.completed", task_key(2), hash(vec![]), at(1, 1));
    finished_task(&b, 3);
    let records = select(&b, false, false);
    let mut enc = Encoder::with_limit(Protocol::HttpProtobuf, &resource(), 2_000).unwrap();
    for (key, rec) in &records {
        enc.record(key, rec, Stamp::now()).unwrap();
    }
    assert_eq!(enc.oversized(), 1);
    let bodies = enc.finish();
    let sizes: Vec<(usize, usize)> = bodies.iter().map(|b| (b.spans, b.bytes().len())).collect();
    assert!(
        sizes.iter().filter(|(_, len)| *len > 2_000).eq([&sizes[1]]),
        "only the lone span's request passes the limit: {sizes:?}"
    );
    assert_eq!(sizes[1].0, 1, "{sizes:?}");
    let names: Vec<String> = bodies
        .iter()
        .flat_map(|b| {
            ExportTraceServiceRequest::decode(b.bytes())
                .unwrap()
                .resource_spans[0]
                .scope_spans[0]
                .spans
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(names, ["task", "step.handle", "big", "task", "step.handle"]);
}

/// The span limits cut the store's spans and the owned ones alike, in both
/// formats, and the OTLP `dropped_*_count` fields say how much.
#[test]
fn span_limits_cut_both_sources_in_both_formats() {
    use tasker_trace_core::encode::limits::cuts;
    use tasker_trace_core::encode::{Resource, SpanLimits};
    let b = Backend::new("h");
    let attrs: Vec<(Value, Value)> = (0..6)
        .map(|i| (sym(&format!("k{i}")), s("abcdefghij")))
        .collect();
    event(
        &b,
        "task.started",
        task_key(1),
        hash(attrs),
        at(1_700_000_000, 0),
    );
    for i in 0..4 {
        let name = format!("step.before_note{i}");
        event(
            &b,
            &name,
            task_key(1),
            hash(vec![(sym("a"), s("1")), (sym("b"), s("2"))]),
            at(1_700_000_000, 1 + i),
        );
    }
    event(
        &b,
        "task.completed",
        task_key(1),
        hash(vec![]),
        at(1_700_000_000, 9),
    );
    let mut owned = owned_spans();
    let limits = SpanLimits {
        attribute_value_length: Some(3),
        attribute_count: 3,
        span_event_count: 2,
        span_link_count: 0,
        event_attribute_count: Some(1),
        ..SpanLimits::DEFAULT
    };
    for span in &mut owned {
        tasker_trace_core::encode::span::limit_owned_span(span, &limits);
    }
    let resource = Resource {
        span_limits: limits,
        ..resource()
    };
    let records = select(&b, false, true);
    let before = cuts();
    let json = encode_request(
        &records,
        &owned,
        &resource,
        at(1_800_000_000, 0),
        Protocol::HttpJson,
    )
    .unwrap();
    let proto = encode_request(
        &records,
        &owned,
        &resource,
        at(1_800_000_000, 0),
        Protocol::HttpProtobuf,
    )
    .unwrap();
    let after = cuts();
    let from_json = parse(&json);
    let decoded = ExportTraceServiceRequest::decode(&proto[..]).unwrap();
    assert_eq!(decoded, from_json, "both formats say the same");
    let spans = &decoded.resource_spans[0].scope_spans[0].spans;
    let root = spans
        .iter()
        .find(|s| s.name == "task")
        .expect("the store's root");
    // trace_key, k0, k1 kept; k2..k5 left out.
    assert_eq!(root.attributes.len(), 3);
    assert_eq!(root.dropped_attributes_count, 4);
    assert_eq!(
        root.attributes[1].value.as_ref().unwrap().value,
        Some(Av::StringValue("abc".into()))
    );
    assert_eq!(root.events.len(), 2);
    assert_eq!(root.dropped_events_count, 2);
    assert!(root
        .events
        .iter()
        .all(|e| e.attributes.len() == 1 && e.dropped_attributes_count == 1));
    let lifecycle = spans.iter().find(|s| s.name == "lifecycle.step ☃").unwrap();
    assert_eq!(lifecycle.attributes.len(), 3);
    assert_eq!(lifecycle.dropped_attributes_count, 5);
    assert_eq!(
        lifecycle.attributes[0].value.as_ref().unwrap().value,
        Some(Av::StringValue("tex".into()))
    );
    assert!(lifecycle.links.is_empty());
    assert_eq!(lifecycle.dropped_links_count, 1);
    // Counted at each encoding (twice here for the store's spans); other
    // tests may encode meanwhile, so at least.
    assert!(after.span_attributes - before.span_attributes >= 2 * 4);
    assert!(after.span_events - before.span_events >= 2 * 2);
    assert!(after.event_attributes - before.event_attributes >= 2 * 2);
    assert!(after.attribute_value_length - before.attribute_value_length >= 2 * 2);
}
