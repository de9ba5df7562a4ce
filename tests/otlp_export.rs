//! The OTLP/HTTP JSON export, validated by parsing it with the OTLP reference
//! types (opentelemetry-proto), re-serialising, and requiring every key and
//! value to survive; then the mapping, rule by rule.

mod otlp_support;

use std::sync::Arc;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use otlp_support::*;
use tasker_trace_core::encode::encode_request;
use tasker_trace_core::export;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::support::protocol::Protocol;
use tasker_trace_core::value::{Encoding, Str, Value};

fn spans(
    req: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> Vec<Span> {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> &'a Av {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .unwrap_or_else(|| panic!("attribute {key} missing in {attrs:?}"))
}

fn kv_list(v: &Av) -> &[KeyValue] {
    match v {
        Av::KvlistValue(l) => &l.values,
        other => panic!("not a kvlist: {other:?}"),
    }
}

fn array(v: &Av) -> &[AnyValue] {
    match v {
        Av::ArrayValue(a) => &a.values,
        other => panic!("not an array: {other:?}"),
    }
}

fn export_all(b: &Backend, include_open: bool) -> Vec<u8> {
    let records = select(b, false, include_open);
    encode_request(
        &records,
        &[],
        &resource(),
        tasker_trace_core::support::clock::Stamp::now(),
        Protocol::HttpJson,
    )
    .expect("encodes")
}

#[test]
fn export_parses_as_otlp_and_every_key_and_value_survives() {
    let b = rich_store();
    let json = export_all(&b, true);
    let req = validate(&json);
    assert_eq!(req.resource_spans.len(), 1);
    // Root + 1 child (the unpaired ones become events) + generic + open root.
    assert_eq!(spans(&req).len(), 4);
}

#[test]
fn json_follows_the_otlp_json_rules() {
    let b = rich_store();
    let json = raw(&export_all(&b, false));
    let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    let trace_id = span["traceId"].as_str().expect("hex string");
    assert_eq!(trace_id.len(), 32);
    assert!(trace_id
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    assert_eq!(span["spanId"].as_str().map(str::len), Some(16));
    assert!(
        span["startTimeUnixNano"].is_string(),
        "64-bit times are strings"
    );
    assert_eq!(span["kind"], serde_json::json!(1), "enums are integers");
    assert_eq!(span["status"]["code"], serde_json::json!(2));
    let task_id = span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == "tasker.task_id"))
        .expect("task id attribute");
    assert_eq!(task_id["value"], serde_json::json!({"intValue": "42"}));
    // No snake_case keys anywhere.
    let text = String::from_utf8(export_all(&b, true)).expect("utf-8");
    for bad in [
        "trace_id",
        "span_id",
        "start_time_unix_nano",
        "resource_spans",
        "int_value",
    ] {
        assert!(!text.contains(&format!("\"{bad}\"")), "{bad} in output");
    }
}

#[test]
fn resource_and_scope_describe_the_process() {
    let b = rich_store();
    let req = validate(&export_all(&b, false));
    let rs = &req.resource_spans[0];
    let attrs = &rs.resource.as_ref().expect("resource").attributes;
    let text = |k: &str| match attr(attrs, k) {
        Av::StringValue(s) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("service.name"), "orders");
    assert_eq!(text("host.name"), "test-host");
    assert_eq!(text("telemetry.sdk.name"), "tasker_trace_native");
    assert_eq!(text("telemetry.sdk.language"), "ruby");
    assert_eq!(text("telemetry.sdk.version"), "9.8.7");
    assert_eq!(text("deployment.environment"), "test");
    assert_eq!(attr(attrs, "process.pid"), &Av::IntValue(4242));
    let scope = rs.scope_spans[0].scope.as_ref().expect("scope");
    assert_eq!(scope.name, "tasker_trace_native");
    assert_eq!(scope.version, "9.8.7");
}

#[test]
fn user_resource_attributes_replace_detected_ones_but_not_the_service_name() {
    let b = rich_store();
    let mut r = resource();
    r.attributes = vec![
        ("host.name".to_string(), s("pod-7")),
        ("service.name".to_string(), s("ignored")),
        ("replicas".to_string(), Value::Int(3)),
    ];
    let records = select(&b, false, false);
    let json = encode_request(
        &records,
        &[],
        &r,
        tasker_trace_core::support::clock::Stamp::now(),
        Protocol::HttpJson,
    )
    .unwrap();
    let req = validate(&json);
    let attrs = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
    assert_eq!(attr(attrs, "host.name"), &Av::StringValue("pod-7".into()));
    assert_eq!(
        attr(attrs, "service.name"),
        &Av::StringValue("orders".into())
    );
    assert_eq!(attr(attrs, "replicas"), &Av::IntValue(3));
    let mut keys: Vec<_> = attrs.iter().map(|kv| kv.key.clone()).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "resource attribute keys are unique");
}

