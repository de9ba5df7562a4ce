//! ISO 8601 formatting: from scratch, and through the export's per-second cache.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tasker_trace_core::support::clock::{iso8601, Stamp, TimestampFormatter};

fn timestamps(c: &mut Criterion) {
    let mut group = c.benchmark_group("timestamps");
    let base = 1_795_607_947_i64 * 1_000_000_000 + 123_456_789;
    for precision in [0_u8, 6] {
        group.bench_function(format!("iso8601 uncached, precision {precision}"), |b| {
            b.iter(|| iso8601(black_box(base), precision))
        });
        // An export formats stamps in store order: mostly the same second.
        let mut fmt = TimestampFormatter::new(precision);
        let mut n = 0_i64;
        group.bench_function(
            format!("formatter, same second, precision {precision}"),
            |b| {
                b.iter(|| {
                    n = (n + 1_000) % 1_000_000_000;
                    fmt.format(black_box(base - 123_456_789 + n))
                })
            },
        );
        let mut fmt = TimestampFormatter::new(precision);
        let mut s = 0_i64;
        group.bench_function(
            format!("formatter, new second each, precision {precision}"),
            |b| {
                b.iter(|| {
                    s += 1;
                    fmt.format(black_box(base + s * 1_000_000_000))
                })
            },
        );
    }
    group.bench_function("clock reading (wall + monotonic)", |b| b.iter(Stamp::now));
    group.finish();
}

criterion_group!(benches, timestamps);
criterion_main!(benches);
