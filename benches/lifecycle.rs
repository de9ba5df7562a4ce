//! `lifecycle::Tracer::record`, the lifecycle tracer's hot path: one 3-step
//! task run of 25 events as Tasker publishes it (2x start_requested, per step
//! 3x execution_requested, before_handle and 3x completed, 2x completed for
//! the task). "record" builds each run's events outside the measured closure,
//! as the binding builds them before calling in, one run per batch so each
//! event is freed soon after it was allocated (as in a real app); finished
//! runs are drained between runs, as the background exporter does. "build and
//! record" times both; minus "build only" it is record again.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tasker_trace_core::encode::run_spans::runs_spans;
use tasker_trace_core::encode::{encode_request, Resource, SpanLimits};
use tasker_trace_core::input::lifecycle::ToState;
use tasker_trace_core::input::lifecycle::{AttrKey, EventName, LifecycleEvent};
use tasker_trace_core::model::lifecycle::{LifecycleLimits, Tracer};
use tasker_trace_core::model::sampling::Sampling;
use tasker_trace_core::support::clock::Stamp;
use tasker_trace_core::support::protocol::Protocol;

/// Task ids cycle through this many, so the history stays at a steady size.
const TASKS: i64 = 10_000;

/// As the binding builds an event: name classified, one clock reading, room
/// for the attributes it reads.
fn event(name: &str, task: i64) -> LifecycleEvent {
    LifecycleEvent::with_capacity(EventName::new(name.as_bytes()), Stamp::now(), 4).with_task(task)
}

fn step(name: &str, task: i64, step: i64, attempt: i64) -> LifecycleEvent {
    event(name, task)
        .with_step(step)
        .with_attr(AttrKey::TaskName, "order_fulfillment")
        .with_attr(AttrKey::StepName, "fetch_cart")
        .with_attr(AttrKey::AttemptNumber, attempt)
        .with_attr(AttrKey::RetryLimit, 3)
}

fn task_run(task: i64) -> Vec<LifecycleEvent> {
    let mut events = Vec::with_capacity(25);
    for to in [ToState::InProgress, ToState::Absent] {
        events.push(
            event("task.start_requested", task)
                .with_to_state(to)
                .with_attr(AttrKey::TaskName, "order"),
        );
    }
    for s in 0..3 {
        let id = task * 10 + s;
        for _ in 0..3 {
            events.push(step("step.execution_requested", task, id, 1));
        }
        events.push(step("step.before_handle", task, id, 1));
        for attempt in [0, 1, 1] {
            events.push(
                step("step.completed", task, id, attempt)
                    .with_attr(AttrKey::ExecutionDuration, 0.25),
            );
        }
    }
    events.push(event("task.completed", task));
    events.push(
        event("task.completed", task)
            .with_attr(AttrKey::TotalSteps, 3)
            .with_attr(AttrKey::CompletedSteps, 3)
            .with_attr(AttrKey::FailedSteps, 0),
    );
    events
}

fn lifecycle(c: &mut Criterion) {
    let events_per_run = task_run(0).len() as u64;
    let mut group = c.benchmark_group("lifecycle");
    group.throughput(Throughput::Elements(events_per_run));

    let tracer = Tracer::new(LifecycleLimits::default());
    let mut task = 0_i64;
    group.bench_function(
        format!("record a 3-step run ({events_per_run} events)"),
        |b| {
            b.iter_batched(
                || {
                    task = (task + 1) % TASKS;
                    if task % 1_000 == 0 {
                        drop(tracer.drain_finished(Duration::ZERO));
                    }
                    task_run(task)
                },
                |events| {
                    for e in events {
                        black_box(tracer.record(e));
                    }
                },
                // One run per batch: events are freed soon after they were built.
                BatchSize::PerIteration,
            )
        },
    );

    // Building the events too, as the binding does right before each call
    // (each event is freed soon after it was allocated, as in a real app).
    let tracer = Tracer::new(LifecycleLimits::default());
    let mut task = 0_i64;
    group.bench_function("build and record a 3-step run", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                task = (task + 1) % TASKS;
                if task % 1_000 == 0 {
                    drop(tracer.drain_finished(Duration::ZERO));
                }
                let start = Instant::now();
                for e in task_run(task) {
                    black_box(tracer.record(e));
                }
                timed += start.elapsed();
            }
            timed
        })
    });
    group.bench_function("build a 3-step run only", |b| {
        b.iter(|| black_box(task_run(black_box(7))))
    });

    // Export: draining 1,000 finished runs into plain data.
    let tracer = Tracer::new(LifecycleLimits::default());
    let mut base = 0_i64;
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("drain 1000 runs", |b| {
        b.iter_batched(
            || {
                base = (base + 1_000) % TASKS;
                for t in base..base + 1_000 {
                    for e in task_run(t) {
                        tracer.record(e);
                    }
                }
            },
            |()| black_box(tracer.drain_finished(Duration::ZERO)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// What sampling a run out saves: 100 runs recorded, then drained and
/// encoded as one OTLP protobuf request (the export's work before sending),
/// per run; with every run sampled, with none sampled but the keep rules on
/// (each run is recorded in full, its export skipped), and with none
/// sampled and no rule (only each run's end is recorded).
fn sampling(c: &mut Criterion) {
    let mut group = c.benchmark_group("sampling");
    group.throughput(Throughput::Elements(100));
    let resource = Resource {
        service_name: "bench".into(),
        host_name: "host".into(),
        pid: 1,
        version: "0".into(),
        attributes: Vec::new(),
        span_limits: SpanLimits::DEFAULT,
    };
    let cases = [
        ("every run sampled", Sampling::default()),
        (
            "none sampled, keep rules on",
            Sampling {
                ratio: 0.0,
                ..Sampling::default()
            },
        ),
        (
            "none sampled, no keep rule",
            Sampling {
                ratio: 0.0,
                keep_errors: false,
                keep_retried: false,
                keep_slower_than: None,
                parent_based: false,
            },
        ),
    ];
    for (name, sampling) in cases {
        let tracer = Tracer::new(LifecycleLimits::default());
        tracer.set_sampling(sampling);
        let mut base = 0_i64;
        group.bench_function(format!("record and export 100 runs: {name}"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    base = (base + 100) % TASKS;
                    let runs: Vec<Vec<LifecycleEvent>> = (base..base + 100).map(task_run).collect();
                    let start = Instant::now();
                    for run in runs {
                        for e in run {
                            black_box(tracer.record(e));
                        }
                    }
                    let now = Stamp::now();
                    let done = tracer.drain_finished(Duration::ZERO);
                    let spans = runs_spans(&done, "tasker.", now, &SpanLimits::DEFAULT);
                    black_box(
                        encode_request(&[], &spans, &resource, now, Protocol::HttpProtobuf).ok(),
                    );
                    timed += start.elapsed();
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lifecycle, sampling);
criterion_main!(benches);
