//! The export's copy-out step: a snapshot of 40,000 finished traces taken under
//! the lock, and the memory accounting walk over the same store.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const TRACES: i64 = 40_000;

fn snapshot(c: &mut Criterion) {
    let backend = common::filled_backend(TRACES);
    let mut group = c.benchmark_group("export");
    group.sample_size(30);
    group.bench_function("snapshot of 40k traces", |b| {
        b.iter(|| black_box(backend.snapshot()))
    });
    group.bench_function("stats", |b| b.iter(|| black_box(backend.stats())));
    group.bench_function("heap size of 40k traces", |b| {
        b.iter(|| black_box(backend.heap_size()))
    });
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
