//! The trace store: traces by key in first-insertion order, the routing of
//! events into it, limits, eviction and counters.
//!
//! One mutex guards the ordered map. Callers convert everything before they
//! call in, and copy out through [`Backend::snapshot`], so the lock is held only
//! for map operations and never while foreign (Ruby) code runs. Records are
//! `Arc`-shared: a snapshot clones pointers, and a later write to a record that a
//! snapshot still holds copies that record first (copy-on-write).

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use hashlink::LinkedHashMap;

use super::limits::Limits;
use crate::input::backend::event::Event;
use crate::input::backend::keys::KeySource;
use crate::input::backend::routing::{finish_status, Route, Status};
use crate::support::clock::{Stamp, UniqueInstants};
use crate::support::fork::{ForkSafeMutex, LockWaits};
use crate::support::ids::IdGenerator;
use crate::value::{Packed, Str};

/// A trace key, shared between the map and snapshots.
pub type Key = Arc<Str>;

/// A `.before_`/`.after_` event attached to a trace: one entry of its spans.
#[derive(Clone, Debug)]
pub struct SpanEntry {
    pub at: Stamp,
    pub event_name: Str,
    pub payload: Packed,
}

/// How and when a trace finished.
#[derive(Clone, Debug)]
pub struct Finish {
    pub at: Stamp,
    /// Seconds from start to finish on the monotonic clock, rounded to 6 decimals.
    pub duration: f64,
    pub status: Status,
    pub event_name: Str,
    pub payload: Packed,
}

/// A trace opened by a start event.
#[derive(Clone, Debug)]
pub struct TraceRecord {
    pub start: Stamp,
    pub event_name: Str,
    pub payload: Packed,
    pub spans: Vec<SpanEntry>,
    pub finish: Option<Finish>,
    /// OTLP identity, fixed when the trace starts.
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// An event that matched no trace rule, stored on its own.
#[derive(Clone, Debug)]
pub struct GenericRecord {
    pub at: Stamp,
    pub event_name: Str,
    pub payload: Packed,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

#[derive(Clone, Debug)]
pub enum Record {
    Trace(TraceRecord),
    Generic(GenericRecord),
}

impl Record {
    /// Finished traces and generic events are complete; open traces are not.
    pub fn is_complete(&self) -> bool {
        match self {
            Record::Trace(t) => t.finish.is_some(),
            Record::Generic(_) => true,
        }
    }

    /// Approximate heap bytes held, for reporting memory to a garbage collector.
    pub fn heap_size(&self) -> usize {
        match self {
            Record::Trace(t) => {
                t.event_name.heap_size()
                    + t.payload.heap_size()
                    + t.spans.capacity() * std::mem::size_of::<SpanEntry>()
                    + t.spans
                        .iter()
                        .map(|s| s.event_name.heap_size() + s.payload.heap_size())
                        .sum::<usize>()
                    + t.finish
                        .as_ref()
                        .map(|f| f.event_name.heap_size() + f.payload.heap_size())
                        .unwrap_or(0)
            }
            Record::Generic(g) => g.event_name.heap_size() + g.payload.heap_size(),
        }
    }
}

/// What `ingest` did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new trace or generic record was stored.
    Stored,
    /// A start event replaced the trace already under its key.
    Restarted,
    /// A finish or span event updated an open trace.
    Updated,
    /// A span beyond `max_spans_per_trace` was counted and not stored.
    SpanDropped,
    /// A finish or span event found no trace under its key.
    Orphaned,
}

/// Counters and sizes, as `stats` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub active_traces: usize,
    pub events_handled: u64,
    pub rejected_events: u64,
    pub orphaned_events: u64,
    pub evicted_traces: u64,
    pub dropped_spans: u64,
    pub max_traces: Option<usize>,
}

struct Store {
    map: LinkedHashMap<Key, Arc<Record>>,
    /// Records taken for export and held outside the store (the background
    /// exporter's retry queue): they count against `max_traces` too.
    held_for_export: Arc<AtomicUsize>,
    limits: Limits,
    ids: IdGenerator,
    orphaned_events: u64,
    evicted_traces: u64,
    dropped_spans: u64,
}