#[test]
fn root_span_carries_the_start_payload_times_and_status() {
    let b = rich_store();
    let req = validate(&export_all(&b, false));
    let all = spans(&req);
    let root = &all[0];
    assert_eq!(root.name, "task");
    assert_eq!(root.kind, 1);
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.start_time_unix_nano, 1_700_000_000_000_000_000);
    // 2.5 s later on the monotonic clock.
    assert_eq!(root.end_time_unix_nano, 1_700_000_002_500_000_000);
    let status = root.status.as_ref().expect("status");
    assert_eq!(status.code, 2);
    assert_eq!(status.message, "payment declined");

    let a = &root.attributes;
    assert_eq!(
        attr(a, "tasker.trace_key"),
        &Av::StringValue("task_42".into())
    );
    assert_eq!(attr(a, "tasker.task_id"), &Av::IntValue(42));
    assert_eq!(attr(a, "tasker.negative"), &Av::IntValue(i64::MIN));
    assert_eq!(
        attr(a, "tasker.big"),
        &Av::StringValue("123456789012345678901234567890".into())
    );
    assert_eq!(attr(a, "tasker.ratio"), &Av::DoubleValue(0.25));
    assert_eq!(attr(a, "tasker.nan"), &Av::StringValue("NaN".into()));
    assert_eq!(attr(a, "tasker.inf"), &Av::StringValue("Infinity".into()));
    assert_eq!(attr(a, "tasker.ninf"), &Av::StringValue("-Infinity".into()));
    assert_eq!(attr(a, "tasker.flag"), &Av::BoolValue(true));
    assert_eq!(attr(a, "tasker.off"), &Av::BoolValue(false));
    assert_eq!(attr(a, "tasker.state"), &Av::StringValue("pending".into()));
    assert_eq!(
        attr(a, "tasker.unicode"),
        &Av::StringValue("naïve ☃ \"quoted\" \\ \n tab\t".into())
    );
    assert_eq!(
        attr(a, "tasker.raw"),
        &Av::BytesValue(vec![0xff, 0x00, 0xfe, b'a'])
    );
    assert_eq!(
        attr(a, "tasker.latin1"),
        &Av::BytesValue(vec![b'c', b'a', b'f', 0xe9])
    );
    assert_eq!(
        attr(a, "tasker.string_key"),
        &Av::StringValue("kept".into())
    );
    // nil is an AnyValue with nothing set.
    let none = a
        .iter()
        .find(|kv| kv.key == "tasker.none")
        .expect("nil attribute");
    assert!(none.value.as_ref().is_none_or(|v| v.value.is_none()));
    assert!(array(attr(a, "tasker.empty_list")).is_empty());
    assert!(kv_list(attr(a, "tasker.empty_hash")).is_empty());

    let ctx = kv_list(attr(a, "tasker.context"));
    assert_eq!(attr(ctx, "customer"), &Av::StringValue("c-1".into()));
    assert_eq!(attr(ctx, "7"), &Av::StringValue("integer key".into()));
    let items = array(attr(ctx, "items"));
    assert_eq!(items[0].value, Some(Av::IntValue(1)));
    assert_eq!(items[1].value, Some(Av::StringValue("two".into())));
    assert_eq!(items[2].value, None);
    assert_eq!(
        attr(kv_list(attr(ctx, "nested")), "deep"),
        &Av::DoubleValue(1.5)
    );
}

#[test]
fn bytes_values_are_standard_base64_in_the_json() {
    let b = rich_store();
    let text = String::from_utf8(export_all(&b, false)).unwrap();
    let expected = base64::engine::general_purpose::STANDARD.encode([0xff, 0x00, 0xfe, b'a']);
    assert!(text.contains(&format!("{{\"bytesValue\":\"{expected}\"}}")));
}

#[test]
fn before_and_after_pair_into_child_spans_and_the_rest_become_events() {
    let b = rich_store();
    let req = validate(&export_all(&b, false));
    let all = spans(&req);
    let root = &all[0];
    let child = &all[1];
    assert_eq!(child.name, "step.handle");
    assert_eq!(child.trace_id, root.trace_id);
    assert_eq!(child.parent_span_id, root.span_id);
    assert_ne!(child.span_id, root.span_id);
    assert_eq!(child.start_time_unix_nano, 1_700_000_000_100_000_000);
    assert_eq!(child.end_time_unix_nano, 1_700_000_000_300_000_000);
    assert_eq!(
        attr(&child.attributes, "tasker.workflow_step_id"),
        &Av::IntValue(1)
    );
    assert_eq!(
        attr(&child.attributes, "tasker.result"),
        &Av::StringValue("ok".into())
    );

    // Step 2's before and the after_retry have no partner: events on the root,
    // then the finish event.
    let names: Vec<_> = root.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["step.before_handle", "step.after_retry", "task.failed"]
    );
    assert_eq!(root.events[0].time_unix_nano, 1_700_000_000_150_000_000);
    assert_eq!(
        attr(&root.events[0].attributes, "tasker.workflow_step_id"),
        &Av::IntValue(2)
    );
    assert_eq!(
        attr(&root.events[2].attributes, "tasker.error_message"),
        &Av::StringValue("payment declined".into())
    );
}

