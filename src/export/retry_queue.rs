//! The background exporter's retry queue and its backoff. The queue belongs
//! to the exporter's thread: what it took from the sources and could not
//! deliver waits here, outside every lock an app thread takes, and is sent
//! again (with what was taken since) at the next attempt.
//!
//! - **Bounded.** At most `max_finished_runs` runs and `max_traces` records
//!   (the bounds of the sources they came from); beyond that the oldest go
//!   first, counted in `exporter_stats[:dropped_traces]`. The records held
//!   here count against the store's `max_traces` too (new records evict the
//!   oldest stored ones), so the two together stay within it. After a failed
//!   export it also keeps at most `export_max_queue_size`
//!   (`OTEL_BSP_MAX_QUEUE_SIZE`) runs and as many records.
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
    /// bounds; returns how many of the oldest were dropped.
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
        self.batch.runs.extend(runs);
        self.batch.records.extend(records);
        let mut dropped = 0;
        let runs = &mut self.batch.runs;
        if runs.len() > max_runs {
            let excess = runs.len() - max_runs;
            runs.drain(..excess);
            dropped += excess;
        }
        if let Some(max) = max_records {
            let records = &mut self.batch.records;
            if records.len() > max {
                let excess = records.len() - max;
                records.drain(..excess);
                dropped += excess;
            }
        }
        dropped
    }

    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// After a failed export: keeps at most `max` runs and `max` records
    /// (`export_max_queue_size`), dropping the oldest; returns how many went.
    /// Applied only to what waits for a retry, never to a fresh take, so a
    /// healthy collector loses nothing to it.
    pub fn trim(&mut self, max: usize) -> usize {
        let mut dropped = 0;
        if self.batch.runs.len() > max {
            let excess = self.batch.runs.len() - max;
            self.batch.runs.drain(..excess);
            dropped += excess;
        }
        if self.batch.records.len() > max {
            let excess = self.batch.records.len() - max;
            self.batch.records.drain(..excess);
            dropped += excess;
        }
        dropped
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
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
}
