//! Pushing to a collector: a scripted OTLP/HTTP receiver on 127.0.0.1, started
//! by each test, decompresses every body as its Content-Encoding says and
//! decodes it strictly with the OTLP reference types (prost for protobuf).

mod otlp_support;

use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use otlp_support::*;
use tasker_trace_core::encode::{Resource, SpanLimits};
use tasker_trace_core::export::PushOutcome;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::support::protocol::Protocol;
use tasker_trace_core::transport::{Cancel, Compression, Delivery, Destination, Transport};

/// Pushes `b`'s finished records to `url` with [`target`]'s settings.
fn push_to(b: &Backend, url: &str, timeout_ms: u64) -> PushOutcome {
    push_finished(
        b,
        &resource(),
        &target(url, timeout_ms),
        &Cancel::for_current_thread(),
    )
}

/// The defaults (http/protobuf, gzip) with a tenant header.
fn target(url: &str, timeout_ms: u64) -> Transport {
    Transport::new(Destination {
        headers: vec![("x-tenant".to_string(), "acme".to_string())],
        timeout: Duration::from_millis(timeout_ms),
        ..Destination::new(url)
    })
    .expect("transport")
}

fn json_target(url: &str, timeout_ms: u64) -> Transport {
    Transport::new(Destination {
        timeout: Duration::from_millis(timeout_ms),
        protocol: Protocol::HttpJson,
        compression: Compression::None,
        ..Destination::new(url)
    })
    .expect("transport")
}

fn sent(records: usize, spans: usize, attempts: u32) -> PushOutcome {
    PushOutcome::Sent {
        records,
        rejected_traces: 0,
        spans,
        status: 200,
        attempts,
        partial: None,
        rejected_spans: 0,
        requests: 1,
        oversized_spans: 0,
    }
}

/// Three finished traces and one open one.
fn store() -> Backend {
    let b = Backend::new("h");
    for i in 1..=3 {
        finished_task(&b, i);
    }
    event(
        &b,
        "task.started",
        task_key(99),
        hash(vec![(
            sym("task_id"),
            tasker_trace_core::value::Value::Int(99),
        )]),
        tasker_trace_core::support::clock::Stamp::now(),
    );
    b
}

fn keys(b: &Backend) -> Vec<String> {
    b.snapshot()
        .entries
        .iter()
        .map(|(k, _)| k.to_string_lossy())
        .collect()
}

#[test]
fn success_sends_finished_traces_once_and_keeps_open_ones() {
    let collector = Collector::start(vec![Reply::status(200)]);
    let b = store();
    let out = push_to(&b, &collector.url, 5_000);
    assert_eq!(out, sent(3, 6, 1));
    assert_eq!(keys(&b), ["task_99"]);
    let got = collector.requests();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/traces");
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(
        r.header("user-agent"),
        Some(concat!("tasker_trace_native/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(r.header("x-tenant"), Some("acme"));
    assert!(r.wire.len() < r.body.len(), "gzip made it smaller");
    assert_eq!(r.span_count(), 6);
    // Nothing left to send: no request at all.
    let again = push_to(&b, &collector.url, 5_000);
    assert_eq!(again, PushOutcome::Nothing);
    assert_eq!(collector.requests().len(), 1);
}

#[test]
fn retries_503_with_backoff_then_succeeds() {
    let collector = Collector::start(vec![Reply::status(503), Reply::status(200)]);
    let b = store();
    let out = push_to(&b, &collector.url, 5_000);
    match out {
        PushOutcome::Sent {
            status, attempts, ..
        } => assert_eq!((status, attempts), (200, 2)),
        other => panic!("{other:?}"),
    }
    let got = collector.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].wire, got[1].wire, "the same request is sent again");
    assert_eq!(got[1].span_count(), 6);
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(45), "backoff waited {gap:?}");
    assert_eq!(keys(&b), ["task_99"]);
}

#[test]
fn retry_after_is_honoured() {
    let collector = Collector::start(vec![
        Reply::status(429).header("Retry-After", "1"),
        Reply::status(200),
    ]);
    let b = store();
    let out = push_to(&b, &collector.url, 5_000);
    assert!(
        matches!(out, PushOutcome::Sent { attempts: 2, .. }),
        "{out:?}"
    );
    let got = collector.requests();
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
}

