//! Trace keys and event routing: the per-event work done on names and ids.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tasker_trace_core::input::backend::routing::{classify, finish_status};
use tasker_trace_core::input::backend::KeyField;
use tasker_trace_core::support::clock::{wall_now_ns, UniqueInstants};
use tasker_trace_core::value::Str;

fn keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys");
    group.bench_function("task key from Integer id", |b| {
        b.iter(|| KeyField::TaskId.key_for_int(black_box(1_234_567)))
    });
    let id = Str::utf8("a8f3c2e1-5d4b-4c2a-9e7f-0b1d2c3e4f5a");
    group.bench_function("step key from String id", |b| {
        b.iter(|| KeyField::WorkflowStepId.key_for(black_box(&id)))
    });
    let instants = UniqueInstants::default();
    group.bench_function("fresh generic key", |b| {
        b.iter(|| instants.key(black_box("generic_"), wall_now_ns()))
    });
    group.finish();

    let mut group = c.benchmark_group("routing");
    for name in [
        "task.started",
        "task.completed",
        "step.before_handle",
        "workflow.viable_steps_discovered",
    ] {
        group.bench_function(format!("classify {name}"), |b| {
            b.iter(|| classify(black_box(name.as_bytes())))
        });
    }
    group.bench_function("finish status", |b| {
        b.iter(|| finish_status(black_box(b"task.completed")))
    });
    group.finish();
}

criterion_group!(benches, keys);
criterion_main!(benches);
