//! Property tests of the trace store against a plain model: random event
//! streams and random payload trees, with a fixed seed and a bounded number of
//! cases so that `cargo test` stays quick and repeatable.
//!
//! Checked after every step: nothing panics; the store's keys are in
//! first-insertion order (a restart keeps its key's place, eviction takes the
//! oldest first); records hold what the model says (payloads byte for byte,
//! spans up to the limit, finish status and duration); and the counters add
//! up: `events_handled + rejected_events` equals the calls since the last
//! reset, and orphans, evictions and dropped spans match the model.

use std::collections::HashSet;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use tasker_trace_core::input::backend::Event;
use tasker_trace_core::input::backend::{KeyField, KeySource, Status};
use tasker_trace_core::model::backend::Limits;
use tasker_trace_core::model::backend::{Backend, Record};
use tasker_trace_core::support::clock::{round6, Stamp};
use tasker_trace_core::value::{Encoding, Str, Value};

/// Fixed seeds: every run explores the same cases.
const SEED: [u8; 32] = *b"tasker-trace-native store fuzz 1";

fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED))
}

// ---------------------------------------------------------------------------
// Value trees

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        4 => Just(Encoding::Utf8),
        1 => Just(Encoding::UsAscii),
        2 => Just(Encoding::Binary),
        1 => (3..40i32).prop_map(Encoding::Other),
    ]
}

fn string() -> impl Strategy<Value = Str> {
    (vec(any::<u8>(), 0..12), encoding()).prop_map(|(bytes, enc)| Str::new(bytes, enc))
}

fn big_int() -> impl Strategy<Value = Value> {
    (any::<bool>(), 1u8..10, vec(0u8..10, 19..40)).prop_map(|(negative, first, rest)| {
        let mut digits = String::new();
        if negative {
            digits.push('-');
        }
        digits.push((b'0' + first) as char);
        digits.extend(rest.into_iter().map(|d| (b'0' + d) as char));
        Value::BigInt(digits.into_boxed_str())
    })
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        big_int(),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
        ]
        .prop_map(Value::Float),
        string().prop_map(Value::Str),
        string().prop_map(|s| Value::Sym(Arc::new(s))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((inner.clone(), inner), 0..5).prop_map(Value::Hash),
        ]
    })
}

fn payload() -> impl Strategy<Value = Value> {
    vec((leaf(), value()), 0..4).prop_map(Value::Hash)
}

/// Structural equality where NaN equals NaN (bit for bit) and -0.0 differs
/// from 0.0: "comes back equal" for payload values.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        (Value::Hash(xs), Value::Hash(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .zip(ys)
                    .all(|((kx, vx), (ky, vy))| same(kx, ky) && same(vx, vy))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------
// Event streams

/// Event names with known kinds; `failed` marks finish names whose status is error.
const START_NAMES: &[&str] = &[
    "task.started",
    "step.started",
    "step.before_handle.started",
    "a.started\nnext line",
];
const FINISH_NAMES: &[(&str, bool)] = &[
    ("task.completed", false),
    ("task.failed", true),
    ("step.before_handle.completed", false),
    ("failed_step.completed", true),
    ("x.failed\n", true),
];
const SPAN_NAMES: &[&str] = &[
    "step.before_handle",
    "step.after_handle",
    "task.after_transition.x",
];
const GENERIC_NAMES: &[&str] = &[
    "workflow.viable_steps_discovered",
    "task.completed.extra",
    "",
    "started",
];

/// Which trace an event names: one of a few keys (some with non-UTF-8 ids),
/// or none (a fresh key).
type KeyId = Option<u8>;

fn key_id() -> impl Strategy<Value = KeyId> {
    prop_oneof![1 => Just(None), 8 => (0u8..10).prop_map(Some)]
}

