//! Lifecycle runs in OTLP requests, together with the backend's records:
//! parsed with the OTLP reference types (JSON through serde, protobuf through
//! prost) with a lossless round trip, one trace id per run, parent ids that
//! point at the run's root, typed and prefixed attributes, and exports that
//! drain exactly once and put back what was not delivered.

mod lifecycle_support;
mod otlp_support;

use std::collections::BTreeMap;
use std::time::Duration;

use lifecycle_support as ls;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::trace::v1::Span as PSpan;
use otlp_support::*;
use prost::Message as _;
use tasker_trace_core::export::{self, PushOutcome, Sending, Sources};
use tasker_trace_core::input::lifecycle::AttrKey;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::model::lifecycle::Tracer;
use tasker_trace_core::support::protocol::Protocol;
use tasker_trace_core::transport::{Cancel, Compression, Destination, Transport};

/// Two finished runs of task 5 (the first re-enqueued, the second linked to
/// it and completed, with a retried step) and one of task 6 (failed).
fn tracer() -> Tracer {
    let t = ls::tracer();
    // Run 1 of task 5: started, one step done, then re-enqueued.
    ls::record_all(&t, vec![ls::start_requested(5, ls::at(0))]);
    ls::record_all(&t, ls::successful_attempt(5, 50, 1, 2, 4));
    t.record(ls::ev("task.initialize_requested", 5, ls::at(20)));
    // Run 2 of task 5: the step fails once, is retried, then succeeds.
    t.record(ls::start_requested(5, ls::at(30)));
    t.record(ls::step_ev(
        "step.execution_requested",
        5,
        51,
        1,
        ls::at(31),
    ));
    for ms in [35, 36, 37] {
        t.record(ls::step_failed(5, 51, 1, ls::at(ms)));
    }
    t.record(ls::step_ev("step.retry_requested", 5, 51, 1, ls::at(38)));
    ls::record_all(&t, ls::successful_attempt(5, 51, 2, 40, 3));
    t.record(
        ls::ev("workflow.steps_execution_completed", 5, ls::at(50))
            .with_attr(ls::extra("step_count"), 2),
    );
    t.record(ls::task_completed(5, ls::at(51), false));
    t.record(ls::task_completed(5, ls::at(52), true));
    // Task 6 fails; the message comes with the second task.failed.
    t.record(ls::start_requested(6, ls::at(60)));
    t.record(ls::step_ev(
        "step.execution_requested",
        6,
        60,
        1,
        ls::at(61),
    ));
    t.record(ls::step_failed(6, 60, 1, ls::at(62)));
    t.record(ls::task_failed(6, ls::at(63), None));
    t.record(ls::task_failed(6, ls::at(64), Some("step 60 failed")));
    t
}

fn backend() -> Backend {
    let b = Backend::new("h");
    finished_task(&b, 1);
    b
}

fn spans(req: &ExportTraceServiceRequest) -> Vec<PSpan> {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .collect()
}

fn lifecycle_spans(req: &ExportTraceServiceRequest) -> Vec<PSpan> {
    spans(req)
        .into_iter()
        .filter(|s| s.name.starts_with("tasker.") && s.name.ends_with(".execution"))
        .collect()
}

fn attr<'a>(span: &'a PSpan, key: &str) -> Option<&'a Av> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn int_attr(span: &PSpan, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Av::IntValue(n)) => Some(*n),
        _ => None,
    }
}

fn export(b: &Backend, t: &Tracer, drain: bool, open: bool, protocol: Protocol) -> Vec<u8> {
    export::encode_export(Sources::both(b, t), drain, open, &resource(), protocol)
        .expect("encodes")
        .body
}

/// Spans by trace id, in request order.
fn by_trace(spans: &[PSpan]) -> BTreeMap<Vec<u8>, Vec<PSpan>> {
    let mut traces: BTreeMap<Vec<u8>, Vec<PSpan>> = BTreeMap::new();
    for s in spans {
        traces
            .entry(s.trace_id.clone())
            .or_default()
            .push(s.clone());
    }
    traces
}

