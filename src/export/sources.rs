//! Where an export takes from: the drop-in backend's store and, when the
//! process has one, the lifecycle tracer; what both have waiting or dropped;
//! and what a fork child leaves to its parent.

use std::time::Duration;

use crate::model::backend::store::{Backend, Key, Record};
use crate::model::lifecycle::{Run, Tracer};
use crate::model::sampling::{ratio_sampled, KeptSpans, Sampling};
use crate::model::{Source, Take, Taken};

use std::sync::Arc;

/// How long a finished run waits for late duplicates before a scheduled
/// export takes it (a flush takes it at once).
pub const RUN_SETTLE: Duration = Duration::from_secs(1);

fn record_trace_id(rec: &Record) -> &[u8; 16] {
    match rec {
        Record::Trace(t) => &t.trace_id,
        Record::Generic(g) => &g.trace_id,
    }
}

/// What a background exporter took ([`Sources::take_for_exporter`]).
pub struct ExporterTake {
    pub runs: Vec<Run>,
    pub records: Vec<(Key, Arc<Record>)>,
    /// The runs' attribute prefix.
    pub prefix: Arc<str>,
    /// `max_finished_runs` of the tracer, `max_traces` of the store.
    pub max_runs: usize,
    pub max_records: Option<usize>,
    /// What each source had dropped so far, read under the lock of the take.
    pub dropped: Dropped,
}

/// The traces the sources dropped before export (running totals).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Finished runs dropped by `max_finished_runs`.
    pub runs: u64,
    /// Traces evicted from the store by `max_traces` (`None`: not read).
    pub records: Option<u64>,
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

    /// The sampling settings in force (the tracer's; the defaults, which
    /// keep everything, without a tracer).
    pub fn sampling(&self) -> Sampling {
        self.runs.map_or_else(Sampling::default, Tracer::sampling)
    }

    /// The store's records as `take` asks, without the traces the sampling
    /// ratio leaves out (decided from each trace id as for runs; the keep
    /// rules are the lifecycle tracer's). What a drain leaves out is gone,
    /// counted by the store (`sampled_out`).
    pub fn take_records(&self, take: Take) -> Taken<(Key, Arc<Record>)> {
        let mut taken = self.store.take(take);
        self.sample_records(&mut taken.ready, take.drain);
        taken
    }

    /// Leaves out of `records` the traces the sampling ratio leaves out,
    /// counting them when they were drained (they are gone).
    fn sample_records(&self, records: &mut Vec<(Key, Arc<Record>)>, drained: bool) {
        self.sample_records_at(records, drained, self.sampling().ratio);
    }

    fn sample_records_at(&self, records: &mut Vec<(Key, Arc<Record>)>, drained: bool, ratio: f64) {
        if ratio < 1.0 {
            let before = records.len();
            records.retain(|(_, rec)| ratio_sampled(record_trace_id(rec), ratio));
            if drained {
                self.store.count_sampled_out(before - records.len());
            }
        }
    }

    /// Traces and runs sampling left out of exports: the store's (by the
    /// ratio) and the tracer's (`sampled_out`).
    pub fn sampled_out(&self) -> u64 {
        self.store.sampled_out() + self.runs.map_or(0, |t| t.stats().sampled_out)
    }

    /// Spans of runs the head left out that each keep rule brought back.
    pub fn kept_spans(&self) -> KeptSpans {
        self.runs
            .map_or_else(KeptSpans::default, |t| t.stats().kept_spans)
    }

    /// The tracer's runs as `take` asks (nothing without a tracer).
    pub fn take_runs(&self, take: Take) -> Taken<Run> {
        self.runs.map(|t| t.take(take)).unwrap_or_default()
    }

    /// A background exporter's take: the settled runs (idle for
    /// `settled_for`, or settled by the bound; all finished runs with zero)
    /// and, `with_records`, the complete records the sampling ratio keeps
    /// (the OTLP sink; the console sink draws runs only), with the runs'
    /// attribute prefix and the sources' bounds, one lock of each source at
    /// a time (the ratio is applied after the store's is released).
    pub fn take_for_exporter(&self, settled_for: Duration, with_records: bool) -> ExporterTake {
        let tracer = self.runs.map(|t| t.take_for_export(settled_for));
        let (runs, prefix, max_runs, ratio, runs_dropped) = match tracer {
            Some(t) => (t.runs, t.prefix, t.max_runs, t.sampling.ratio, t.dropped),
            None => (Vec::new(), Arc::from(""), 0, 1.0, 0),
        };
        let (records, max_records, records_dropped) = if with_records {
            let mut d = self.store.drain_complete_with_limit();
            self.sample_records_at(&mut d.records, true, ratio);
            (d.records, d.max_traces, Some(d.evicted_traces))
        } else {
            (Vec::new(), None, None)
        };
        ExporterTake {
            runs,
            records,
            prefix,
            max_runs,
            max_records,
            dropped: Dropped {
                runs: runs_dropped,
                records: records_dropped,
            },
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
        let d = self.dropped_now();
        d.runs + d.records.unwrap_or(0)
    }

    /// What each source dropped so far, read now (one lock of each, for a
    /// moment): what the exporter reads when exports recover, having taken
    /// nothing while it backed off.
    pub fn dropped_now(&self) -> Dropped {
        let records = Some(self.store.dropped());
        Dropped {
            runs: self.runs.map_or(0, Source::dropped),
            records,
        }
    }
}