#[test]
fn generic_events_are_zero_length_spans_in_their_own_trace() {
    let b = rich_store();
    let req = validate(&export_all(&b, false));
    let all = spans(&req);
    let generic = all
        .iter()
        .find(|s| s.name == "workflow.viable_steps_discovered")
        .expect("generic span");
    assert_eq!(generic.start_time_unix_nano, generic.end_time_unix_nano);
    assert_eq!(generic.start_time_unix_nano, 1_700_000_001_000_000_000);
    assert_ne!(generic.trace_id, all[0].trace_id);
    assert!(generic.parent_span_id.is_empty());
    assert!(generic.status.is_none());
    match attr(&generic.attributes, "tasker.trace_key") {
        Av::StringValue(k) => assert!(k.starts_with("generic_1700000001.")),
        other => panic!("{other:?}"),
    }
    assert_eq!(attr(&generic.attributes, "tasker.count"), &Av::IntValue(3));
}

#[test]
fn open_traces_only_with_include_open_and_then_without_status() {
    let b = rich_store();
    let closed = spans(&validate(&export_all(&b, false)));
    assert!(closed
        .iter()
        .all(|s| s.name != "task" || s.status.is_some()));
    assert_eq!(closed.iter().filter(|s| s.name == "task").count(), 1);
    let open = spans(&validate(&export_all(&b, true)));
    let roots: Vec<_> = open.iter().filter(|s| s.name == "task").collect();
    assert_eq!(roots.len(), 2);
    assert!(roots[1].status.is_none());
    assert!(roots[1].end_time_unix_nano >= roots[1].start_time_unix_nano);
}

#[test]
fn success_status_is_ok_without_a_message() {
    let b = Backend::new("h");
    finished_task(&b, 1);
    let all = spans(&validate(&export_all(&b, false)));
    assert_eq!(all.len(), 2);
    let st = all[0].status.as_ref().unwrap();
    assert_eq!((st.code, st.message.as_str()), (1, ""));
    let raw = raw(&export_all(&b, false));
    assert!(
        raw["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["status"]
            .get("message")
            .is_none()
    );
}

#[test]
fn ids_stay_the_same_across_exports_and_differ_between_traces() {
    let b = Backend::new("h");
    for i in 0..50 {
        finished_task(&b, i);
    }
    let one = spans(&validate(&export_all(&b, false)));
    let two = spans(&validate(&export_all(&b, false)));
    let ids = |v: &[Span]| {
        v.iter()
            .map(|s| (s.trace_id.clone(), s.span_id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&one), ids(&two));
    let mut traces: Vec<_> = one
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| s.trace_id.clone())
        .collect();
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 50);
}

#[test]
fn drain_removes_exactly_what_was_exported() {
    let b = rich_store();
    let export = export::encode_export(
        export::Sources::store(&b),
        true,
        false,
        &resource(),
        Protocol::HttpJson,
    )
    .expect("export");
    assert_eq!(export.records.len(), 2);
    assert_eq!(spans(&validate(&export.body)).len(), 3);
    // The open trace stays; a second drain finds nothing complete.
    assert_eq!(b.len(), 1);
    let again = export::encode_export(
        export::Sources::store(&b),
        true,
        false,
        &resource(),
        Protocol::HttpJson,
    )
    .expect("export");
    assert!(again.records.is_empty());
    assert!(spans(&validate(&again.body)).is_empty());
    // include_open takes the rest.
    let rest = export::encode_export(
        export::Sources::store(&b),
        true,
        true,
        &resource(),
        Protocol::HttpJson,
    )
    .expect("export");
    assert_eq!(rest.records.len(), 1);
    assert!(b.is_empty());
}

#[test]
fn drain_under_concurrent_writers_exports_every_trace_once() {
    let b = Arc::new(Backend::new("h"));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..700 {
                    finished_task(&b, w * 10_000 + i);
                }
            })
        })
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut collect = |json: &[u8]| {
        for s in spans(&validate(json)) {
            if s.parent_span_id.is_empty() {
                match attr(&s.attributes, "tasker.trace_key") {
                    Av::StringValue(k) => seen.push(k.clone()),
                    other => panic!("{other:?}"),
                }
            }
        }
    };
    while writers.iter().any(|w| !w.is_finished()) {
        collect(
            &export::encode_export(
                export::Sources::store(&b),
                true,
                false,
                &resource(),
                Protocol::HttpJson,
            )
            .unwrap()
            .body,
        );
    }
    for w in writers {
        w.join().unwrap();
    }
    collect(
        &export::encode_export(
            export::Sources::store(&b),
            true,
            false,
            &resource(),
            Protocol::HttpJson,
        )
        .unwrap()
        .body,
    );
    assert_eq!(seen.len(), 2100, "every trace exported");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2100, "no trace exported twice");
}