#[test]
fn runs_round_trip_through_the_reference_types_in_json_and_protobuf() {
    let (b, t) = (backend(), tracer());
    let json = export(&b, &t, false, false, Protocol::HttpJson);
    let from_json = validate(&json);
    // Lossless: prost re-encodes the parsed JSON to exactly our protobuf,
    // and decodes our protobuf to exactly the parsed JSON.
    let ours = export(&b, &t, false, false, Protocol::HttpProtobuf);
    assert_eq!(ours, from_json.encode_to_vec(), "protobuf bytes");
    let decoded = ExportTraceServiceRequest::decode(&ours[..]).expect("prost decodes it");
    assert_eq!(decoded, from_json);
    // 3 runs of 2 + 3 + 2 spans, then the backend's trace (root + child).
    let all = spans(&decoded);
    assert_eq!(lifecycle_spans(&decoded).len(), 7);
    assert_eq!(all.len(), 9);
}

#[test]
fn each_run_is_one_trace_whose_children_point_at_its_root() {
    let (b, t) = (backend(), tracer());
    let req = validate(&export(&b, &t, false, false, Protocol::HttpJson));
    let traces = by_trace(&lifecycle_spans(&req));
    assert_eq!(traces.len(), 3, "one trace id per run");
    let mut links = Vec::new();
    for spans in traces.values() {
        let roots: Vec<&PSpan> = spans
            .iter()
            .filter(|s| s.parent_span_id.is_empty())
            .collect();
        assert_eq!(roots.len(), 1, "one root per trace");
        let root = roots[0];
        assert_eq!(root.name, "tasker.task.execution");
        assert_eq!(root.kind, 1, "INTERNAL");
        // The keys' prefix is the tracer's (`tasker` by default), not the
        // resource's service name ("orders").
        let task = int_attr(root, "tasker.task_id").expect("typed task id");
        for child in spans.iter().filter(|s| !s.parent_span_id.is_empty()) {
            assert_eq!(child.name, "tasker.step.execution");
            assert_eq!(child.parent_span_id, root.span_id, "parent is the root");
            assert_eq!(int_attr(child, "tasker.task_id"), Some(task));
            assert!(child.start_time_unix_nano >= root.start_time_unix_nano);
            assert!(int_attr(child, "tasker.step_id").is_some());
        }
        let ids: std::collections::HashSet<_> = spans.iter().map(|s| s.span_id.clone()).collect();
        assert_eq!(ids.len(), spans.len(), "span ids unique in a trace");
        links.extend(
            root.links
                .iter()
                .map(|l| (l.trace_id.clone(), l.span_id.clone())),
        );
    }
    // The second run of task 5 links to the first, which ended pending.
    assert_eq!(links.len(), 1);
    let (trace_id, span_id) = &links[0];
    let first = &traces[trace_id];
    assert_eq!(&first[0].span_id, span_id);
    assert_eq!(first[0].status, None, "pending: UNSET");
    assert_eq!(
        first[0].events.last().map(|e| e.name.as_str()),
        Some("task.pending")
    );
}

#[test]
fn statuses_attributes_events_and_times_are_the_runs() {
    let (b, t) = (backend(), tracer());
    // The `attribute_prefix` setting names the prefix.
    t.set_attribute_prefix(Some("orders"), None);
    let runs = t.snapshot(false);
    let req = validate(&export(&b, &t, false, false, Protocol::HttpJson));
    let traces = by_trace(&lifecycle_spans(&req));
    let completed = &traces[&runs[1].trace_id.to_vec()];
    let root = &completed[0];
    assert_eq!(root.status.as_ref().map(|s| s.code), Some(1), "OK");
    assert_eq!(int_attr(root, "orders.total_steps"), Some(3));
    assert!(
        matches!(attr(root, "orders.task_name"), Some(Av::StringValue(s)) if s == "order_fulfillment")
    );
    // The run's last event, the second task.completed (52 ms), ends the
    // root: 52 - 30 ms.
    assert_eq!(
        root.end_time_unix_nano - root.start_time_unix_nano,
        22_000_000
    );
    let names: Vec<&str> = root.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["step.retry_requested", "workflow.steps_execution_completed"]
    );
    let ev = &root.events[1];
    assert_eq!(ev.time_unix_nano - root.start_time_unix_nano, 20_000_000);
    assert!(ev.attributes.iter().any(|kv| kv.key == "orders.step_count"));
    // The failed attempt and its retry: two spans for step 51.
    let failed = &completed[1];
    let status = failed.status.as_ref().expect("status");
    assert_eq!(
        (status.code, status.message.as_str()),
        (2, "connection refused")
    );
    assert!(
        matches!(attr(failed, "orders.exception_class"), Some(Av::StringValue(s)) if s == "Net::OpenTimeout")
    );
    assert_eq!(
        failed.end_time_unix_nano - failed.start_time_unix_nano,
        4_000_000
    );
    let retried = &completed[2];
    assert_eq!(int_attr(retried, "orders.attempt_number"), Some(2));
    assert_eq!(retried.events.len(), 1);
    assert_eq!(retried.events[0].name, "step.before_handle");
    // Task 6: ERROR with the message of the second task.failed.
    let failed_run = &traces[&runs[2].trace_id.to_vec()];
    let status = failed_run[0].status.as_ref().expect("status");
    assert_eq!(
        (status.code, status.message.as_str()),
        (2, "step 60 failed")
    );
}

