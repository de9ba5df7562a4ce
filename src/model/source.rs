//! The one interface both bounded sources give an export: take what is
//! ready (removing it, or as copies), put back what was not delivered, and
//! the counts an exporter reports.
//!
//! - The store ([`Backend`]) gives its records: finished traces and generic
//!   events, and open traces too with `include_open` (removed with the rest
//!   when draining).
//! - The lifecycle tracer ([`Tracer`]) gives its finished runs (removed when
//!   draining, once idle for `settled_for`) and, with `include_open`, copies
//!   of its open runs, which are never removed: they are exported whole again
//!   once they end.

use std::sync::Arc;
use std::time::Duration;

use super::backend::store::{Backend, Key, Record};
use super::lifecycle::{Run, Tracer};

/// What an export asks of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Take {
    /// Remove what is taken (each item is then exported exactly once);
    /// else take copies and leave the source as it was.
    pub drain: bool,
    /// Take open traces and runs too.
    pub include_open: bool,
    /// How long a finished run must have been idle before a drain takes it.
    pub settled_for: Duration,
}

impl Take {
    /// Removes what is finished (and settled for `settled_for`).
    pub fn finished(settled_for: Duration) -> Take {
        Take {
            drain: true,
            include_open: false,
            settled_for,
        }
    }
}

/// What a source gave one export.
#[derive(Debug)]
pub struct Taken<T> {
    /// Whether `ready` was removed from the source (it goes back with
    /// [`Taken::put_back`] when the export fails).
    pub drained: bool,
    /// What is ready for export, in the source's order.
    pub ready: Vec<T>,
    /// Copies of open items that stay in the source; never put back.
    pub open: Vec<T>,
}

impl<T> Default for Taken<T> {
    fn default() -> Self {
        Taken {
            drained: false,
            ready: Vec::new(),
            open: Vec::new(),
        }
    }
}

impl<T> Taken<T> {
    /// Items taken, ready and open.
    pub fn len(&self) -> usize {
        self.ready.len() + self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every item taken, ready first.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.ready.iter().chain(&self.open)
    }

    /// Puts what a drain removed back into `source` (the export did not
    /// reach its receiver). Copies go nowhere.
    pub fn put_back<S: Source<Item = T> + ?Sized>(self, source: &S) {
        if self.drained && !self.ready.is_empty() {
            source.put_back(self.ready);
        }
    }
}

/// A bounded source of traces for export.
pub trait Source {
    /// What one trace is in this source.
    type Item;

    /// Takes what `take` asks for, in one step under the source's lock.
    fn take(&self, take: Take) -> Taken<Self::Item>;

    /// Puts back drained items that were not delivered. Items replaced in
    /// the meantime stay replaced; what comes back counts against the
    /// source's bounds like new items.
    fn put_back(&self, items: Vec<Self::Item>);

    /// When a finished item finished (monotonic clock), if it did.
    fn finished_at(item: &Self::Item) -> Option<u64>;

    /// Finished items waiting for export.
    fn queued(&self) -> usize;

    /// Items dropped or evicted before they were exported.
    fn dropped(&self) -> u64;

    /// In a fork child: removes what finished at or before `forked_at_ns`
    /// (monotonic clock), which belongs to the parent's exporter; what
    /// finished after stays. Returns how many were removed.
    fn discard_finished_before(&self, forked_at_ns: u64) -> usize {
        let taken = self.take(Take::finished(Duration::ZERO));
        let (inherited, own): (Vec<_>, Vec<_>) = taken
            .ready
            .into_iter()
            .partition(|item| Self::finished_at(item).is_some_and(|at| at <= forked_at_ns));
        if !own.is_empty() {
            self.put_back(own);
        }
        inherited.len()
    }
}

impl Source for Backend {
    type Item = (Key, Arc<Record>);

    fn take(&self, take: Take) -> Taken<Self::Item> {
        let ready = if take.drain {
            self.drain(take.include_open)
        } else {
            let mut entries = self.snapshot().entries;
            if !take.include_open {
                entries.retain(|(_, rec)| rec.is_complete());
            }
            entries
        };
        Taken {
            drained: take.drain,
            ready,
            open: Vec::new(),
        }
    }

    fn put_back(&self, items: Vec<Self::Item>) {
        self.restore(items);
    }

    /// Its finish event's time, or a generic event's time.
    fn finished_at((_, rec): &Self::Item) -> Option<u64> {
        match &**rec {
            Record::Trace(t) => t.finish.as_ref().map(|f| f.at.mono_ns),
            Record::Generic(g) => Some(g.at.mono_ns),
        }
    }

    fn queued(&self) -> usize {
        self.snapshot()
            .entries
            .iter()
            .filter(|(_, rec)| rec.is_complete())
            .count()
    }

    fn dropped(&self) -> u64 {
        self.stats().evicted_traces
    }
}

impl Source for Tracer {
    type Item = Run;

    fn take(&self, take: Take) -> Taken<Run> {
        let runs = self.export_runs(take.drain, take.include_open, take.settled_for);
        Taken {
            drained: runs.drained,
            ready: runs.taken,
            open: runs.open,
        }
    }

    fn put_back(&self, runs: Vec<Run>) {
        self.restore(runs);
    }

    /// When its root ended.
    fn finished_at(run: &Run) -> Option<u64> {
        run.root().and_then(|root| root.end).map(|end| end.mono_ns)
    }

    fn queued(&self) -> usize {
        self.stats().finished_runs
    }

    fn dropped(&self) -> u64 {
        self.stats().finished_runs_dropped
    }

    /// In place: the child's own finished runs are not taken and put back
    /// (that would restore them, and a run still settling would take no
    /// more of its late duplicates).
    fn discard_finished_before(&self, forked_at_ns: u64) -> usize {
        Tracer::discard_finished_before(self, forked_at_ns)
    }
}