#[test]
fn a_step_pair_overwrites_shared_keys_without_counting_them_dropped() {
    // Both payloads of a pair carry the keys that pair them: the
    // `.after_` values overwrite the `.before_` ones, as setting an
    // attribute again does in OpenTelemetry; nothing was dropped.
    let b = Backend::new("h");
    let step = |extra: (Value, Value)| {
        hash(vec![
            (sym("task_id"), Value::Int(1)),
            (sym("workflow_step_id"), Value::Int(7)),
            extra,
        ])
    };
    event(&b, "task.started", task_key(1), hash(vec![]), at(1, 0));
    event(
        &b,
        "step.before_handle",
        task_key(1),
        step((sym("state"), s("running"))),
        at(1, 1),
    );
    event(
        &b,
        "step.after_handle",
        task_key(1),
        step((sym("state"), s("done"))),
        at(1, 2),
    );
    event(&b, "task.completed", task_key(1), hash(vec![]), at(1, 3));
    let all = spans(&validate(&export_all(&b, false)));
    let pair = all
        .iter()
        .find(|s| s.name == "step.handle")
        .expect("the pair's span");
    assert_eq!(
        attr(&pair.attributes, "tasker.state"),
        &Av::StringValue("done".into())
    );
    assert_eq!(pair.attributes.len(), 3);
    assert_eq!(pair.dropped_attributes_count, 0);
}

#[test]
fn duplicate_attribute_keys_are_dropped_and_counted() {
    let b = Backend::new("h");
    event(
        &b,
        "task.started",
        task_key(1),
        hash(vec![
            (sym("task_id"), Value::Int(1)),
            (s("task_id"), Value::Int(2)),
            (sym("trace_key"), s("shadowed")),
        ]),
        at(1, 0),
    );
    event(&b, "task.completed", task_key(1), hash(vec![]), at(1, 1));
    let root = &spans(&validate(&export_all(&b, false)))[0];
    assert_eq!(attr(&root.attributes, "tasker.task_id"), &Av::IntValue(1));
    assert_eq!(
        attr(&root.attributes, "tasker.trace_key"),
        &Av::StringValue("task_1".into())
    );
    assert_eq!(root.dropped_attributes_count, 2);
    let keys: Vec<_> = root.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["tasker.trace_key", "tasker.task_id"]);
}

#[test]
fn deep_values_are_cut_at_the_depth_limit_without_overflow() {
    let mut v = s("bottom");
    for _ in 0..5_000 {
        v = Value::Array(vec![v]);
    }
    let b = Backend::new("h");
    event(
        &b,
        "task.started",
        task_key(1),
        hash(vec![(sym("deep"), v)]),
        at(1, 0),
    );
    event(&b, "task.completed", task_key(1), hash(vec![]), at(1, 1));
    let json = export_all(&b, false);
    let req = validate(&json);
    let mut any = attr(&spans(&req)[0].attributes, "tasker.deep").clone();
    let mut levels = 0;
    while let Av::ArrayValue(a) = any {
        levels += 1;
        any = a.values[0].value.clone().expect("value");
    }
    // The payload Hash is level 1, so 127 arrays fit below it.
    assert_eq!(levels, 127);
    assert_eq!(any, Av::StringValue("[depth limit]".into()));
}

#[test]
fn non_utf8_names_and_keys_are_made_valid_text() {
    let b = Backend::new("h");
    b.ingest(tasker_trace_core::input::backend::Event::new(
        Str::new(&b"caf\xe9.started"[..], Encoding::Binary),
        task_key(1),
        hash(vec![
            (sym("task_id"), Value::Int(1)),
            (
                Value::Str(Str::new(vec![b'k', 0xff], Encoding::Binary)),
                s("v"),
            ),
        ]),
        at(1, 0),
    ));
    b.ingest(tasker_trace_core::input::backend::Event::new(
        Str::utf8("x.completed"),
        task_key(1),
        hash(vec![]),
        at(1, 1),
    ));
    let root = &spans(&validate(&export_all(&b, false)))[0];
    assert_eq!(root.name, "caf\u{fffd}");
    assert_eq!(
        attr(&root.attributes, "tasker.k\u{fffd}"),
        &Av::StringValue("v".into())
    );
}