#[test]
fn a_retry_after_beyond_the_timeout_gives_up_at_once_and_keeps_the_traces() {
    // Seconds past the timeout, and past what the clock can add (a value
    // that overflows a u64 reads as the largest).
    for wait in ["30", "99999999999999999999", "18446744073709551615"] {
        let collector = Collector::start(vec![Reply::status(503).header("Retry-After", wait)]);
        let b = store();
        let out = push_to(&b, &collector.url, 2_000);
        match out {
            PushOutcome::Failed {
                records,
                status,
                attempts,
                error,
                ..
            } => {
                assert_eq!((records, status, attempts), (3, Some(503), 1), "{wait}");
                assert!(error.contains("would pass the timeout"), "{error}");
            }
            other => panic!("{wait}: {other:?}"),
        }
        assert_eq!(collector.requests().len(), 1);
        assert_eq!(b.len(), 4);
    }
}

#[test]
fn a_400_or_413_is_not_retried_and_what_it_carried_is_rejected_for_good() {
    // A 413 on a request too small to cut smaller is refused as a 400 is.
    for status in [400u16, 413] {
        let collector = Collector::start(vec![
            Reply::status(status).body(r#"{"message":"bad payload"}"#),
            Reply::status(200),
        ]);
        let b = store();
        let out = push_to(&b, &collector.url, 5_000);
        match out {
            PushOutcome::Sent {
                records,
                rejected_traces,
                rejected_spans,
                spans,
                status: got,
                attempts,
                partial,
                ..
            } => {
                assert_eq!((records, rejected_traces, spans), (3, 3, 0));
                assert_eq!((rejected_spans, got, attempts), (6, status, 1));
                let partial = partial.expect("the refusal is reported");
                assert!(partial.contains("bad payload"), "{partial}");
                assert!(partial.contains("not sent again"), "{partial}");
            }
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(collector.requests().len(), 1, "{status} retried");
        // Only the open trace is left: the refused ones never come back.
        assert_eq!(keys(&b), vec!["task_99".to_string()]);
    }
}

#[test]
fn a_refused_request_does_not_hold_back_the_ones_after_it() {
    let collector = Collector::start(vec![Reply::status(400), Reply::status(200)]);
    let b = tasks(40);
    let transport = target(&collector.url, 5_000).with_request_limit(3_000);
    let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
    let got = collector.requests();
    assert!(got.len() > 2, "{} requests", got.len());
    let refused = got[0].span_count() / 2;
    match out {
        PushOutcome::Sent {
            records,
            rejected_traces,
            rejected_spans,
            spans,
            ..
        } => {
            assert_eq!((records, rejected_traces), (40, refused));
            assert_eq!(rejected_spans, 2 * refused as u64);
            assert_eq!(spans, 80 - 2 * refused);
        }
        other => panic!("{other:?}"),
    }
    assert!(b.is_empty(), "nothing put back: {:?}", keys(&b));
}

#[test]
fn a_413_cuts_later_requests_smaller_and_keeps_what_it_carried() {
    let collector = Collector::start(vec![Reply::status(413), Reply::status(200)]);
    let b = tasks(2_000);
    let transport = target(&collector.url, 5_000);
    let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
    let first = collector.requests();
    assert_eq!(first.len(), 1);
    let refused_len = first[0].body.len();
    match out {
        PushOutcome::Failed {
            records,
            status,
            error,
            ..
        } => {
            assert_eq!((records, status), (2_000, Some(413)));
            assert!(error.contains("requests of at most"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    // The next push goes out in requests the collector takes.
    let (out, got) = pushed_again_smaller(&b, &transport, &collector, refused_len);
    assert!(got > 2, "{got} requests");
    match out {
        PushOutcome::Sent {
            records,
            rejected_traces,
            spans,
            ..
        } => assert_eq!((records, rejected_traces, spans), (2_000, 0, 4_000)),
        other => panic!("{other:?}"),
    }
    assert!(b.is_empty());
}

/// The request size limit a transport starts with.
const MAX_LIMIT: usize = tasker_trace_core::support::protocol::MAX_REQUEST_BODY;

/// After the 2,000 traces of `b` went in one request (`refused_len`
/// bytes) refused as too large: they were kept and the transport's limit
/// lowered; pushed again, they go in smaller requests. The second push's
/// outcome, and how many requests the collector got in all.
fn pushed_again_smaller(
    b: &Backend,
    transport: &Transport,
    collector: &Collector,
    refused_len: usize,
) -> (PushOutcome, usize) {
    assert_eq!(b.len(), 2_000, "kept for the next push");
    assert!(transport.request_limit() < MAX_LIMIT);
    let out = push_finished(b, &resource(), transport, &Cancel::for_current_thread());
    let got = collector.requests();
    assert!(got[1..].iter().all(|r| r.body.len() < refused_len));
    (out, got.len())
}

#[test]
fn the_collectors_400_for_a_body_over_its_limit_cuts_requests_and_keeps_the_traces() {
    // The OpenTelemetry Collector answers a body over its
    // max_request_body_size with a 400, not a 413: what the request
    // carried is not bad, and must not be dropped as refused.
    const {
        assert!(
            MAX_LIMIT < 20 * 1024 * 1024,
            "under the Collector's default limit"
        )
    };
    let too_large =
        Reply::status(400).body(r#"{"code":3,"message":"http: request body too large"}"#);
    let collector = Collector::start(vec![too_large, Reply::status(200)]);
    let b = tasks(2_000);
    let transport = target(&collector.url, 5_000);
    let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
    let refused_len = collector.requests()[0].body.len();
    match out {
        PushOutcome::Failed {
            records,
            status,
            rejected_traces,
            error,
            ..
        } => {
            assert_eq!((records, status, rejected_traces), (2_000, Some(400), 0));
            assert!(error.contains("request body too large"), "{error}");
            assert!(error.contains("requests of at most"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    let (out, _) = pushed_again_smaller(&b, &transport, &collector, refused_len);
    assert!(
        matches!(
            out,
            PushOutcome::Sent {
                records: 2_000,
                rejected_traces: 0,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(b.is_empty());
    // Any other 400 still refuses what its request carried, for good.
    let collector = Collector::start(vec![Reply::status(400).body(r#"{"message":"bad span"}"#)]);
    let b = store();
    let out = push_to(&b, &collector.url, 5_000);
    assert!(
        matches!(
            out,
            PushOutcome::Sent {
                rejected_traces: 3,
                ..
            }
        ),
        "{out:?}"
    );
}

#[test]
fn a_redirect_is_not_followed_and_says_where_it_points() {
    // The body and its credentials go only where the endpoint says: a
    // redirect is reported with its target, and the traces stay.
    let target_collector = Collector::start(vec![Reply::status(200)]);
    let moved = target_collector
        .url
        .replacen("http://", "https://otel:s3cret@", 1);
    for status in [301u16, 307, 308] {
        let collector = Collector::start(vec![Reply::status(status).header("Location", &moved)]);
        let b = store();
        match push_to(&b, &collector.url, 5_000) {
            PushOutcome::Failed {
                records,
                status: got,
                attempts,
                error,
                ..
            } => {
                assert_eq!((records, got, attempts), (3, Some(status), 1));
                assert!(
                    error.contains("redirected to https://otel:***@127.0.0.1"),
                    "{error}"
                );
                assert!(error.contains("not followed"), "{error}");
                assert!(!error.contains("s3cret"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(collector.requests().len(), 1);
        assert_eq!(b.len(), 4);
    }
    assert!(target_collector.requests().is_empty());
    // An error without a body says so rather than ending in a colon.
    let collector = Collector::start(vec![Reply::status(404).body("")]);
    match push_to(&store(), &collector.url, 5_000) {
        PushOutcome::Failed { error, .. } => {
            assert!(error.ends_with("(no message in the response)"), "{error}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_http2_only_port_is_named_as_the_grpc_port_it_likely_is() {
    // What an OTLP/gRPC port (4317) sends first: an HTTP/2 SETTINGS frame,
    // not an HTTP/1.1 status line.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
    });
    let b = store();
    match push_to(&b, &url, 5_000) {
        PushOutcome::Failed { records, error, .. } => {
            assert_eq!(records, 3);
            assert!(error.contains("OTLP/gRPC port (4317)"), "{error}");
            assert!(error.contains("port 4318"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.len(), 4);
    server.join().unwrap();
}

#[test]
fn connection_refused_keeps_the_traces() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let b = store();
    let url = format!("http://127.0.0.1:{port}/v1/traces");
    let started = Instant::now();
    let out = push_finished(
        &b,
        &resource(),
        &target(&url, 600),
        &Cancel::for_current_thread(),
    );
    match out {
        PushOutcome::Failed {
            records,
            status,
            attempts,
            ..
        } => {
            assert_eq!((records, status), (3, None));
            assert!(attempts >= 2, "connection refused is retried ({attempts})");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(b.len(), 4);
    // And they can be sent later.
    let collector = Collector::start(vec![Reply::status(200)]);
    let out = push_to(&b, &collector.url, 5_000);
    assert!(
        matches!(out, PushOutcome::Sent { records: 3, .. }),
        "{out:?}"
    );
}

#[test]
fn gives_up_when_retries_run_out_of_time() {
    let collector = Collector::start(vec![Reply::status(502)]);
    let b = store();
    let started = Instant::now();
    let out = push_to(&b, &collector.url, 1_000);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1_500), "took {took:?}");
    match out {
        PushOutcome::Failed {
            status, attempts, ..
        } => {
            assert_eq!(status, Some(502));
            assert!(attempts >= 3, "only {attempts} attempts in a second");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.len(), 4);
}

#[test]
fn a_slow_collector_is_cut_off_by_the_timeout() {
    let mut slow = Reply::status(200);
    slow.delay = Duration::from_secs(3);
    let collector = Collector::start(vec![slow]);
    let b = store();
    let started = Instant::now();
    let out = push_to(&b, &collector.url, 500);
    assert!(started.elapsed() < Duration::from_millis(1_500));
    assert!(
        matches!(out, PushOutcome::Failed { records: 3, .. }),
        "{out:?}"
    );
    assert_eq!(b.len(), 4);
}

#[test]
fn cancel_stops_a_backoff_wait() {
    let collector = Collector::start(vec![Reply::status(503).header("Retry-After", "3")]);
    let b = std::sync::Arc::new(store());
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = {
        let b = b.clone();
        let url = collector.url.clone();
        std::thread::spawn(move || {
            let cancel = std::sync::Arc::new(Cancel::for_current_thread());
            tx.send(cancel.clone()).unwrap();
            push_finished(&b, &resource(), &target(&url, 10_000), &cancel)
        })
    };
    let cancel = rx.recv().unwrap();
    while collector.requests().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    cancel.cancel();
    let out = worker.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    match out {
        PushOutcome::Failed { error, .. } => assert!(error.contains("interrupted"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.len(), 4);
}

#[test]
fn cancel_ends_the_wait_for_a_silent_collector_at_once() {
    // The collector takes the request and answers only after 5 s; the
    // push's timeout is 30 s. Cancelling must end the wait at once.
    let mut silent = Reply::status(200);
    silent.delay = Duration::from_secs(5);
    let collector = Collector::start(vec![silent]);
    let b = std::sync::Arc::new(store());
    let (tx, rx) = std::sync::mpsc::channel();
    let pushing = {
        let b = b.clone();
        let url = collector.url.clone();
        std::thread::spawn(move || {
            let cancel = std::sync::Arc::new(Cancel::for_current_thread());
            tx.send(cancel.clone()).unwrap();
            push_finished(&b, &resource(), &target(&url, 30_000), &cancel)
        })
    };
    let cancel = rx.recv().unwrap();
    while collector.requests().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    cancel.cancel();
    let out = pushing.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    match out {
        PushOutcome::Failed {
            records: 3,
            delivered: 0,
            error,
            ..
        } => assert!(
            error.contains("interrupted") && error.contains("in flight"),
            "{error}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.len(), 4, "the drained traces are back at once");
}

#[test]
fn json_without_compression_when_asked() {
    let collector = Collector::start(vec![Reply::status(200)]);
    let b = store();
    let out = push_finished(
        &b,
        &resource(),
        &json_target(&collector.url, 5_000),
        &Cancel::for_current_thread(),
    );
    assert_eq!(out, sent(3, 6, 1));
    let r = &collector.requests()[0];
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.wire, r.body);
    validate(&r.body);
    assert_eq!(r.span_count(), 6);
}

#[test]
fn gzip_json_is_decompressed_by_the_receiver() {
    let collector = Collector::start(vec![Reply::status(200)]);
    let b = store();
    let transport = Transport::new(Destination {
        protocol: Protocol::HttpJson,
        ..Destination::new(&collector.url)
    })
    .unwrap();
    let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
    assert_eq!(out, sent(3, 6, 1));
    let r = &collector.requests()[0];
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    validate(&r.body);
}

#[test]
fn one_transport_serves_many_pushes() {
    let collector = Collector::start(vec![Reply::status(200)]);
    let transport = target(&collector.url, 5_000);
    for round in 1..=3 {
        let b = store();
        let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
        assert_eq!(out, sent(3, 6, 1), "round {round}");
    }
    assert_eq!(collector.requests().len(), 3);
}

fn partial_success_protobuf(rejected: i64, message: &str) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    prost::Message::encode_to_vec(&ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: message.to_string(),
        }),
    })
}

#[test]
fn partial_success_in_protobuf_is_counted_and_not_retried() {
    let collector = Collector::start(vec![Reply::status(200).bytes(
        "application/x-protobuf",
        partial_success_protobuf(2, "two spans too old"),
    )]);
    let b = store();
    let out = push_to(&b, &collector.url, 5_000);
    match out {
        PushOutcome::Sent {
            records,
            rejected_spans,
            partial,
            attempts,
            ..
        } => {
            assert_eq!((records, rejected_spans, attempts), (3, 2, 1));
            assert_eq!(
                partial.as_deref(),
                Some("collector rejected 2 span(s): two spans too old")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(collector.requests().len(), 1);
    assert_eq!(b.len(), 1, "rejected spans are not put back");
}

fn gzipped(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

#[test]
fn requests_ask_for_uncompressed_responses_and_a_gzip_one_is_read() {
    let collector = Collector::start(vec![Reply::status(200)
        .bytes(
            "application/x-protobuf",
            gzipped(&partial_success_protobuf(3, "three spans too old")),
        )
        .header("Content-Encoding", "gzip")]);
    let b = store();
    match push_to(&b, &collector.url, 5_000) {
        PushOutcome::Sent {
            rejected_spans,
            partial,
            ..
        } => {
            assert_eq!(rejected_spans, 3);
            assert_eq!(
                partial.as_deref(),
                Some("collector rejected 3 span(s): three spans too old")
            );
        }
        other => panic!("{other:?}"),
    }
    let requests = collector.requests();
    assert_eq!(requests[0].header("accept-encoding"), Some("identity"));
}

#[test]
fn a_gzip_error_body_is_read_and_one_that_inflates_past_the_limit_is_not() {
    // An error's message, gzip-encoded.
    let collector = Collector::start(vec![Reply::status(400)
        .bytes(
            "application/json",
            gzipped(br#"{"code":3,"message":"bad span names"}"#),
        )
        .header("Content-Encoding", "gzip")]);
    match push_to(&store(), &collector.url, 5_000) {
        PushOutcome::Sent {
            partial: Some(partial),
            ..
        } => assert!(partial.contains("bad span names"), "{partial}"),
        other => panic!("{other:?}"),
    }
    // 64 KiB on the wire, 64 MiB inflated: not inflated past 4 MiB, and the
    // export still counts as delivered.
    let bomb = gzipped(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let collector = Collector::start(vec![Reply::status(200)
        .bytes("application/json", bomb)
        .header("Content-Encoding", "gzip")]);
    match push_to(&store(), &collector.url, 5_000) {
        PushOutcome::Sent { rejected_spans, .. } => assert_eq!(rejected_spans, 0),
        other => panic!("{other:?}"),
    }
    // A coding not known here: the status stands, the body is not read.
    let collector = Collector::start(vec![Reply::status(200)
        .bytes(
            "application/x-protobuf",
            partial_success_protobuf(4, "four"),
        )
        .header("Content-Encoding", "br")]);
    assert_eq!(push_to(&store(), &collector.url, 5_000), sent(3, 6, 1));
}

#[test]
fn a_warning_without_rejected_spans_is_a_plain_success() {
    let collector = Collector::start(vec![Reply::status(200).bytes(
        "application/x-protobuf",
        partial_success_protobuf(0, "just so you know"),
    )]);
    let b = store();
    let out = push_to(&b, &collector.url, 5_000);
    assert_eq!(out, sent(3, 6, 1));
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    // Civil date of `at` (days since 1970-01-01 to year/month/day).
    let days = (at / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        at % 86_400 / 3600,
        at % 3600 / 60,
        at % 60
    );
    let collector = Collector::start(vec![
        Reply::status(503).header("Retry-After", &date),
        Reply::status(200),
    ]);
    let b = store();
    let out = push_to(&b, &collector.url, 8_000);
    assert!(
        matches!(out, PushOutcome::Sent { attempts: 2, .. }),
        "{out:?} ({date})"
    );
    let got = collector.requests();
    let gap = got[1].at - got[0].at;
    // The date is 1 to 2 seconds away when the answer comes (whole seconds).
    assert!(
        gap >= Duration::from_millis(900),
        "waited only {gap:?} for {date}"
    );
    assert!(gap < Duration::from_secs(4), "waited {gap:?} for {date}");
}

#[test]
fn a_2xx_with_a_body_over_4_mib_is_delivered_once_with_a_note() {
    let collector = Collector::start(vec![
        Reply::status(200).bytes("application/json", vec![b' '; 5 * 1024 * 1024]),
        Reply::status(200),
    ]);
    let b = store();
    let out = push_to(&b, &collector.url, 5_000);
    match out {
        PushOutcome::Sent {
            records,
            attempts,
            partial,
            ..
        } => {
            assert_eq!((records, attempts), (3, 1));
            let note = partial.unwrap_or_default();
            assert!(note.contains("over 4 MiB"), "{note}");
        }
        other => panic!("{other:?}"),
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(collector.requests().len(), 1);
    // Only the open trace stays.
    assert_eq!(b.len(), 1);
}

#[test]
fn an_error_status_with_a_body_over_4_mib_is_an_error_and_not_retried() {
    let collector = Collector::start(vec![
        Reply::status(503).bytes("application/json", vec![b' '; 5 * 1024 * 1024]),
        Reply::status(200),
    ]);
    let b = store();
    let out = push_to(&b, &collector.url, 5_000);
    match out {
        PushOutcome::Failed {
            records,
            attempts,
            error,
            ..
        } => {
            assert_eq!((records, attempts), (3, 1));
            assert!(error.contains("over 4 MiB"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(collector.requests().len(), 1);
    assert_eq!(b.len(), 4);
}

#[test]
fn an_error_body_in_protobuf_gives_its_status_message() {
    // google.rpc.Status { code: 3, message: "span name too long" }
    let mut status = vec![0x08, 0x03, 0x12, 18];
    status.extend_from_slice(b"span name too long");
    let collector = Collector::start(vec![
        Reply::status(400).bytes("application/x-protobuf", status)
    ]);
    let b = store();
    let out = push_to(&b, &collector.url, 5_000);
    match out {
        PushOutcome::Sent {
            partial, attempts, ..
        } => {
            assert_eq!(attempts, 1);
            let partial = partial.expect("the refusal is reported");
            assert!(partial.contains(": span name too long"), "{partial}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn partial_success_counts_as_sent_and_is_reported() {
    let collector = Collector::start(vec![Reply::status(200)
        .body(r#"{"partialSuccess":{"rejectedSpans":"1","errorMessage":"span too big"}}"#)]);
    let b = store();
    let out = push_to(&b, &collector.url, 5_000);
    match out {
        PushOutcome::Sent { partial, .. } => {
            assert_eq!(
                partial.as_deref(),
                Some("collector rejected 1 span(s): span too big")
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.len(), 1);
}

#[test]
fn the_received_protobuf_equals_the_json_export_of_the_same_records() {
    let collector = Collector::start(vec![Reply::status(200)]);
    let b = rich_store();
    // What is pushed: the finished records, as JSON, before the push.
    let records = select(&b, false, false);
    let json = tasker_trace_core::encode::encode_request(
        &records,
        &[],
        &resource(),
        tasker_trace_core::support::clock::Stamp::now(),
        Protocol::HttpJson,
    )
    .unwrap();
    let from_json = validate(&json);
    let out = push_to(&b, &collector.url, 5_000);
    assert!(matches!(out, PushOutcome::Sent { spans: 3, .. }), "{out:?}");
    let got = collector.requests();
    let decoded = got[0].request();
    let (g, w) = (&decoded.resource_spans[0], &from_json.resource_spans[0]);
    assert_eq!(g.resource, w.resource);
    assert_eq!(g.scope_spans[0].scope, w.scope_spans[0].scope);
    for (a, e) in g.scope_spans[0].spans.iter().zip(&w.scope_spans[0].spans) {
        assert_eq!(a.name, e.name);
        assert_eq!((&a.trace_id, &a.span_id), (&e.trace_id, &e.span_id));
        assert_eq!(a.parent_span_id, e.parent_span_id);
        assert_eq!(
            (a.start_time_unix_nano, a.end_time_unix_nano),
            (e.start_time_unix_nano, e.end_time_unix_nano)
        );
        assert_eq!(a.attributes, e.attributes, "{}", a.name);
        assert_eq!(a.events, e.events, "{}", a.name);
        assert_eq!(a.status, e.status, "{}", a.name);
    }
    assert_eq!(decoded, &from_json);
}

/// `n` finished tasks.
fn tasks(n: i64) -> Backend {
    let b = Backend::new("h");
    for i in 1..=n {
        finished_task(&b, i);
    }
    b
}

#[test]
fn a_push_over_the_request_limit_goes_out_in_several_requests() {
    let collector = Collector::start(vec![Reply::status(200)]);
    let b = tasks(40);
    let transport = target(&collector.url, 5_000).with_request_limit(3_000);
    let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
    let requests = match out {
        PushOutcome::Sent {
            records,
            spans,
            requests,
            oversized_spans,
            ..
        } => {
            assert_eq!((records, spans, oversized_spans), (40, 80, 0));
            requests
        }
        other => panic!("{other:?}"),
    };
    let got = collector.requests();
    assert!(requests > 3, "{requests} requests");
    assert_eq!(got.len(), requests);
    assert!(got.iter().all(|r| r.body.len() <= 3_000));
    assert_eq!(got.iter().map(Received::span_count).sum::<usize>(), 80);
    assert!(b.is_empty());
}

#[test]
fn when_a_later_request_fails_only_what_it_carried_is_put_back() {
    // A 500 is not retried, and what it carried is kept.
    let collector = Collector::start(vec![Reply::status(200), Reply::status(500)]);
    let b = tasks(40);
    let transport = target(&collector.url, 5_000).with_request_limit(3_000);
    let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
    let got = collector.requests();
    assert_eq!(got.len(), 2, "the push stops at the failed request");
    // The trace keys the first request delivered.
    let delivered_keys: Vec<String> = got[0].request().resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| {
            match s
                .attributes
                .iter()
                .find(|kv| kv.key == "tasker.trace_key")
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
            {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(k)) => k,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    match out {
        PushOutcome::Failed {
            records,
            delivered,
            status,
            error,
            ..
        } => {
            assert_eq!(status, Some(500));
            assert_eq!(records + delivered, 40);
            // A record is never split across requests: the first request
            // delivered exactly the records whose roots it carried.
            assert!(delivered > 0, "{delivered}");
            assert_eq!(delivered, delivered_keys.len());
            assert_eq!(got[0].span_count(), 2 * delivered);
            assert!(error.starts_with("request 2 of "), "{error}");
            assert_eq!(b.len(), records);
        }
        other => panic!("{other:?}"),
    }
    let kept = keys(&b);
    // A delivered record is not put back: no span is sent twice.
    for k in &delivered_keys {
        assert!(!kept.contains(k), "{k} was delivered and put back");
    }
    assert!(kept.iter().all(|k| k.starts_with("task_")));
}

#[test]
fn a_push_over_16_mib_is_split_and_every_body_stays_under_it() {
    const MIB: usize = 1024 * 1024;
    let collector = Collector::start(vec![Reply::status(200)]);
    let b = Backend::new("h");
    let blob = "x".repeat(MIB);
    for i in 1..=20 {
        event(
            &b,
            "big.started",
            task_key(i),
            hash(vec![(sym("blob"), s(&blob))]),
            tasker_trace_core::support::clock::Stamp::now(),
        );
        event(
            &b,
            "big.completed",
            task_key(i),
            hash(vec![]),
            tasker_trace_core::support::clock::Stamp::now(),
        );
    }
    let transport = Transport::new(Destination {
        compression: Compression::None,
        timeout: Duration::from_secs(60),
        ..Destination::new(&collector.url)
    })
    .unwrap();
    assert_eq!(transport.request_limit(), 16 * MIB);
    // No value length limit: each blob goes out whole.
    let whole = Resource {
        span_limits: SpanLimits::NONE,
        ..resource()
    };
    let out = push_finished(&b, &whole, &transport, &Cancel::for_current_thread());
    match out {
        PushOutcome::Sent {
            records,
            spans,
            requests,
            ..
        } => assert_eq!((records, spans, requests), (20, 20, 2)),
        other => panic!("{other:?}"),
    }
    let got = collector.requests();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.body.len() <= 16 * MIB));
    assert!(got[0].body.len() > 14 * MIB, "{}", got[0].body.len());
    assert_eq!(got.iter().map(Received::span_count).sum::<usize>(), 20);
}

/// A store of two finished tasks with a trace between them whose first span
/// alone passes `limit` bytes.
fn with_a_big_span() -> Backend {
    let b = Backend::new("h");
    finished_task(&b, 1);
    let blob = hash(vec![(sym("blob"), s(&"x".repeat(10_000)))]);
    event(&b, "big.started", task_key(2), blob, at(1, 0));
    event(&b, "big.completed", task_key(2), hash(vec![]), at(1, 1));
    finished_task(&b, 3);
    b
}

#[test]
fn a_span_over_the_request_limit_goes_alone_and_the_collector_decides() {
    // Taken: everything arrives, the big span in a request of its own.
    let collector = Collector::start(vec![Reply::status(200)]);
    let b = with_a_big_span();
    let transport = target(&collector.url, 5_000).with_request_limit(2_000);
    let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
    let got = collector.requests();
    let spans: usize = got.iter().map(Received::span_count).sum();
    match out {
        PushOutcome::Sent {
            records,
            rejected_traces,
            spans: sent,
            oversized_spans,
            ..
        } => assert_eq!(
            (records, rejected_traces, sent, oversized_spans),
            (3, 0, spans, 1)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(spans, 5, "every span reached the collector");
    assert!(got
        .iter()
        .any(|r| r.span_count() == 1 && r.body.len() > 2_000));
    assert!(b.is_empty());

    // Refused as too large (it cannot be cut smaller): rejected for good and
    // counted; the others go on.
    let collector = Collector::start(vec![
        Reply::status(200),
        Reply::status(413),
        Reply::status(200),
    ]);
    let b = with_a_big_span();
    let transport = target(&collector.url, 5_000).with_request_limit(2_000);
    let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
    match out {
        PushOutcome::Sent {
            records,
            rejected_traces,
            rejected_spans,
            partial,
            ..
        } => {
            assert_eq!((records, rejected_traces, rejected_spans), (3, 1, 1));
            assert!(partial.expect("reported").contains("not sent again"));
        }
        other => panic!("{other:?}"),
    }
    assert!(b.is_empty());
}

#[test]
fn interrupted_pushes_to_a_silent_collector_keep_at_most_four_threads() {
    use std::io::Read as _;
    use tasker_trace_core::transport::{Delivery, PushSender, MAX_PUSH_THREADS};
    // Accepts connections, reads what comes, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/v1/traces",
        listener.local_addr().unwrap().port()
    );
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(16) {
                let Ok(mut conn) = conn else { continue };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
    }
    static SENDER: PushSender = PushSender::new();
    let transport = target(&url, 60_000);
    let mut errors = Vec::new();
    for _ in 0..MAX_PUSH_THREADS + 2 {
        let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
        let (tx, rx) = std::sync::mpsc::channel();
        let pushing = {
            let transport = transport.clone();
            std::thread::spawn(move || {
                let cancel = std::sync::Arc::new(Cancel::for_current_thread());
                tx.send(cancel.clone()).unwrap();
                SENDER.send(&transport, Box::new(b"request".to_vec()), &cancel)
            })
        };
        let cancel = rx.recv().unwrap();
        // Interrupted once its request is on the wire (or at once if it
        // was not sent).
        let deadline = Instant::now() + Duration::from_secs(30);
        while accepted.load(std::sync::atomic::Ordering::SeqCst) == before
            && !pushing.is_finished()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        cancel.cancel();
        match pushing.join().unwrap() {
            Delivery::Failed { error, .. } => errors.push(error),
            other => panic!("{other:?}"),
        }
    }
    let (interrupted, refused) = errors.split_at(MAX_PUSH_THREADS);
    assert!(
        interrupted.iter().all(|e| e.contains("interrupted")),
        "{errors:?}"
    );
    assert!(
        refused
            .iter()
            .all(|e| e.contains("not sent") && e.contains("still in flight")),
        "{errors:?}"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        MAX_PUSH_THREADS
    );
}

/// `url` with the userinfo `otel:s3cret` (sent as Basic authentication).
fn with_password(url: &str) -> String {
    url.replacen("http://", "http://otel:s3cret@", 1)
}

#[test]
fn an_endpoints_password_is_sent_but_never_shown_in_a_message() {
    let failed = |d: Delivery| match d {
        Delivery::Failed { error, .. } => error,
        other => panic!("expected a failure, got {other:?}"),
    };
    let refused = Collector::start(vec![Reply::status(400).body("bad request")]);
    let url = with_password(&refused.url);
    let transport = target(&url, 2_000);
    let error = failed(transport.send(b"{}", &Cancel::for_current_thread()));
    assert!(
        error.starts_with(&format!("HTTP 400 from {}", url.replace("s3cret", "***"))),
        "{error}"
    );
    // The credentials still go to the collector.
    assert_eq!(
        refused.requests()[0].header("authorization"),
        Some("Basic b3RlbDpzM2NyZXQ=")
    );
    // Retried statuses until the timeout, and a closed port.
    let busy = Collector::start(vec![Reply::status(503)]);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!(
            "http://127.0.0.1:{}/v1/traces",
            l.local_addr().unwrap().port()
        )
    };
    for url in [with_password(&busy.url), with_password(&closed)] {
        let transport = target(&url, 300);
        let error = failed(transport.send(b"{}", &Cancel::for_current_thread()));
        assert!(error.contains("otel:***@127.0.0.1:"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let shown = format!("{transport:?}");
        assert!(
            shown.contains("otel:***@") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
    // A URL refused before any request says so without the password.
    let error =
        Transport::new(Destination::new("http://otel:s3cret@127.0.0.1:0/v1/traces")).unwrap_err();
    assert!(
        error.contains("otel:***@") && !error.contains("s3cret"),
        "{error}"
    );
}