#[test]
fn a_drain_exports_each_run_once_and_open_runs_stay_until_they_end() {
    let (b, t) = (backend(), tracer());
    t.record(ls::start_requested(9, ls::at(70)));
    t.record(ls::step_ev(
        "step.execution_requested",
        9,
        90,
        1,
        ls::at(71),
    ));
    // Without drain: the same finished runs every time; the open one is left out.
    for _ in 0..2 {
        let req = validate(&export(&b, &t, false, false, Protocol::HttpJson));
        assert_eq!(by_trace(&lifecycle_spans(&req)).len(), 3);
    }
    // include_open: the open run too, its open spans ending at the export.
    let req = validate(&export(&b, &t, true, true, Protocol::HttpJson));
    let traces = by_trace(&lifecycle_spans(&req));
    assert_eq!(traces.len(), 4);
    assert_eq!(t.stats().finished_runs, 0, "finished runs drained");
    assert_eq!(t.stats().open_runs, 1, "the open run stays");
    assert_eq!(
        b.stats().active_traces,
        0,
        "the backend's records drained too"
    );
    // Nothing finished is left; the open run comes whole once it ends.
    let req = validate(&export(&b, &t, true, false, Protocol::HttpJson));
    assert!(lifecycle_spans(&req).is_empty());
    t.record(ls::step_ev("step.completed", 9, 90, 1, ls::at(75)));
    t.record(ls::task_completed(9, ls::at(76), true));
    let req = validate(&export(&b, &t, true, false, Protocol::HttpJson));
    let spans = lifecycle_spans(&req);
    assert_eq!(spans.len(), 2);
    assert_eq!(
        spans[1].end_time_unix_nano - spans[1].start_time_unix_nano,
        4_000_000
    );
    let again = validate(&export(&b, &t, true, true, Protocol::HttpJson));
    assert!(lifecycle_spans(&again).is_empty(), "exactly once");
    // Late duplicates of an exported run are counted, not exported.
    t.record(ls::task_completed(9, ls::at(77), true));
    assert_eq!(t.stats().events_late, 1);
}

fn transport(url: &str) -> Transport {
    Transport::new(Destination {
        timeout: Duration::from_millis(2_000),
        protocol: Protocol::HttpProtobuf,
        compression: Compression::Gzip,
        ..Destination::new(url)
    })
    .expect("transport")
}