impl Store {
    /// Evicts the oldest records until at most `keep` remain (under
    /// `max_traces`). Evicted records are moved to `garbage` so that they are
    /// freed after the lock is released.
    fn evict_down_to(&mut self, keep: usize, garbage: &mut Vec<Arc<Record>>) {
        while self.map.len() > keep {
            match self.map.pop_front() {
                Some((_, rec)) => {
                    self.evicted_traces += 1;
                    garbage.push(rec);
                }
                None => break,
            }
        }
    }

    /// Evicts the oldest records until one more fits.
    fn make_room(&mut self, garbage: &mut Vec<Arc<Record>>) {
        if let Some(max) = self.limits.max_traces {
            let held = self.held_for_export.load(Ordering::Relaxed);
            self.evict_down_to(max.saturating_sub(held).saturating_sub(1), garbage);
        }
    }

    /// Evicts the oldest records until the store is within `max_traces`.
    fn shrink_to_limit(&mut self, garbage: &mut Vec<Arc<Record>>) {
        if let Some(max) = self.limits.max_traces {
            let held = self.held_for_export.load(Ordering::Relaxed);
            self.evict_down_to(max.saturating_sub(held), garbage);
        }
    }

    /// Stores a new record under `key` at the end of the order, making room first.
    fn insert_new(&mut self, key: Key, rec: Arc<Record>, garbage: &mut Vec<Arc<Record>>) {
        // The exporter's queue alone fills `max_traces`: no room at all, so
        // the new record is dropped (counted) rather than passing the bound.
        let held = self.held_for_export.load(Ordering::Relaxed);
        if self.limits.max_traces.is_some_and(|max| held >= max) {
            self.evict_down_to(0, garbage);
            self.evicted_traces += 1;
            garbage.push(rec);
            return;
        }
        self.make_room(garbage);
        self.map.insert(key, rec);
    }
}

/// What [`Backend::drain_complete_with_limit`] read under one lock.
pub struct ExportDrain {
    pub records: Vec<(Key, Arc<Record>)>,
    pub max_traces: Option<usize>,
    /// Traces evicted by `max_traces` so far.
    pub evicted_traces: u64,
}

/// The process-wide trace backend.
pub struct Backend {
    store: ForkSafeMutex<Store>,
    /// See `Store::held_for_export`; set without the store's lock.
    held_for_export: Arc<AtomicUsize>,
    events_handled: AtomicU64,
    rejected_events: AtomicU64,
    /// Finished traces the sampling ratio left out of an OTLP export.
    sampled_out: AtomicU64,
    precision: AtomicU8,
    instants: UniqueInstants,
    created_at: Stamp,
    instance_id: String,
}

/// A consistent copy of the store's contents, in order, taken under the lock.
pub struct Snapshot {
    pub entries: Vec<(Key, Arc<Record>)>,
    pub timestamp_precision: u8,
}

impl Backend {
    pub fn new(instance_id: impl Into<String>) -> Backend {
        Backend::with_limits(instance_id, Limits::default())
    }

    pub fn with_limits(instance_id: impl Into<String>, limits: Limits) -> Backend {
        let held_for_export = Arc::new(AtomicUsize::new(0));
        Backend {
            held_for_export: held_for_export.clone(),
            store: ForkSafeMutex::new(Store {
                map: LinkedHashMap::new(),
                held_for_export,
                limits,
                ids: IdGenerator::new(),
                orphaned_events: 0,
                evicted_traces: 0,
                dropped_spans: 0,
            }),
            events_handled: AtomicU64::new(0),
            rejected_events: AtomicU64::new(0),
            sampled_out: AtomicU64::new(0),
            precision: AtomicU8::new(limits.timestamp_precision),
            instants: UniqueInstants::default(),
            created_at: Stamp::now(),
            instance_id: instance_id.into(),
        }
    }

    /// Makes this process-wide backend's locks fork-safe (see [`crate::support::fork`]).
    pub fn register_for_fork(&'static self) -> bool {
        self.store.register()
    }

