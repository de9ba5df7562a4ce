//! Where an export takes from: the drop-in backend's store and, when the
//! process has one, the lifecycle tracer; what both have waiting or dropped;
//! and what a fork child leaves to its parent.

use std::time::Duration;

use crate::model::backend::store::{Backend, Key, Record};
use crate::model::lifecycle::{Run, Tracer};
use crate::model::{Source, Take, Taken};

use std::sync::Arc;

/// How long a finished run waits for late duplicates before a scheduled
/// export takes it (a flush takes it at once).
pub const RUN_SETTLE: Duration = Duration::from_secs(1);

/// What a background exporter took ([`Sources::take_for_exporter`]).
pub struct ExporterTake {
    pub runs: Vec<Run>,
    pub records: Vec<(Key, Arc<Record>)>,
    /// The runs' attribute prefix.
    pub prefix: Arc<str>,
    /// `max_finished_runs` of the tracer, `max_traces` of the store.
    pub max_runs: usize,
    pub max_records: Option<usize>,
}

/// The sources of one export.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// The drop-in backend's store.
    pub store: &'a Backend,
    /// The lifecycle tracer, when the process has one.
    pub runs: Option<&'a Tracer>,
}

impl<'a> Sources<'a> {
    /// The store alone.
    pub fn store(store: &'a Backend) -> Sources<'a> {
        Sources { store, runs: None }
    }

    /// The store and the lifecycle tracer.
    pub fn both(store: &'a Backend, tracer: &'a Tracer) -> Sources<'a> {
        Sources {
            store,
            runs: Some(tracer),
        }
    }

    /// The prefix of the runs' attribute keys: the tracer's (none without
    /// a tracer).
    pub fn attribute_prefix(&self) -> Arc<str> {
        self.runs
            .map_or_else(|| Arc::from(""), |t| t.attribute_prefix())
    }

    /// The tracer's runs as `take` asks (nothing without a tracer).
    pub fn take_runs(&self, take: Take) -> Taken<Run> {
        self.runs.map(|t| t.take(take)).unwrap_or_default()
    }

    /// A background exporter's take: the settled runs (idle for
    /// `settled_for`, or settled by the bound; all finished runs with zero)
    /// and the complete records, with the runs' attribute prefix and the
    /// sources' bounds, one lock of each source at a time.
    pub fn take_for_exporter(&self, settled_for: Duration) -> ExporterTake {
        let (runs, prefix, max_runs) = match self.runs {
            Some(t) => t.take_for_export(settled_for),
            None => (Vec::new(), Arc::from(""), 0),
        };
        let (records, max_records) = self.store.drain_complete_with_limit();
        ExporterTake {
            runs,
            records,
            prefix,
            max_runs,
            max_records,
        }
    }

    /// Puts back what a drain took from both sources.
    pub fn put_back(&self, records: Taken<(Key, Arc<Record>)>, runs: Taken<Run>) {
        records.put_back(self.store);
        self.put_back_runs(runs);
    }

    /// Puts back the runs a drain took.
    pub fn put_back_runs(&self, runs: Taken<Run>) {
        if let Some(tracer) = self.runs {
            runs.put_back(tracer);
        }
    }

    /// In a fork child: removes the finished traces, generic events and runs
    /// that finished at or before `forked_at_ns` (monotonic clock), which
    /// belong to the parent's exporter; what finished after stays. Returns
    /// how many were removed.
    pub fn discard_finished_before(&self, forked_at_ns: u64) -> usize {
        let store = self.store.discard_finished_before(forked_at_ns);
        store
            + self
                .runs
                .map_or(0, |t| t.discard_finished_before(forked_at_ns))
    }

    /// Finished traces, generic events and runs waiting for export.
    pub fn queued(&self) -> usize {
        self.store.queued() + self.runs.map_or(0, Source::queued)
    }

    /// Traces evicted from the store and finished runs dropped before export.
    pub fn dropped(&self) -> u64 {
        self.store.dropped() + self.runs.map_or(0, Source::dropped)
    }
}
