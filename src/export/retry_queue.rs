//! The background exporter's retry queue and its backoff. The queue belongs
//! to the exporter's thread: what it took from the sources and could not
//! deliver waits here, outside every lock an app thread takes, and is sent
//! again (with what was taken since) at the next attempt.
//!
//! - **Bounded.** At most `max_finished_runs` runs and `max_traces` records
//!   (the bounds of the sources they came from) wait from one take to the
//!   next; beyond that the oldest waiting go first, counted in
//!   `exporter_stats[:dropped_traces]`. A fresh take is never cut: the
//!   sources bounded it already, and a flush takes runs still settling
//!   with the settled ones, up to twice the bound. The records held
//!   here count against the store's `max_traces` too (new records evict the
//!   oldest stored ones), so the two together stay within it. After a failed
//!   export it keeps at most `export_max_queue_size`
//!   (`OTEL_BSP_MAX_QUEUE_SIZE`) traces, runs and records together: the
//!   youngest beyond that go back to their sources (a flush during an
//!   outage takes everything; what it took beyond the queue's size waits
//!   in the sources again, within their bounds, as before the flush).
//! - **Backoff.** After a failed export the next attempt waits
//!   [`backoff`]: 1 s doubling to at most 60 s, times a jitter in
//!   `[0.5, 1.0]`. While it waits the exporter takes nothing from the
//!   sources: new runs and records queue there within their own bounds. A
//!   flush or the final export tries at once.

use std::sync::Arc;
use std::time::Duration;

use super::pipeline::Batch;
use super::sources::ExporterTake;

/// The first wait after a failed export; it doubles with each failure in a
/// row, up to [`MAX_EXPORT_BACKOFF`].
pub const INITIAL_EXPORT_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between failed exports.
pub const MAX_EXPORT_BACKOFF: Duration = Duration::from_secs(60);

/// The wait after `failures` failed exports in a row (from 1), scaled by
/// `jitter` in `[0.5, 1.0]` so that many processes do not retry in step.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = INITIAL_EXPORT_BACKOFF
        .saturating_mul(1u32 << exp)
        .min(MAX_EXPORT_BACKOFF);
    base.mul_f64(jitter.clamp(0.5, 1.0))
}

/// What the exporter holds: taken from the sources and not yet delivered.
pub(super) struct RetryQueue {
    pub batch: Batch,
    /// The runs' attribute prefix at the latest take.
    pub prefix: Arc<str>,
}

impl Default for RetryQueue {
    fn default() -> Self {
        RetryQueue {
            batch: Batch::default(),
            prefix: Arc::from(""),
        }
    }
}

impl RetryQueue {
    /// Appends what was taken (younger than what waits) and applies the
    /// bounds to what waited before it (the take itself is never cut);
    /// returns how many of the oldest were dropped.
    pub fn append(&mut self, take: ExporterTake) -> usize {
        let ExporterTake {
            runs,
            records,
            prefix,
            max_runs,
            max_records,
            ..
        } = take;
        self.prefix = prefix;
        let mut dropped = make_room(&mut self.batch.runs, runs.len(), max_runs);
        self.batch.runs.extend(runs);
        if let Some(max) = max_records {
            dropped += make_room(&mut self.batch.records, records.len(), max);
        }
        self.batch.records.extend(records);
        dropped
    }

    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// After a failed export: keeps the oldest `max` traces
    /// (`export_max_queue_size`), runs first, then records; returns the
    /// others, to go back to their sources.
    pub fn split_excess(&mut self, max: usize) -> Batch {
        let runs = self.batch.runs.len().min(max);
        let records = self.batch.records.len().min(max - runs);
        Batch {
            runs: self.batch.runs.split_off(runs),
            records: self.batch.records.split_off(records),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

/// Drops the oldest of `waiting` so that `coming` more fit within `max`,
/// or all of them when `coming` alone reaches it; returns how many went.
fn make_room<T>(waiting: &mut Vec<T>, coming: usize, max: usize) -> usize {
    let excess = (waiting.len() + coming)
        .saturating_sub(max)
        .min(waiting.len());
    waiting.drain(..excess);
    excess
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lifecycle::{Run, RunEnd};

    fn run(n: u8) -> Run {
        Run {
            task_id: None,
            trace_id: [n; 16],
            end: RunEnd::Completed,
            spans: Vec::new(),
            sampled: true,
            printed: false,
        }
    }

    fn take(first: u8, runs: u8, max_runs: usize) -> ExporterTake {
        ExporterTake {
            runs: (first..first + runs).map(run).collect(),
            records: Vec::new(),
            prefix: Arc::from("tasker."),
            max_runs,
            max_records: Some(10),
            dropped: Default::default(),
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute_with_jitter() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(3, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(7, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(u32::MAX, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn the_queue_keeps_the_youngest_within_the_bound_and_counts_the_rest() {
        let mut q = RetryQueue::default();
        assert_eq!(q.append(take(1, 3, 4)), 0);
        assert_eq!(q.append(take(4, 3, 4)), 2);
        let kept: Vec<u8> = q.batch.runs.iter().map(|r| r.trace_id[0]).collect();
        assert_eq!(kept, [3, 4, 5, 6]);
        assert_eq!(&*q.prefix, "tasker.");
    }

    #[test]
    fn after_a_failure_the_youngest_beyond_the_size_go_back() {
        let mut q = RetryQueue::default();
        q.append(take(1, 5, 100));
        let back = q.split_excess(3);
        let kept: Vec<u8> = q.batch.runs.iter().map(|r| r.trace_id[0]).collect();
        let gone: Vec<u8> = back.runs.iter().map(|r| r.trace_id[0]).collect();
        assert_eq!((kept, gone), (vec![1, 2, 3], vec![4, 5]));
        assert!(q.split_excess(3).is_empty());
    }

    #[test]
    fn a_fresh_take_is_never_cut_only_what_waited_before_it() {
        let mut q = RetryQueue::default();
        assert_eq!(q.append(take(1, 3, 4)), 0);
        // A flush's take: settled and settling runs, past the bound.
        assert_eq!(q.append(take(10, 6, 4)), 3);
        let kept: Vec<u8> = q.batch.runs.iter().map(|r| r.trace_id[0]).collect();
        assert_eq!(kept, [10, 11, 12, 13, 14, 15]);
    }
}
