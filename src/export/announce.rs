//! Drops announced: after each export the background exporter tells the
//! announcer how many traces have been dropped so far and how the export
//! went; the announcer makes at most one warning line a minute while traces
//! are being dropped or exports fail, and one line when it recovers. The
//! lines wait here until the binding hands them to Ruby (the app's logger)
//! on an app thread: never from the exporter's thread.
//!
//! ```text
//! tasker_trace_native: 1,204 traces dropped in the last 60 s: HTTP 503 from http://…/v1/traces: … (retrying every 5 s)
//! tasker_trace_native: exports recovered: 96 traces delivered; 12 traces dropped since the last warning
//! ```
//!
//! Dropped means lost before delivery: evicted from the store
//! (`max_traces`) or from the finished runs waiting
//! (`lifecycle_max_finished_runs`), also while a failed export's traces wait
//! to be sent again. Runs left out by sampling are not drops.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::MutexGuard;
use std::time::Duration;

use crate::support::clock::Stamp;
use crate::support::fork::{forks, ForkSafeMutex};

/// The shortest time between two warning lines (a recovery line excepted).
pub const EVERY: Duration = Duration::from_secs(60);
/// Lines kept for Ruby at most (the oldest goes first).
const MAX_PENDING: usize = 16;
const PREFIX: &str = "tasker_trace_native: ";

/// What one export did, as the announcer needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Traces dropped before delivery since the process started, or was
    /// forked (a running total: evictions and collector refusals).
    pub dropped_total: u64,
    /// Why delivery failed, when it did.
    pub failure: Option<String>,
    /// Traces delivered by this export.
    pub delivered: usize,
    /// How long until the exporter tries again.
    pub retry_every: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// The fork generation this state belongs to: a fork child starts
    /// afresh (its parent's lines, and what they counted, are its parent's).
    generation: u64,
    /// A warning line was made and no recovery line since.
    troubled: bool,
    /// The last warning was about failing exports: recovery needs a
    /// delivery.
    failing: bool,
    /// When the last line was made (announcer clock, ns), if ever.
    last_line_ns: Option<u64>,
    /// The dropped total when the last line was made.
    dropped_at_line: u64,
    /// The dropped total at the last export.
    dropped_seen: u64,
    /// Traces delivered since the last line.
    delivered: u64,
    lines: VecDeque<String>,
}

/// The announcer (one per exporter).
#[derive(Default)]
pub struct Announcer {
    state: ForkSafeMutex<State>,
    /// Lines wait for Ruby: checked by the recording paths (one load).
    pending: AtomicBool,
    /// Added to the monotonic clock (test hooks: a fake clock).
    offset_ns: AtomicU64,
}

/// `1204` → `1,204`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn seconds(ns: u64) -> u64 {
    (ns + 500_000_000) / 1_000_000_000
}

fn traces(n: u64) -> String {
    if n == 1 {
        "1 trace".to_string()
    } else {
        format!("{} traces", grouped(n))
    }
}

impl Announcer {
    /// Makes the process-wide announcer's lock fork-safe.
    pub fn register_for_fork(&'static self) -> bool {
        self.state.register()
    }

    /// The announcer's clock: monotonic nanoseconds, plus the test offset.
    pub fn now_ns(&self) -> u64 {
        Stamp::now()
            .mono_ns
            .saturating_add(self.offset_ns.load(Ordering::Relaxed))
    }

    /// Moves the announcer's clock forward (test hooks).
    pub fn advance_clock(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Whether lines wait for Ruby.
    #[inline]
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// The state of this process: what a fork child inherited is forgotten
    /// first.
    fn state(&self) -> MutexGuard<'_, State> {
        let mut s = self.state.lock();
        let generation = forks();
        if s.generation != generation {
            *s = State {
                generation,
                ..State::default()
            };
            self.pending.store(false, Ordering::Relaxed);
        }
        s
    }

    /// Takes the lines waiting, oldest first.
    pub fn take_lines(&self) -> Vec<String> {
        let mut s = self.state();
        self.pending.store(false, Ordering::Relaxed);
        s.lines.drain(..).collect()
    }

    /// Takes one export's outcome into account at the announcer's clock.
    pub fn observe(&self, seen: &Observed) {
        self.observe_at(self.now_ns(), seen);
    }

