//! The background exporter against a collector on 127.0.0.1 started by each
//! test: when it wakes (schedule delay, full batch, flush), what it sends
//! (store records and lifecycle runs, each once), what it keeps when the
//! collector fails, and how shutdown ends when the collector never answers.

mod otlp_support;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use otlp_support::*;
use tasker_trace_core::encode::Resource;
use tasker_trace_core::export::{
    BackgroundSettings, DestinationFn, Exporter, FlushResult, Mode, Schedule, Sources, Wait,
};
use tasker_trace_core::input::lifecycle::LifecycleEvent;
use tasker_trace_core::input::lifecycle::ToState;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::model::lifecycle::Tracer;
use tasker_trace_core::support::clock::Stamp;
use tasker_trace_core::support::protocol::Protocol;
use tasker_trace_core::transport::{Compression, Destination};

fn json_target(url: &str, timeout: Duration) -> DestinationFn {
    let url = url.to_string();
    Box::new(move || {
        let target = Destination {
            timeout,
            protocol: Protocol::HttpJson,
            compression: Compression::None,
            ..Destination::new(url.clone())
        };
        (Ok(target), Vec::new())
    })
}

fn test_resource() -> Resource {
    resource()
}

struct Setup {
    store: &'static Backend,
    tracer: &'static Tracer,
    exporter: Exporter,
}

fn setup(url: &str, schedule: Schedule) -> Setup {
    let store: &'static Backend = Box::leak(Box::new(Backend::new("test-host")));
    let tracer: &'static Tracer = Box::leak(Box::new(Tracer::default()));
    let exporter = Exporter::new(
        Sources {
            store,
            runs: Some(tracer),
        },
        test_resource,
        json_target(url, schedule.export_timeout),
    );
    exporter.configure(
        BackgroundSettings {
            mode: Mode::Otlp,
            schedule,
            sdk_disabled: false,
        },
        Vec::new(),
    );
    Setup {
        store,
        tracer,
        exporter,
    }
}

fn schedule(delay_ms: u64, batch: usize) -> Schedule {
    Schedule {
        delay: Duration::from_millis(delay_ms),
        max_batch_size: batch,
        export_timeout: Duration::from_secs(5),
        ..Schedule::default()
    }
}

/// A finished task trace (4 events), each stored through the exporter, as
/// the binding does.
fn record_task(s: &Setup, id: i64) {
    let step = hash(vec![(
        sym("workflow_step_id"),
        tasker_trace_core::value::Value::Int(id),
    )]);
    for (name, payload) in [
        (
            "task.started",
            hash(vec![(sym("task_name"), self::s("order"))]),
        ),
        ("step.before_handle", step.clone()),
        ("step.after_handle", step),
        ("task.completed", hash(vec![])),
    ] {
        s.exporter
            .record(|| event(s.store, name, task_key(id), payload, Stamp::now()));
    }
}

/// One finished lifecycle run (start, completed).
fn record_run(s: &Setup, task: i64) {
    for name in ["task.start_requested", "task.completed"] {
        s.exporter.record(|| {
            s.tracer.record(
                LifecycleEvent::named(name.as_bytes(), Stamp::now())
                    .with_task(task)
                    .with_to_state(ToState::InProgress),
            )
        });
    }
}

fn spans_received(c: &Collector) -> usize {
    c.requests().iter().map(Received::span_count).sum()
}

fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

#[test]
fn nothing_starts_until_the_first_event() {
    let c = Collector::start(vec![Reply::status(200)]);
    let s = setup(&c.url, schedule(50, 512));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!s.exporter.stats().running, "configured, but no event yet");
    record_task(&s, 1);
    assert!(s.exporter.stats().running);
    assert!(wait_until(Duration::from_secs(5), || spans_received(&c) == 2));
}

#[test]
fn the_schedule_delay_sends_what_finished() {
    let c = Collector::start(vec![Reply::status(200)]);
    let s = setup(&c.url, schedule(300, 100_000));
    let t0 = Instant::now();
    for id in 1..=5 {
        record_task(&s, id);
    }
    assert!(wait_until(Duration::from_secs(5), || spans_received(&c) == 10));
    let first = c.requests()[0].at.duration_since(t0);
    assert!(
        first >= Duration::from_millis(250),
        "sent after {first:?}, before the delay"
    );
    assert!(first < Duration::from_millis(1500), "sent after {first:?}");
    assert_eq!(s.store.len(), 0, "delivered records left the store");
    // The collector logs a request before it answers; the exporter counts
    // the export once the answer is in.
    assert!(wait_until(Duration::from_secs(5), || s
        .exporter
        .stats()
        .exports
        == 1));
    let stats = s.exporter.stats();
    assert_eq!(stats.exported_traces, 5);
    assert_eq!(stats.exported_spans, 10);
    assert_eq!(stats.queued, 0);
}