    /// What its lock counted (see [`crate::support::fork::count_lock_waits`]).
    pub fn lock_waits(&self) -> LockWaits {
        self.store.lock_waits()
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn created_at(&self) -> Stamp {
        self.created_at
    }

    pub fn timestamp_precision(&self) -> u8 {
        self.precision.load(Ordering::Relaxed)
    }

    /// Counts an event that was refused before it reached the store.
    pub fn reject(&self) {
        self.rejected_events.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores one event according to its kind.
    pub fn ingest(&self, event: Event) -> Outcome {
        self.events_handled.fetch_add(1, Ordering::Relaxed);
        let mut garbage: Vec<Arc<Record>> = Vec::new();
        let outcome = match event.kind {
            Route::Generic => self.store_generic(event, &mut garbage),
            Route::Start => self.start_trace(event, &mut garbage),
            Route::Finish | Route::Span => self.update_trace(event),
        };
        // Replaced and evicted records are freed here, after the lock is gone.
        drop(garbage);
        outcome
    }

    /// A generic event: a record of its own under a fresh `generic_` key.
    fn store_generic(&self, event: Event, garbage: &mut Vec<Arc<Record>>) -> Outcome {
        let key = Arc::new(self.instants.key_str("generic_", event.at.wall_ns));
        let mut store = self.store.lock();
        let (trace_id, span_id) = store.ids.trace_and_span();
        let rec = Record::Generic(GenericRecord {
            at: event.at,
            event_name: event.name,
            payload: event.payload,
            trace_id,
            span_id,
        });
        store.insert_new(key, Arc::new(rec), garbage);
        Outcome::Stored
    }

    /// A start event: a new trace, or a restart of the one under its key,
    /// which keeps the key's place in the order.
    fn start_trace(&self, event: Event, garbage: &mut Vec<Arc<Record>>) -> Outcome {
        let key = match event.key {
            KeySource::Field(k) => Arc::new(k),
            KeySource::Fresh => Arc::new(self.instants.key_str("trace_", event.at.wall_ns)),
        };
        let mut store = self.store.lock();
        let (trace_id, span_id) = store.ids.trace_and_span();
        let rec = Arc::new(Record::Trace(TraceRecord {
            start: event.at,
            event_name: event.name,
            payload: event.payload,
            spans: Vec::new(),
            finish: None,
            trace_id,
            span_id,
        }));
        match store.map.get_mut(&key) {
            Some(slot) => {
                garbage.push(std::mem::replace(slot, rec));
                Outcome::Restarted
            }
            None => {
                store.insert_new(key, rec, garbage);
                Outcome::Stored
            }
        }
    }

    /// A finish or span event: updates the open trace under its key, or is
    /// counted as an orphan when there is none.
    fn update_trace(&self, event: Event) -> Outcome {
        let Event {
            name,
            kind,
            key,
            payload,
            at,
        } = event;
        let mut store = self.store.lock();
        // A fresh key names no trace: the event is an orphan.
        let KeySource::Field(key) = key else {
            store.orphaned_events += 1;
            return Outcome::Orphaned;
        };
        let max_spans = store.limits.max_spans_per_trace;
        let trace = match store.map.get_mut(&key).map(Arc::make_mut) {
            Some(Record::Trace(t)) => t,
            Some(Record::Generic(_)) | None => {
                store.orphaned_events += 1;
                return Outcome::Orphaned;
            }
        };
        if kind == Route::Finish {
            trace.finish = Some(Finish {
                at,
                duration: trace.start.seconds_until(&at),
                status: finish_status(name.bytes()),
                event_name: name,
                payload,
            });
            return Outcome::Updated;
        }
        if max_spans.is_some_and(|m| trace.spans.len() >= m) {
            store.dropped_spans += 1;
            return Outcome::SpanDropped;
        }
        // Most traces have a few spans: grow one at a time up to 4, then as
        // usual (doubling).
        if trace.spans.len() < 4 && trace.spans.len() == trace.spans.capacity() {
            trace.spans.reserve_exact(1);
        }
        trace.spans.push(SpanEntry {
            at,
            event_name: name,
            payload,
        });
        Outcome::Updated
    }

    /// Copies the store's contents out, in order.
    pub fn snapshot(&self) -> Snapshot {
        let store = self.store.lock();
        let entries = store
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Snapshot {
            entries,
            timestamp_precision: store.limits.timestamp_precision,
        }
    }

    /// How many records the background exporter holds taken and not yet
    /// delivered: new records then evict the oldest stored ones so that the
    /// store and that queue together stay within `max_traces`. Takes no lock.
    pub fn set_held_for_export(&self, n: usize) {
        self.held_for_export.store(n, Ordering::Relaxed);
    }

    /// Number of traces stored.
    pub fn len(&self) -> usize {
        self.store.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> Stats {
        let store = self.store.lock();
        Stats {
            active_traces: store.map.len(),
            events_handled: self.events_handled.load(Ordering::Relaxed),
            rejected_events: self.rejected_events.load(Ordering::Relaxed),
            orphaned_events: store.orphaned_events,
            evicted_traces: store.evicted_traces,
            dropped_spans: store.dropped_spans,
            max_traces: store.limits.max_traces,
        }
    }

    /// Counts finished traces an OTLP export drained and left out for the
    /// sampling ratio (`export` and `stats` are unaffected: the drop-in
    /// contract returns every trace).
    pub fn count_sampled_out(&self, n: usize) {
        self.sampled_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Finished traces OTLP exports left out for the sampling ratio.
    pub fn sampled_out(&self) -> u64 {
        self.sampled_out.load(Ordering::Relaxed)
    }

    /// Removes every trace and zeroes the counters.
    pub fn reset(&self) {
        let old = {
            let mut store = self.store.lock();
            store.orphaned_events = 0;
            store.evicted_traces = 0;
            store.dropped_spans = 0;
            self.events_handled.store(0, Ordering::Relaxed);
            self.rejected_events.store(0, Ordering::Relaxed);
            self.sampled_out.store(0, Ordering::Relaxed);
            std::mem::take(&mut store.map)
        };
        drop(old);
    }

    pub fn limits(&self) -> Limits {
        self.store.lock().limits
    }

    /// Puts new limits in force; a lower `max_traces` evicts the oldest at once.
    pub fn configure(&self, limits: Limits) {
        let mut garbage = Vec::new();
        {
            let mut store = self.store.lock();
            store.limits = limits;
            self.precision
                .store(limits.timestamp_precision, Ordering::Relaxed);
            store.shrink_to_limit(&mut garbage);
        }
        drop(garbage);
    }

    /// Removes and returns the complete records (and the open ones too when
    /// `include_open`), in order, in one step under the lock.
    pub fn drain(&self, include_open: bool) -> Vec<(Key, Arc<Record>)> {
        drain_locked(&mut self.store.lock(), include_open)
    }

    /// [`Backend::drain`] of the complete records, with `max_traces` (the
    /// bound of a background exporter's retry queue) and the traces evicted
    /// so far read under the same lock.
    pub fn drain_complete_with_limit(&self) -> ExportDrain {
        let mut store = self.store.lock();
        ExportDrain {
            max_traces: store.limits.max_traces,
            evicted_traces: store.evicted_traces,
            records: drain_locked(&mut store, false),
        }
    }

    /// Puts drained records back (after a failed delivery). A key that was
    /// stored again in the meantime keeps its newer record. Restored records go
    /// to the end of the order and count against `max_traces` like new ones.
    pub fn restore(&self, entries: Vec<(Key, Arc<Record>)>) {
        let mut garbage = Vec::new();
        {
            let mut store = self.store.lock();
            for (key, rec) in entries {
                if store.map.contains_key(&key) {
                    garbage.push(rec);
                    continue;
                }
                store.insert_new(key, rec, &mut garbage);
            }
        }
        drop(garbage);
    }

    /// Approximate heap bytes the stored records hold.
    pub fn heap_size(&self) -> usize {
        let snapshot = self.snapshot();
        snapshot
            .entries
            .iter()
            .map(|(k, r)| k.heap_size() + r.heap_size())
            .sum()
    }
}

/// Removes the complete records (and the open ones with `include_open`) in
/// order: one pass over the store.
fn drain_locked(store: &mut Store, include_open: bool) -> Vec<(Key, Arc<Record>)> {
    let keys: Vec<Key> = store
        .map
        .iter()
        .filter(|(_, rec)| include_open || rec.is_complete())
        .map(|(k, _)| k.clone())
        .collect();
    keys.into_iter()
        .filter_map(|k| store.map.remove(&k).map(|rec| (k, rec)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::backend::keys::KeyField;
    use crate::value::Value;

    fn at(secs: i64, mono_ms: u64) -> Stamp {
        Stamp {
            wall_ns: secs * 1_000_000_000,
            mono_ns: mono_ms * 1_000_000,
        }
    }

    fn task(id: i64) -> KeySource {
        KeySource::Field(KeyField::TaskId.key_for_int(id))
    }

    fn ev(name: &str, key: KeySource, t: Stamp) -> Event {
        Event::new(Str::utf8(name), key, Value::Hash(vec![]), t)
    }

    fn keys(b: &Backend) -> Vec<String> {
        b.snapshot()
            .entries
            .iter()
            .map(|(k, _)| k.to_string_lossy())
            .collect()
    }

    fn trace(b: &Backend, key: &str) -> TraceRecord {
        let snap = b.snapshot();
        let (_, rec) = snap
            .entries
            .iter()
            .find(|(k, _)| k.to_string_lossy() == key)
            .expect("trace present");
        match &**rec {
            Record::Trace(t) => t.clone(),
            Record::Generic(_) => panic!("generic record"),
        }
    }

    #[test]
    fn lifecycle_start_span_finish() {
        let b = Backend::new("host");
        assert_eq!(
            b.ingest(ev("task.started", task(1), at(10, 0))),
            Outcome::Stored
        );
        assert_eq!(
            b.ingest(ev("step.before_handle", task(1), at(10, 5))),
            Outcome::Updated
        );
        assert_eq!(
            b.ingest(ev("task.completed", task(1), at(11, 1_500))),
            Outcome::Updated
        );
        let t = trace(&b, "task_1");
        assert_eq!(t.spans.len(), 1);
        let f = t.finish.expect("finished");
        assert_eq!(f.status, Status::Success);
        assert_eq!(f.duration, 1.5);
        assert_eq!(b.stats().events_handled, 3);
    }

    #[test]
    fn failed_finish_is_error_and_later_finish_overwrites() {
        let b = Backend::new("host");
        b.ingest(ev("task.started", task(1), at(10, 0)));
        b.ingest(ev("task.failed", task(1), at(10, 100)));
        assert_eq!(trace(&b, "task_1").finish.unwrap().status, Status::Error);
        b.ingest(ev("task.completed", task(1), at(10, 300)));
        let f = trace(&b, "task_1").finish.unwrap();
        assert_eq!(f.status, Status::Success);
        assert_eq!(f.duration, 0.3);
    }

    #[test]
    fn restart_replaces_in_place_keeping_order() {
        let b = Backend::new("host");
        b.ingest(ev("task.started", task(1), at(1, 0)));
        b.ingest(ev("task.started", task(2), at(1, 0)));
        b.ingest(ev("step.after_x", task(1), at(1, 1)));
        b.ingest(ev("task.completed", task(1), at(1, 2)));
        assert_eq!(
            b.ingest(ev("task.started", task(1), at(2, 3))),
            Outcome::Restarted
        );
        assert_eq!(keys(&b), ["task_1", "task_2"]);
        let t = trace(&b, "task_1");
        assert!(t.spans.is_empty());
        assert!(t.finish.is_none());
        assert_eq!(t.start, at(2, 3));
    }

    #[test]
    fn orphans_are_taken_counted_and_store_nothing() {
        let b = Backend::new("host");
        assert_eq!(
            b.ingest(ev("task.completed", task(9), at(1, 0))),
            Outcome::Orphaned
        );
        assert_eq!(
            b.ingest(ev("step.before_x", task(9), at(1, 0))),
            Outcome::Orphaned
        );
        assert_eq!(
            b.ingest(ev("task.completed", KeySource::Fresh, at(1, 0))),
            Outcome::Orphaned
        );
        assert!(b.is_empty());
        let s = b.stats();
        assert_eq!((s.orphaned_events, s.events_handled), (3, 3));
    }

    #[test]
    fn generic_keys_are_unique_within_one_tick() {
        let b = Backend::new("host");
        for _ in 0..1000 {
            b.ingest(ev("workflow.something", KeySource::Fresh, at(5, 0)));
        }
        let k = keys(&b);
        assert_eq!(k.len(), 1000);
        assert!(k.iter().all(|k| k.starts_with("generic_5.")));
        let mut sorted = k.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
    }

    #[test]
    fn start_without_id_gets_a_fresh_trace_key() {
        let b = Backend::new("host");
        b.ingest(ev("task.started", KeySource::Fresh, at(7, 0)));
        b.ingest(ev("task.started", KeySource::Fresh, at(7, 0)));
        let k = keys(&b);
        assert_eq!(k.len(), 2);
        assert!(k.iter().all(|k| k.starts_with("trace_7.")));
    }

    #[test]
    fn eviction_removes_the_oldest_and_counts() {
        let limits = Limits {
            max_traces: Some(3),
            ..Limits::default()
        };
        let b = Backend::with_limits("host", limits);
        for i in 0..5 {
            b.ingest(ev("task.started", task(i), at(1, 0)));
        }
        assert_eq!(keys(&b), ["task_2", "task_3", "task_4"]);
        // Restarting an existing key does not evict.
        b.ingest(ev("task.started", task(3), at(1, 0)));
        assert_eq!(keys(&b), ["task_2", "task_3", "task_4"]);
        let s = b.stats();
        assert_eq!((s.evicted_traces, s.max_traces), (2, Some(3)));
        // Lowering the limit evicts at once.
        b.configure(Limits {
            max_traces: Some(1),
            ..limits
        });
        assert_eq!(keys(&b), ["task_4"]);
        assert_eq!(b.stats().evicted_traces, 4);
    }

    #[test]
    fn spans_beyond_the_limit_are_dropped_and_counted() {
        let b = Backend::with_limits(
            "host",
            Limits {
                max_spans_per_trace: Some(2),
                ..Limits::default()
            },
        );
        b.ingest(ev("task.started", task(1), at(1, 0)));
        for _ in 0..2 {
            assert_eq!(
                b.ingest(ev("step.before_x", task(1), at(1, 0))),
                Outcome::Updated
            );
        }
        assert_eq!(
            b.ingest(ev("step.before_x", task(1), at(1, 0))),
            Outcome::SpanDropped
        );
        assert_eq!(trace(&b, "task_1").spans.len(), 2);
        assert_eq!(b.stats().dropped_spans, 1);
    }

    #[test]
    fn snapshot_is_independent_of_later_writes() {
        let b = Backend::new("host");
        b.ingest(ev("task.started", task(1), at(1, 0)));
        let snap = b.snapshot();
        b.ingest(ev("step.before_x", task(1), at(1, 0)));
        b.ingest(ev("task.completed", task(1), at(1, 0)));
        match &*snap.entries[0].1 {
            Record::Trace(t) => {
                assert!(t.spans.is_empty());
                assert!(t.finish.is_none());
            }
            Record::Generic(_) => panic!(),
        }
        assert_eq!(trace(&b, "task_1").spans.len(), 1);
    }

    #[test]
    fn reset_clears_traces_and_counters() {
        let b = Backend::new("host");
        b.ingest(ev("task.started", task(1), at(1, 0)));
        b.ingest(ev("task.completed", task(2), at(1, 0)));
        b.reject();
        b.reset();
        assert_eq!(
            b.stats(),
            Stats {
                max_traces: Some(100_000),
                ..Stats::default()
            }
        );
    }

    #[test]
    fn drain_takes_complete_records_and_restore_puts_them_back() {
        let b = Backend::new("host");
        b.ingest(ev("task.started", task(1), at(1, 0)));
        b.ingest(ev("task.started", task(2), at(1, 0)));
        b.ingest(ev("task.completed", task(2), at(1, 0)));
        b.ingest(ev("workflow.x", KeySource::Fresh, at(1, 0)));
        let drained = b.drain(false);
        assert_eq!(drained.len(), 2);
        assert_eq!(keys(&b), ["task_1"]);
        b.restore(drained);
        assert_eq!(keys(&b).len(), 3);
        assert_eq!(b.drain(true).len(), 3);
        assert!(b.is_empty());
    }

    #[test]
    fn trace_ids_are_non_zero_and_distinct() {
        let b = Backend::new("host");
        for i in 0..100 {
            b.ingest(ev("task.started", task(i), at(1, 0)));
        }
        let snap = b.snapshot();
        let mut ids: Vec<[u8; 16]> = snap
            .entries
            .iter()
            .map(|(_, r)| match &**r {
                Record::Trace(t) => {
                    assert_ne!(t.span_id, [0; 8]);
                    t.trace_id
                }
                Record::Generic(g) => g.trace_id,
            })
            .collect();
        assert!(ids.iter().all(|id| *id != [0; 16]));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 100);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let b = Arc::new(Backend::new("host"));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let id = t * 1000 + i;
                        b.ingest(ev("task.started", task(id), Stamp::now()));
                        b.ingest(ev("step.before_x", task(id), Stamp::now()));
                        b.ingest(ev("task.completed", task(id), Stamp::now()));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.len(), 2000);
        assert_eq!(b.stats().events_handled, 6000);
        for (_, rec) in b.snapshot().entries {
            match &*rec {
                Record::Trace(t) => {
                    assert_eq!(t.spans.len(), 1);
                    assert!(t.finish.is_some());
                }
                Record::Generic(_) => panic!(),
            }
        }
    }
}
