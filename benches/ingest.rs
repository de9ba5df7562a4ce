//! `Backend::ingest`, the store's hot path, per event kind. The event (payload
//! already converted) is built outside the measured closure, as the binding
//! builds it before calling in.

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;
use tasker_trace_core::input::backend::Event;
use tasker_trace_core::input::backend::KeySource;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::support::clock::Stamp;
use tasker_trace_core::value::Str;

/// Task ids cycle through this many keys, so the store stays at a steady size
/// (a start on a known key replaces that trace in place).
const KEYS: i64 = 10_000;

fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");

    let backend = Backend::new("bench-host");
    let mut id = 0_i64;
    group.bench_function("start", |b| {
        b.iter_batched(
            || {
                id = (id + 1) % KEYS;
                common::event("task.started", id)
            },
            |ev| black_box(backend.ingest(ev)),
            BatchSize::SmallInput,
        )
    });

    // Spans go to traces that are restarted between batches, so no trace
    // reaches the span limit.
    let backend = common::filled_backend(KEYS);
    let mut id = 0_i64;
    group.bench_function("span", |b| {
        b.iter_batched(
            || {
                id = (id + 1) % KEYS;
                if id == 0 {
                    for k in 0..KEYS {
                        backend.ingest(common::event("task.started", k));
                    }
                }
                common::event("step.before_handle", id)
            },
            |ev| black_box(backend.ingest(ev)),
            BatchSize::SmallInput,
        )
    });

    let backend = common::filled_backend(KEYS);
    let mut id = 0_i64;
    group.bench_function("finish", |b| {
        b.iter_batched(
            || {
                id = (id + 1) % KEYS;
                common::event("task.completed", id)
            },
            |ev| black_box(backend.ingest(ev)),
            BatchSize::SmallInput,
        )
    });

    // Generic events get fresh keys; at the default limit the oldest are evicted.
    let backend = Backend::new("bench-host");
    group.bench_function("generic", |b| {
        b.iter_batched(
            || {
                Event::new(
                    Str::utf8("workflow.viable_steps_discovered"),
                    KeySource::Fresh,
                    common::payload(1),
                    Stamp::now(),
                )
            },
            |ev| black_box(backend.ingest(ev)),
            BatchSize::SmallInput,
        )
    });

    let backend = Backend::new("bench-host");
    let mut id = 0_i64;
    group.bench_function("lifecycle (start, 2 spans, finish)", |b| {
        b.iter_batched(
            || {
                id = (id + 1) % KEYS;
                [
                    common::event("task.started", id),
                    common::event("step.before_handle", id),
                    common::event("step.after_handle", id),
                    common::event("task.completed", id),
                ]
            },
            |events| {
                for ev in events {
                    black_box(backend.ingest(ev));
                }
            },
            BatchSize::SmallInput,
        )
    });

    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