    /// [`Announcer::observe`] at `now_ns`.
    pub fn observe_at(&self, now_ns: u64, seen: &Observed) {
        let mut s = self.state();
        let new_drops = seen.dropped_total > s.dropped_seen;
        s.dropped_seen = seen.dropped_total;
        s.delivered += seen.delivered as u64;
        let since_line = s.last_line_ns.map(|at| now_ns.saturating_sub(at));
        let may_speak = since_line.is_none_or(|d| d >= EVERY.as_nanos() as u64);
        let dropped = seen.dropped_total.saturating_sub(s.dropped_at_line);
        let recovered = s.troubled
            && seen.failure.is_none()
            && if s.failing {
                seen.delivered > 0
            } else {
                !new_drops
            };
        let line = if recovered {
            s.troubled = false;
            s.failing = false;
            let lost = if dropped == 0 {
                "nothing dropped since the last warning".to_string()
            } else {
                format!("{} dropped since the last warning", traces(dropped))
            };
            format!(
                "{PREFIX}exports recovered: {} delivered; {lost}",
                traces(s.delivered)
            )
        } else if seen.failure.is_some() || new_drops {
            if !may_speak {
                s.failing |= s.troubled && seen.failure.is_some();
                return;
            }
            let cause = match &seen.failure {
                Some(e) => format!(
                    "{e} (retrying every {} s)",
                    seconds(seen.retry_every.as_nanos() as u64).max(1)
                ),
                None => "evicted while waiting for export (max_traces, \
                         lifecycle_max_finished_runs)"
                    .to_string(),
            };
            s.troubled = true;
            s.failing = seen.failure.is_some();
            if dropped == 0 {
                format!("{PREFIX}exports failing, nothing dropped yet: {cause}")
            } else {
                let window = since_line.map_or(EVERY.as_secs(), seconds);
                format!(
                    "{PREFIX}{} dropped in the last {window} s: {cause}",
                    traces(dropped)
                )
            }
        } else {
            return;
        };
        s.last_line_ns = Some(now_ns);
        s.dropped_at_line = seen.dropped_total;
        s.delivered = 0;
        if s.lines.len() >= MAX_PENDING {
            s.lines.pop_front();
        }
        s.lines.push_back(line);
        self.pending.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn failing(dropped_total: u64) -> Observed {
        Observed {
            dropped_total,
            failure: Some("HTTP 503 from http://c/v1/traces: busy".into()),
            delivered: 0,
            retry_every: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_collector_down_for_three_minutes() {
        let a = Announcer::default();
        let mut lines = Vec::new();
        // Exports every 5 s for 3 minutes, each failing; 10 traces evicted
        // per export from the first minute on.
        let mut t = 1_000 * S;
        let mut dropped = 0;
        for i in 0..36 {
            if i >= 12 {
                dropped += 10;
            }
            a.observe_at(t, &failing(dropped));
            for l in a.take_lines() {
                lines.push((t, l));
            }
            // An export with nothing to send is no sign of recovery.
            a.observe_at(
                t + S,
                &Observed {
                    dropped_total: dropped,
                    ..Observed::default()
                },
            );
            assert!(!a.pending());
            t += 5 * S;
        }
        a.observe_at(
            t,
            &Observed {
                dropped_total: dropped,
                delivered: 40,
                ..Observed::default()
            },
        );
        lines.extend(a.take_lines().into_iter().map(|l| (t, l)));
        // Quiet afterwards.
        a.observe_at(
            t + 100 * S,
            &Observed {
                dropped_total: dropped,
                ..Observed::default()
            },
        );
        assert!(!a.pending());
        assert!(a.take_lines().is_empty());
        let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            texts[0],
            "tasker_trace_native: exports failing, nothing dropped yet: \
             HTTP 503 from http://c/v1/traces: busy (retrying every 5 s)"
        );
        assert_eq!(
            texts[1],
            "tasker_trace_native: 10 traces dropped in the last 60 s: \
             HTTP 503 from http://c/v1/traces: busy (retrying every 5 s)"
        );
        assert_eq!(
            texts[2],
            "tasker_trace_native: 120 traces dropped in the last 60 s: \
             HTTP 503 from http://c/v1/traces: busy (retrying every 5 s)"
        );
        assert_eq!(
            *texts.last().unwrap(),
            "tasker_trace_native: exports recovered: 40 traces delivered; \
             110 traces dropped since the last warning"
        );
        assert_eq!(texts.len(), 4, "{texts:#?}");
        for pair in lines[..lines.len() - 1].windows(2) {
            assert!(pair[1].0 - pair[0].0 >= 60 * S);
        }
    }

    #[test]
    fn drops_without_failures_and_the_pending_bound() {
        let a = Announcer::default();
        a.observe_at(
            S,
            &Observed {
                dropped_total: 1_204,
                delivered: 5,
                ..Observed::default()
            },
        );
        assert!(a.pending());
        let lines = a.take_lines();
        assert!(!a.pending());
        assert_eq!(
            lines,
            [
                "tasker_trace_native: 1,204 traces dropped in the last 60 s: evicted while \
                 waiting for export (max_traces, lifecycle_max_finished_runs)"
            ]
        );
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(999), "999");
        for i in 0..40 {
            a.observe_at((i + 2) * 61 * S, &failing(0));
        }
        assert_eq!(a.take_lines().len(), MAX_PENDING);
    }
}