fn key_str(id: u8) -> Str {
    if id % 4 == 3 {
        // Same digits, different encoding: a different key.
        KeyField::Operation.key_for(&Str::new(vec![0xff, id], Encoding::Binary))
    } else if id % 4 == 2 {
        KeyField::WorkflowStepId.key_for(&Str::utf8(&id.to_string()))
    } else {
        KeyField::TaskId.key_for_int(i64::from(id))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Start(KeyId, usize, Value),
    Span(KeyId, usize, Value),
    Finish(KeyId, usize),
    Generic(usize, Value),
    Reject,
    Reset,
    Configure(Option<usize>, Option<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key_id(), 0..START_NAMES.len(), payload()).prop_map(|(k, n, p)| Op::Start(k, n, p)),
        8 => (key_id(), 0..SPAN_NAMES.len(), payload()).prop_map(|(k, n, p)| Op::Span(k, n, p)),
        5 => (key_id(), 0..FINISH_NAMES.len()).prop_map(|(k, n)| Op::Finish(k, n)),
        3 => (0..GENERIC_NAMES.len(), payload()).prop_map(|(n, p)| Op::Generic(n, p)),
        2 => Just(Op::Reject),
        1 => Just(Op::Reset),
        1 => (prop::option::of(1usize..8), prop::option::of(0usize..5))
            .prop_map(|(t, s)| Op::Configure(t, s)),
    ]
}

fn limits() -> impl Strategy<Value = Limits> {
    (prop::option::of(1usize..10), prop::option::of(0usize..5)).prop_map(|(t, s)| Limits {
        max_traces: t,
        max_spans_per_trace: s,
        timestamp_precision: 0,
    })
}

// ---------------------------------------------------------------------------
// The model

#[derive(Clone, Debug, PartialEq)]
enum ModelKey {
    Named(Str),
    Fresh,
    Generic,
}