#[test]
fn a_push_delivers_runs_with_the_records_and_puts_them_back_on_failure() {
    let (b, t) = (backend(), tracer());
    // 500 is not retried: the push fails at once and everything goes back.
    let refusing = Collector::start(vec![Reply::status(500).body("{}")]);
    let cancel = Cancel::for_current_thread();
    let outcome = export::push(
        Sources::both(&b, &t),
        &resource(),
        Sending::PushThread(&transport(&refusing.url), &SENDER),
        &cancel,
        Duration::ZERO,
    );
    match outcome {
        PushOutcome::Failed {
            records,
            delivered,
            runs_delivered,
            status,
            ..
        } => {
            assert_eq!((records, delivered, runs_delivered), (4, 0, 0));
            assert_eq!(status, Some(500));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(t.stats().finished_runs, 3, "runs put back");
    assert_eq!(b.stats().active_traces, 1, "records put back");
    let collector = Collector::start(vec![Reply::status(200)]);
    let outcome = export::push(
        Sources::both(&b, &t),
        &resource(),
        Sending::PushThread(&transport(&collector.url), &SENDER),
        &cancel,
        Duration::ZERO,
    );
    match outcome {
        PushOutcome::Sent { records, spans, .. } => assert_eq!((records, spans), (4, 9)),
        other => panic!("expected delivery, got {other:?}"),
    }
    let got = collector.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(by_trace(&lifecycle_spans(got[0].request())).len(), 3);
    assert_eq!(t.stats().finished_runs, 0);
    let nothing = export::push(
        Sources::both(&b, &t),
        &resource(),
        Sending::PushThread(&transport(&collector.url), &SENDER),
        &cancel,
        Duration::ZERO,
    );
    assert_eq!(nothing, PushOutcome::Nothing);
}

#[test]
fn a_push_leaves_runs_that_have_not_settled() {
    let (b, t) = (Backend::new("h"), Tracer::default());
    let now = tasker_trace_core::support::clock::Stamp::now();
    t.record(ls::start_requested(1, now));
    t.record(ls::ev("task.completed", 1, now).with_attr(AttrKey::TotalSteps, 0));
    let collector = Collector::start(vec![Reply::status(200)]);
    let cancel = Cancel::for_current_thread();
    let outcome = export::push(
        Sources::both(&b, &t),
        &resource(),
        Sending::PushThread(&transport(&collector.url), &SENDER),
        &cancel,
        Duration::from_secs(600),
    );
    assert_eq!(outcome, PushOutcome::Nothing);
    assert_eq!(t.stats().finished_runs, 1);
}

#[test]
fn a_failed_later_request_puts_back_only_the_runs_no_request_delivered() {
    let t = ls::tracer();
    for task in 1..=24_i64 {
        let ms = task as u64 * 10;
        ls::record_all(&t, vec![ls::start_requested(task, ls::at(ms))]);
        ls::record_all(&t, ls::successful_attempt(task, task * 10, 1, ms + 1, 2));
        t.record(ls::task_completed(task, ls::at(ms + 5), true));
    }
    let b = Backend::new("h");
    let refusing = Collector::start(vec![Reply::status(200), Reply::status(500)]);
    let cancel = Cancel::for_current_thread();
    let limited = transport(&refusing.url).with_request_limit(2_500);
    let outcome = export::push(
        Sources::both(&b, &t),
        &resource(),
        Sending::PushThread(&limited, &SENDER),
        &cancel,
        Duration::ZERO,
    );
    let got = refusing.requests();
    assert_eq!(got.len(), 2, "the push stops at the failed request");
    let first = by_trace(&spans(got[0].request()));
    // Each run went out whole: its root and its one attempt.
    assert!(first.values().all(|run| run.len() == 2), "{first:?}");
    match outcome {
        PushOutcome::Failed {
            records,
            delivered,
            runs_delivered,
            delivered_spans,
            ..
        } => {
            assert!(delivered > 0 && records > 0, "{delivered} / {records}");
            assert_eq!((delivered, records), (first.len(), 24 - first.len()));
            assert_eq!(runs_delivered, first.len());
            assert_eq!(delivered_spans, 2 * first.len());
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        t.stats().finished_runs,
        24 - first.len(),
        "only the rest put back"
    );
    let collector = Collector::start(vec![Reply::status(200)]);
    let outcome = export::push(
        Sources::both(&b, &t),
        &resource(),
        Sending::PushThread(
            &transport(&collector.url).with_request_limit(2_500),
            &SENDER,
        ),
        &cancel,
        Duration::ZERO,
    );
    assert!(matches!(outcome, PushOutcome::Sent { .. }), "{outcome:?}");
    let mut second = BTreeMap::new();
    for req in collector.requests() {
        second.extend(by_trace(&spans(req.request())));
    }
    // No run arrives twice, and none is lost.
    assert!(second.keys().all(|k| !first.contains_key(k)));
    assert_eq!(first.len() + second.len(), 24);
}
