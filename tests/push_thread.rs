//! The push thread: started at the first push, one for every push after
//! that, named so a test (or an operator) can tell it from the exporter's.
//! In a file of its own: it counts this process's threads by name.

mod otlp_support;

use std::time::Duration;

use otlp_support::*;
use tasker_trace_core::export::{push, PushOutcome, Sending, Sources, EXPLICIT_SETTLE};
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::transport::sender::THREAD_NAME;
use tasker_trace_core::transport::{Cancel, Destination, PushSender, Transport};

/// Threads of this process named `name` (Linux: `/proc/self/task/*/comm`).
fn threads_named(name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[test]
#[cfg(target_os = "linux")]
fn pushes_share_one_named_thread_started_at_the_first_push() {
    static SENDER: PushSender = PushSender::new();
    let collector = Collector::start(vec![Reply::status(200)]);
    let transport = Transport::new(Destination {
        timeout: Duration::from_secs(10),
        ..Destination::new(&collector.url)
    })
    .expect("transport");
    let b = Backend::new("h");
    assert_eq!(
        threads_named(THREAD_NAME),
        0,
        "nothing before the first push"
    );
    for round in 1..=3 {
        finished_task(&b, round);
        let sending = Sending::PushThread(&transport, &SENDER);
        let cancel = Cancel::for_current_thread();
        let out = push(
            Sources::store(&b),
            &resource(),
            sending,
            &cancel,
            EXPLICIT_SETTLE,
        );
        assert!(
            matches!(out, PushOutcome::Sent { records: 1, .. }),
            "{out:?}"
        );
        assert_eq!(threads_named(THREAD_NAME), 1, "after push {round}");
    }
    assert_eq!(collector.requests().len(), 3);
    assert!(b.is_empty());
}