#[derive(Debug)]
struct ModelRecord {
    key: ModelKey,
    event_name: &'static str,
    payload: Value,
    /// Start time on the monotonic clock, for durations; None for generic records.
    start_mono: Option<u64>,
    spans: Vec<(&'static str, Value)>,
    finish: Option<(&'static str, Status, f64)>,
}

#[derive(Debug, Default)]
struct Model {
    records: Vec<ModelRecord>,
    max_traces: Option<usize>,
    max_spans: Option<usize>,
    calls: u64,
    handled: u64,
    rejected: u64,
    orphaned: u64,
    evicted: u64,
    dropped: u64,
}

impl Model {
    fn new(limits: Limits) -> Model {
        Model {
            max_traces: limits.max_traces,
            max_spans: limits.max_spans_per_trace,
            ..Model::default()
        }
    }

    fn position(&self, key: &Str) -> Option<usize> {
        self.records
            .iter()
            .position(|r| r.key == ModelKey::Named(key.clone()))
    }

    fn push(&mut self, record: ModelRecord) {
        if let Some(max) = self.max_traces {
            while self.records.len() >= max {
                self.records.remove(0);
                self.evicted += 1;
            }
        }
        self.records.push(record);
    }

    fn apply(&mut self, op: &Op, mono: u64) {
        match op {
            Op::Reject => {
                self.calls += 1;
                self.rejected += 1;
            }
            Op::Reset => {
                self.records.clear();
                self.calls = 0;
                self.handled = 0;
                self.rejected = 0;
                self.orphaned = 0;
                self.evicted = 0;
                self.dropped = 0;
            }
            Op::Configure(t, s) => {
                self.max_traces = *t;
                self.max_spans = *s;
                if let Some(max) = *t {
                    while self.records.len() > max {
                        self.records.remove(0);
                        self.evicted += 1;
                    }
                }
            }
            Op::Generic(n, payload) => {
                self.calls += 1;
                self.handled += 1;
                self.push(ModelRecord {
                    key: ModelKey::Generic,
                    event_name: GENERIC_NAMES[*n],
                    payload: payload.clone(),
                    start_mono: None,
                    spans: Vec::new(),
                    finish: None,
                });
            }
            Op::Start(k, n, payload) => {
                self.calls += 1;
                self.handled += 1;
                let record = ModelRecord {
                    key: match k {
                        Some(id) => ModelKey::Named(key_str(*id)),
                        None => ModelKey::Fresh,
                    },
                    event_name: START_NAMES[*n],
                    payload: payload.clone(),
                    start_mono: Some(mono),
                    spans: Vec::new(),
                    finish: None,
                };
                match k.and_then(|id| self.position(&key_str(id))) {
                    Some(i) => self.records[i] = record,
                    None => self.push(record),
                }
            }
            Op::Span(k, n, payload) => {
                self.calls += 1;
                self.handled += 1;
                match k.and_then(|id| self.position(&key_str(id))) {
                    None => self.orphaned += 1,
                    Some(i)
                        if self
                            .max_spans
                            .is_some_and(|m| self.records[i].spans.len() >= m) =>
                    {
                        self.dropped += 1;
                    }
                    Some(i) => self.records[i]
                        .spans
                        .push((SPAN_NAMES[*n], payload.clone())),
                }
            }
            Op::Finish(k, n) => {
                self.calls += 1;
                self.handled += 1;
                let (name, failed) = FINISH_NAMES[*n];
                let status = if failed {
                    Status::Error
                } else {
                    Status::Success
                };
                match k.and_then(|id| self.position(&key_str(id))) {
                    None => self.orphaned += 1,
                    Some(i) => {
                        let r = &mut self.records[i];
                        let start = r.start_mono.unwrap_or(0);
                        let duration = round6(mono.saturating_sub(start) as f64 / 1e9);
                        r.finish = Some((name, status, duration));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Driving the store

fn stamp(step: u64) -> Stamp {
    Stamp {
        wall_ns: 1_795_607_947_000_000_000 + (step as i64) * 1_000,
        // Uneven steps, so durations are not round numbers.
        mono_ns: step * 1_234_567,
    }
}

fn event(name: &str, key: KeyId, payload: Value, at: Stamp) -> Event {
    let key = match key {
        Some(id) => KeySource::Field(key_str(id)),
        None => KeySource::Fresh,
    };
    Event::new(Str::utf8(name), key, payload, at)
}

fn drive(backend: &Backend, op: &Op, at: Stamp) {
    match op {
        Op::Start(k, n, p) => {
            backend.ingest(event(START_NAMES[*n], *k, p.clone(), at));
        }
        Op::Span(k, n, p) => {
            backend.ingest(event(SPAN_NAMES[*n], *k, p.clone(), at));
        }
        Op::Finish(k, n) => {
            backend.ingest(event(FINISH_NAMES[*n].0, *k, Value::Hash(vec![]), at));
        }
        Op::Generic(n, p) => {
            backend.ingest(event(GENERIC_NAMES[*n], None, p.clone(), at));
        }
        Op::Reject => backend.reject(),
        Op::Reset => backend.reset(),
        Op::Configure(t, s) => backend.configure(Limits {
            max_traces: *t,
            max_spans_per_trace: *s,
            timestamp_precision: 0,
        }),
    }
}

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(TestCaseError::fail(format!($($msg)+)));
        }
    };
}

/// The store agrees with the model: order, contents and counters.
fn compare(backend: &Backend, model: &Model) -> Result<(), TestCaseError> {
    let snapshot = backend.snapshot();
    check!(
        snapshot.entries.len() == model.records.len(),
        "{} records stored, model has {}",
        snapshot.entries.len(),
        model.records.len()
    );
    let keys: HashSet<&Str> = snapshot.entries.iter().map(|(k, _)| &**k).collect();
    check!(keys.len() == snapshot.entries.len(), "duplicate keys");

    for (i, ((key, record), m)) in snapshot.entries.iter().zip(&model.records).enumerate() {
        let key_ok = match &m.key {
            ModelKey::Named(k) => **key == *k,
            ModelKey::Fresh => key.bytes().starts_with(b"trace_"),
            ModelKey::Generic => key.bytes().starts_with(b"generic_"),
        };
        check!(key_ok, "position {i}: key {key:?}, model {:?}", m.key);
        match &**record {
            Record::Generic(g) => {
                check!(
                    m.key == ModelKey::Generic,
                    "position {i}: unexpected generic record"
                );
                check!(
                    g.event_name == Str::utf8(m.event_name),
                    "position {i}: generic name"
                );
                check!(
                    same(&g.payload.to_value(), &m.payload),
                    "position {i}: generic payload"
                );
            }
            Record::Trace(t) => {
                check!(
                    m.key != ModelKey::Generic,
                    "position {i}: expected a generic record"
                );
                check!(
                    t.event_name == Str::utf8(m.event_name),
                    "position {i}: start name"
                );
                check!(
                    same(&t.payload.to_value(), &m.payload),
                    "position {i}: start payload"
                );
                check!(
                    t.spans.len() == m.spans.len(),
                    "position {i}: {} spans, model {}",
                    t.spans.len(),
                    m.spans.len()
                );
                for (s, (name, payload)) in t.spans.iter().zip(&m.spans) {
                    check!(s.event_name == Str::utf8(name), "position {i}: span name");
                    check!(
                        same(&s.payload.to_value(), payload),
                        "position {i}: span payload"
                    );
                    check!(
                        s.at.mono_ns >= t.start.mono_ns,
                        "position {i}: span before start"
                    );
                }
                match (&t.finish, &m.finish) {
                    (None, None) => {}
                    (Some(f), Some((name, status, duration))) => {
                        check!(f.event_name == Str::utf8(name), "position {i}: finish name");
                        check!(f.status == *status, "position {i}: status");
                        check!(
                            f.duration.to_bits() == duration.to_bits() && f.duration >= 0.0,
                            "position {i}: duration {} vs {duration}",
                            f.duration
                        );
                    }
                    (f, m) => check!(false, "position {i}: finish {f:?} vs model {m:?}"),
                }
            }
        }
    }

    let stats = backend.stats();
    check!(
        stats.events_handled + stats.rejected_events == model.calls,
        "events_handled {} + rejected_events {} != calls {}",
        stats.events_handled,
        stats.rejected_events,
        model.calls
    );
    check!(stats.events_handled == model.handled, "events_handled");
    check!(stats.rejected_events == model.rejected, "rejected_events");
    check!(stats.orphaned_events == model.orphaned, "orphaned_events");
    check!(stats.evicted_traces == model.evicted, "evicted_traces");
    check!(stats.dropped_spans == model.dropped, "dropped_spans");
    check!(stats.active_traces == model.records.len(), "active_traces");
    check!(stats.max_traces == model.max_traces, "max_traces");
    if let Some(max) = model.max_traces {
        check!(stats.active_traces <= max, "more traces than max_traces");
    }
    Ok(())
}

#[test]
fn random_event_streams_match_the_model() {
    let strategy = (limits(), vec(op(), 1..120));
    runner(256)
        .run(&strategy, |(limits, ops)| {
            let backend = Backend::with_limits("host", limits);
            let mut model = Model::new(limits);
            for (step, op) in ops.iter().enumerate() {
                let at = stamp(step as u64 + 1);
                drive(&backend, op, at);
                model.apply(op, at.mono_ns);
                compare(&backend, &model)?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn snapshots_do_not_change_when_the_store_does() {
    let strategy = (vec(op(), 1..40), vec(op(), 1..40));
    runner(96)
        .run(&strategy, |(before, after)| {
            let backend = Backend::with_limits(
                "host",
                Limits {
                    max_traces: Some(6),
                    max_spans_per_trace: Some(3),
                    timestamp_precision: 0,
                },
            );
            for (step, op) in before.iter().enumerate() {
                drive(&backend, op, stamp(step as u64 + 1));
            }
            let snapshot = backend.snapshot();
            let copy: Vec<(Str, Record)> = snapshot
                .entries
                .iter()
                .map(|(k, r)| ((**k).clone(), (**r).clone()))
                .collect();
            for (step, op) in after.iter().enumerate() {
                drive(&backend, op, stamp(1_000 + step as u64));
            }
            check!(
                snapshot.entries.len() == copy.len(),
                "snapshot length changed"
            );
            for ((k, r), (ck, cr)) in snapshot.entries.iter().zip(&copy) {
                check!(**k == *ck, "snapshot key changed");
                let unchanged = match (&**r, cr) {
                    (Record::Trace(a), Record::Trace(b)) => {
                        a.spans.len() == b.spans.len()
                            && a.finish.as_ref().map(|f| f.status)
                                == b.finish.as_ref().map(|f| f.status)
                            && same(&a.payload.to_value(), &b.payload.to_value())
                    }
                    (Record::Generic(a), Record::Generic(b)) => {
                        same(&a.payload.to_value(), &b.payload.to_value())
                    }
                    _ => false,
                };
                check!(unchanged, "snapshot record changed under key {k:?}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_value_trees_survive_store_and_measure() {
    runner(300)
        .run(&vec(value(), 1..6), |values| {
            let backend = Backend::new("host");
            let payload = Value::Hash(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (Value::Int(i as i64), v.clone()))
                    .collect(),
            );
            let expected_depth = payload.depth();
            let expected_size = tasker_trace_core::value::Packed::from(&payload).heap_size();
            backend.ingest(event("task.started", Some(1), payload.clone(), stamp(1)));
            backend.ingest(event("step.before_x", Some(1), payload.clone(), stamp(2)));
            let snapshot = backend.snapshot();
            let Record::Trace(t) = &*snapshot.entries[0].1 else {
                return Err(TestCaseError::fail("expected a trace"));
            };
            check!(
                same(&t.payload.to_value(), &payload),
                "payload changed in the store"
            );
            check!(
                same(&t.spans[0].payload.to_value(), &payload),
                "span payload changed"
            );
            check!(
                t.payload.to_value().depth() == expected_depth,
                "depth changed"
            );
            check!(t.payload.heap_size() == expected_size, "heap size changed");
            check!(
                backend.heap_size() >= 2 * expected_size,
                "store heap size too small"
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn deep_and_wide_values_never_exhaust_the_stack() {
    runner(12)
        .run(&(1_000usize..60_000, any::<bool>()), |(depth, hashes)| {
            let mut v = Value::string("bottom");
            for i in 0..depth {
                v = if hashes {
                    Value::Hash(vec![(Value::Int(i as i64), v)])
                } else {
                    Value::Array(vec![v, Value::Nil])
                };
            }
            check!(v.depth() == depth, "depth {} != {depth}", v.depth());
            let backend = Backend::with_limits(
                "host",
                Limits {
                    max_traces: Some(1),
                    max_spans_per_trace: Some(1),
                    timestamp_precision: 0,
                },
            );
            backend.ingest(event("task.started", Some(1), v, stamp(1)));
            check!(backend.heap_size() > 0, "nothing measured");
            // Evicting and resetting free the deep tree without recursion.
            backend.ingest(event("task.started", Some(2), Value::Nil, stamp(2)));
            backend.reset();
            let wide = Value::Array((0..200_000).map(Value::Int).collect());
            backend.ingest(event("task.started", Some(3), wide, stamp(3)));
            check!(backend.len() == 1, "wide value not stored");
            Ok(())
        })
        .unwrap();
}

#[test]
fn concurrent_random_streams_keep_per_thread_order_and_counts() {
    // Each thread works on its own keys, so its part of the store must match a
    // model of its own ops, whatever the interleaving.
    const THREADS: usize = 4;
    let strategy = vec(vec(op(), 1..150), THREADS);
    runner(24)
        .run(&strategy, |streams| {
            let streams: Vec<Vec<Op>> = streams
                .into_iter()
                .map(|ops| {
                    ops.into_iter()
                        .filter(|op| !matches!(op, Op::Reset | Op::Configure(..)))
                        .map(|op| match op {
                            // Fresh keys and generic records are unordered
                            // across threads; keep named keys only.
                            Op::Start(None, n, p) => Op::Start(Some(0), n, p),
                            Op::Generic(..) => Op::Reject,
                            other => other,
                        })
                        .collect()
                })
                .collect();
            let backend = Arc::new(Backend::with_limits(
                "host",
                Limits {
                    max_traces: None,
                    max_spans_per_trace: Some(4),
                    timestamp_precision: 0,
                },
            ));
            let handles: Vec<_> = streams
                .iter()
                .cloned()
                .enumerate()
                .map(|(t, ops)| {
                    let backend = backend.clone();
                    std::thread::spawn(move || {
                        for (step, op) in ops.iter().enumerate() {
                            let op = with_thread_keys(op, t);
                            drive(&backend, &op, stamp(step as u64 + 1));
                        }
                    })
                })
                .collect();
            for h in handles {
                check!(h.join().is_ok(), "a writer thread panicked");
            }
            let mut total = Model::new(Limits {
                max_traces: None,
                max_spans_per_trace: Some(4),
                timestamp_precision: 0,
            });
            let snapshot = backend.snapshot();
            for (t, ops) in streams.iter().enumerate() {
                let mut model = Model::new(Limits {
                    max_traces: None,
                    max_spans_per_trace: Some(4),
                    timestamp_precision: 0,
                });
                for (step, op) in ops.iter().enumerate() {
                    model.apply(&with_thread_keys(op, t), stamp(step as u64 + 1).mono_ns);
                }
                let mine: Vec<&Str> = snapshot
                    .entries
                    .iter()
                    .map(|(k, _)| &**k)
                    .filter(|k| thread_of(k) == Some(t))
                    .collect();
                let want: Vec<Str> = model
                    .records
                    .iter()
                    .filter_map(|r| match &r.key {
                        ModelKey::Named(k) => Some(k.clone()),
                        _ => None,
                    })
                    .collect();
                check!(
                    mine.iter().copied().eq(want.iter()),
                    "thread {t}: keys out of order or missing"
                );
                total.calls += model.calls;
                total.handled += model.handled;
                total.rejected += model.rejected;
                total.orphaned += model.orphaned;
                total.dropped += model.dropped;
            }
            let stats = backend.stats();
            check!(
                stats.events_handled + stats.rejected_events == total.calls,
                "counters do not add up: {} + {} != {}",
                stats.events_handled,
                stats.rejected_events,
                total.calls
            );
            check!(stats.orphaned_events == total.orphaned, "orphaned_events");
            check!(stats.dropped_spans == total.dropped, "dropped_spans");
            Ok(())
        })
        .unwrap();
}

/// The op with its key moved into thread `t`'s own key space.
fn with_thread_keys(op: &Op, t: usize) -> Op {
    let shift = |k: &KeyId| k.map(|id| id % 10 + 10 * (t as u8 + 1));
    match op {
        Op::Start(k, n, p) => Op::Start(shift(k), *n, p.clone()),
        Op::Span(k, n, p) => Op::Span(shift(k), *n, p.clone()),
        Op::Finish(k, n) => Op::Finish(shift(k), *n),
        other => other.clone(),
    }
}

/// Which thread's key space a key belongs to.
fn thread_of(key: &Str) -> Option<usize> {
    (0..4usize).find(|t| (0..10u8).any(|id| key_str(id + 10 * (*t as u8 + 1)) == *key))
}
