//! OTLP request encoding of 40,000 finished traces (two spans each): the
//! protobuf encoder against the JSON one, and the bodies' sizes, plain and
//! gzipped (printed once before the timings).

mod common;

use std::hint::black_box;
use std::io::Write as _;

use criterion::{criterion_group, criterion_main, Criterion};
use tasker_trace_core::encode::{encode_request, Resource, SpanLimits};
use tasker_trace_core::model::{Source, Take};
use tasker_trace_core::support::clock::Stamp;
use tasker_trace_core::support::protocol::Protocol;

const TRACES: i64 = 40_000;

fn resource() -> Resource {
    Resource {
        service_name: "bench".to_string(),
        host_name: "bench-host".to_string(),
        pid: 1,
        version: "0.0.0".to_string(),
        attributes: vec![],
        span_limits: SpanLimits::DEFAULT,
    }
}

fn gzip_len(body: &[u8]) -> usize {
    // The transport's level (fastest).
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body).expect("gzip");
    e.finish().expect("gzip").len()
}

fn encode(c: &mut Criterion) {
    let backend = common::filled_backend(TRACES);
    let records = backend
        .take(Take {
            drain: false,
            include_open: false,
            settled_for: std::time::Duration::ZERO,
        })
        .ready;
    let resource = resource();
    let now = Stamp::now();
    let protocols = [
        ("protobuf", Protocol::HttpProtobuf),
        ("json", Protocol::HttpJson),
    ];
    for (name, protocol) in protocols {
        let body = encode_request(&records, &[], &resource, now, protocol).expect("encodes");
        eprintln!(
            "{name}: {} bytes for {TRACES} traces, {} gzipped",
            body.len(),
            gzip_len(&body)
        );
    }
    let mut group = c.benchmark_group("otlp encode");
    group.sample_size(10);
    for (name, protocol) in protocols {
        group.bench_function(format!("{name}, 40k traces"), |b| {
            b.iter(|| black_box(encode_request(&records, &[], &resource, now, protocol)))
        });
    }
    let protobuf =
        encode_request(&records, &[], &resource, now, Protocol::HttpProtobuf).expect("encodes");
    group.bench_function("gzip of the protobuf body", |b| {
        b.iter(|| black_box(gzip_len(&protobuf)))
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