#[test]
fn a_full_batch_wakes_the_exporter_before_the_delay() {
    let c = Collector::start(vec![Reply::status(200)]);
    let s = setup(&c.url, schedule(60_000, 40));
    let t0 = Instant::now();
    for id in 1..=10 {
        record_task(&s, id);
    }
    assert!(
        wait_until(Duration::from_secs(5), || spans_received(&c) == 20),
        "40 events are a batch: sent long before the 60 s delay"
    );
    assert!(c.requests()[0].at.duration_since(t0) < Duration::from_secs(3));
}

#[test]
fn flush_sends_store_records_and_lifecycle_runs_once() {
    let c = Collector::start(vec![Reply::status(200)]);
    let s = setup(&c.url, schedule(60_000, 100_000));
    for id in 1..=3 {
        record_task(&s, id);
    }
    for task in 100..103 {
        record_run(&s, task);
    }
    assert!(s.exporter.stats().running);
    let r = s.exporter.flush(Duration::from_secs(5), &Wait::default());
    assert_eq!(
        r,
        FlushResult {
            sent: 6,
            failed: 0,
            error: None
        }
    );
    // 3 traces of 2 spans, 3 runs of a root span each.
    assert_eq!(spans_received(&c), 9);
    let again = s.exporter.flush(Duration::from_secs(5), &Wait::default());
    assert_eq!(again.sent, 0, "nothing is sent twice");
    assert_eq!(spans_received(&c), 9);
    let names: Vec<String> = c.requests()[0]
        .request()
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|sp| sp.name.clone())
        .collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| *n == "tasker.task.execution")
            .count(),
        3
    );
}

#[test]
fn a_dead_collector_leaves_everything_in_the_retry_queue_and_backs_off() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/v1/traces");
    let mut sch = schedule(60_000, 100_000);
    sch.export_timeout = Duration::from_millis(300);
    let s = setup(&url, sch);
    for id in 1..=4 {
        record_task(&s, id);
    }
    record_run(&s, 500);
    let r = s.exporter.flush(Duration::from_secs(5), &Wait::default());
    assert_eq!(r.sent, 0);
    assert_eq!(r.failed, 5, "4 traces and a run, all kept: {r:?}");
    assert!(r.error.is_some());
    let stats = s.exporter.stats();
    assert_eq!(stats.failed_exports, 1);
    assert_eq!(stats.queued, 5);
    assert!(stats.retries >= 1, "connection failures are retried");
    assert!(stats.last_error.is_some());
    assert!(stats.next_attempt_at_ns.is_some(), "backing off");
    // The exporter holds them: nothing went back under the sources' locks.
    assert_eq!(s.store.len(), 0);
    assert_eq!(s.tracer.stats().finished_runs, 0);
    // A flush still tries at once, backoff or not.
    let r = s.exporter.flush(Duration::from_secs(5), &Wait::default());
    assert_eq!((r.sent, r.failed), (0, 5));
    assert_eq!(s.exporter.stats().failed_exports, 2);
    // Turned off, the exporter gives what it held back to the sources.
    s.exporter
        .configure(BackgroundSettings::default(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.store.len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(s.store.len(), 4);
    assert_eq!(s.tracer.stats().finished_runs, 1);
}

#[test]
fn after_a_failure_the_next_attempt_is_due_a_backoff_later() {
    let c = Collector::start(vec![Reply::status(500)]);
    // A 20 ms schedule: without backoff, about 50 attempts a second.
    let s = setup(&c.url, schedule(20, 100_000));
    record_task(&s, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.exporter.stats().failed_exports == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = s.exporter.stats();
    assert_eq!(stats.failed_exports, 1);
    assert_eq!(stats.queued, 1);
    // The first wait is 1 s times a jitter in [0.5, 1], from the failure.
    let failed_at = stats.last_error.expect("an error").at_wall_ns;
    let next = stats.next_attempt_at_ns.expect("backing off");
    let wait = Duration::from_nanos((next - failed_at) as u64);
    assert!(
        (Duration::from_millis(500)..=Duration::from_secs(1)).contains(&wait),
        "{wait:?}"
    );
}

#[test]
fn retry_after_is_honoured_then_delivered() {
    let c = Collector::start(vec![
        Reply::status(503).header("Retry-After", "1"),
        Reply::status(200),
    ]);
    let s = setup(&c.url, schedule(60_000, 100_000));
    record_task(&s, 1);
    let t0 = Instant::now();
    let r = s.exporter.flush(Duration::from_secs(5), &Wait::default());
    assert_eq!(r.sent, 1, "{r:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "waited Retry-After"
    );
    let reqs = c.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].at.duration_since(reqs[0].at) >= Duration::from_millis(900));
    assert_eq!(s.exporter.stats().retries, 1);
}

