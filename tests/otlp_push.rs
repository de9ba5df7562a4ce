//! Pushing to a collector: a scripted OTLP/HTTP receiver on 127.0.0.1, started
//! by each test, decodes every body with the OTLP reference types.

mod otlp_support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use otlp_support::*;
use tasker_trace_core::otlp::{push_finished, Cancel, PushOutcome, Target};
use tasker_trace_core::Backend;

fn target(url: &str, timeout_ms: u64) -> Target {
    Target {
        url: url.to_string(),
        headers: vec![("x-tenant".to_string(), "acme".to_string())],
        timeout: Duration::from_millis(timeout_ms),
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
        hash(vec![(sym("task_id"), tasker_trace_core::Value::Int(99))]),
        tasker_trace_core::clock::Stamp::now(),
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
    let out = push_finished(
        &b,
        &resource(),
        &target(&collector.url, 5_000),
        &Cancel::for_current_thread(),
    );
    assert_eq!(
        out,
        PushOutcome::Sent {
            records: 3,
            spans: 6,
            status: 200,
            attempts: 1,
            partial: None
        }
    );
    assert_eq!(keys(&b), ["task_99"]);
    let got = collector.requests();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/traces");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-tenant"), Some("acme"));
    assert_eq!(r.span_count(), 6);
    validate(&r.body);
    // Nothing left to send: no request at all.
    let again = push_finished(
        &b,
        &resource(),
        &target(&collector.url, 5_000),
        &Cancel::for_current_thread(),
    );
    assert_eq!(again, PushOutcome::Nothing);
    assert_eq!(collector.requests().len(), 1);
}

#[test]
fn retries_503_with_backoff_then_succeeds() {
    let collector = Collector::start(vec![Reply::status(503), Reply::status(200)]);
    let b = store();
    let out = push_finished(
        &b,
        &resource(),
        &target(&collector.url, 5_000),
        &Cancel::for_current_thread(),
    );
    match out {
        PushOutcome::Sent {
            status, attempts, ..
        } => assert_eq!((status, attempts), (200, 2)),
        other => panic!("{other:?}"),
    }
    let got = collector.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, got[1].body, "the same request is sent again");
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
    let out = push_finished(
        &b,
        &resource(),
        &target(&collector.url, 5_000),
        &Cancel::for_current_thread(),
    );
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
    let collector = Collector::start(vec![Reply::status(503).header("Retry-After", "30")]);
    let b = store();
    let started = Instant::now();
    let out = push_finished(
        &b,
        &resource(),
        &target(&collector.url, 2_000),
        &Cancel::for_current_thread(),
    );
    assert!(started.elapsed() < Duration::from_millis(1_500));
    match out {
        PushOutcome::Failed {
            records,
            status,
            attempts,
            error,
        } => {
            assert_eq!((records, status, attempts), (3, Some(503), 1));
            assert!(error.contains("would pass the timeout"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(collector.requests().len(), 1);
    assert_eq!(b.len(), 4);
}

#[test]
fn status_400_is_not_retried_and_the_traces_are_kept() {
    for status in [400u16, 413] {
        let collector = Collector::start(vec![
            Reply::status(status).body(r#"{"message":"bad payload"}"#),
            Reply::status(200),
        ]);
        let b = store();
        let before: Vec<_> = b
            .snapshot()
            .entries
            .iter()
            .map(|(k, r)| (k.to_string_lossy(), std::sync::Arc::as_ptr(r)))
            .collect();
        let out = push_finished(
            &b,
            &resource(),
            &target(&collector.url, 5_000),
            &Cancel::for_current_thread(),
        );
        match out {
            PushOutcome::Failed {
                records,
                status: got,
                attempts,
                error,
            } => {
                assert_eq!((records, got, attempts), (3, Some(status), 1));
                assert!(error.contains("bad payload"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(collector.requests().len(), 1, "{status} retried");
        // The same records are back (restored ones go to the end).
        let mut after: Vec<_> = b
            .snapshot()
            .entries
            .iter()
            .map(|(k, r)| (k.to_string_lossy(), std::sync::Arc::as_ptr(r)))
            .collect();
        let mut before = before.clone();
        before.sort();
        after.sort();
        assert_eq!(before, after);
    }
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
            assert!(attempts >= 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(b.len(), 4);
    // And they can be sent later.
    let collector = Collector::start(vec![Reply::status(200)]);
    let out = push_finished(
        &b,
        &resource(),
        &target(&collector.url, 5_000),
        &Cancel::for_current_thread(),
    );
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
    let out = push_finished(
        &b,
        &resource(),
        &target(&collector.url, 1_000),
        &Cancel::for_current_thread(),
    );
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
    let out = push_finished(
        &b,
        &resource(),
        &target(&collector.url, 500),
        &Cancel::for_current_thread(),
    );
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
fn partial_success_counts_as_sent_and_is_reported() {
    let collector = Collector::start(vec![Reply::status(200)
        .body(r#"{"partialSuccess":{"rejectedSpans":"1","errorMessage":"span too big"}}"#)]);
    let b = store();
    let out = push_finished(
        &b,
        &resource(),
        &target(&collector.url, 5_000),
        &Cancel::for_current_thread(),
    );
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