#[test]
fn shutdown_returns_within_its_timeout_when_the_collector_never_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let held = Arc::new(AtomicBool::new(true));
    let keep = held.clone();
    // Accepts and reads, never answers (the connections stay open).
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for conn in listener.incoming().take(4) {
            if let Ok(c) = conn {
                open.push(c);
            }
            if !keep.load(Ordering::Relaxed) {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let mut sch = schedule(60_000, 100_000);
    sch.export_timeout = Duration::from_secs(20);
    let s = setup(&url, sch);
    record_task(&s, 1);
    let t0 = Instant::now();
    let r = s
        .exporter
        .shutdown(Duration::from_millis(500), &Wait::default());
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(
        r.error.as_deref().unwrap_or("").contains("timed out"),
        "{r:?}"
    );
    assert!(!s.exporter.stats().running);
    held.store(false, Ordering::Relaxed);
}

#[test]
fn an_interrupt_ends_a_flush_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let open: Vec<_> = listener.incoming().take(2).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(open);
    });
    let s = setup(&url, schedule(60_000, 100_000));
    record_task(&s, 1);
    let wait = Arc::new(Wait::default());
    let exporter = Arc::new(s.exporter);
    let (e2, w2) = (exporter.clone(), wait.clone());
    let interrupter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        e2.interrupt(&w2);
    });
    let t0 = Instant::now();
    let r = exporter.flush(Duration::from_secs(20), &wait);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(r.error.as_deref(), Some("interrupted"));
    interrupter.join().unwrap();
}

#[test]
fn turning_it_off_stops_the_thread_and_keeps_the_records() {
    let c = Collector::start(vec![Reply::status(200)]);
    let s = setup(&c.url, schedule(100, 100_000));
    record_task(&s, 1);
    assert!(s.exporter.stats().running);
    s.exporter
        .configure(BackgroundSettings::default(), Vec::new());
    assert!(!s.exporter.stats().running);
    record_task(&s, 2);
    std::thread::sleep(Duration::from_millis(400));
    assert!(spans_received(&c) <= 2, "at most the first trace went out");
    let kept = s.store.snapshot().entries;
    assert!(
        kept.iter().any(|(k, _)| k.bytes() == b"task_2"),
        "the trace recorded while off waits in the store"
    );
    let r = s.exporter.flush(Duration::from_secs(1), &Wait::default());
    assert_eq!(r, FlushResult::default(), "off: flush does nothing");
}

#[test]
fn sdk_disabled_keeps_it_off() {
    let c = Collector::start(vec![Reply::status(200)]);
    let s = setup(&c.url, schedule(20, 1));
    s.exporter.configure(
        BackgroundSettings {
            mode: Mode::Otlp,
            schedule: schedule(20, 1),
            sdk_disabled: true,
        },
        Vec::new(),
    );
    record_task(&s, 1);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!s.exporter.stats().running);
    assert!(!s.exporter.stats().enabled);
    assert_eq!(c.requests().len(), 0);
}

#[test]
fn records_that_finished_before_a_fork_are_left_to_the_parent() {
    let s = setup("http://127.0.0.1:9/v1/traces", schedule(60_000, 100_000));
    let sources = Sources {
        store: s.store,
        runs: Some(s.tracer),
    };
    finished_task(s.store, 1);
    record_run(&s, 7);
    // An open trace at the fork: kept, and the child's if it finishes there.
    event(
        s.store,
        "task.started",
        task_key(2),
        hash(vec![]),
        Stamp::now(),
    );
    let fork_time = Stamp::now().mono_ns;
    std::thread::sleep(Duration::from_millis(2));
    event(
        s.store,
        "task.completed",
        task_key(2),
        hash(vec![]),
        Stamp::now(),
    );
    finished_task(s.store, 3);
    assert_eq!(sources.discard_finished_before(fork_time), 2);
    let keys: Vec<String> = s
        .store
        .snapshot()
        .entries
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k.bytes()).into_owned())
        .collect();
    assert_eq!(keys, ["task_2", "task_3"]);
    assert_eq!(s.tracer.stats().finished_runs, 0);
}
