//! The lifecycle tracer's bounds and their validation.

use std::time::Duration;

use crate::support::SettingError;

pub const DEFAULT_MAX_OPEN_RUNS: usize = 10_000;
pub const DEFAULT_MAX_SPANS_PER_RUN: usize = 1_000;
pub const DEFAULT_MAX_FINISHED_RUNS: usize = 10_000;
pub const DEFAULT_LIFECYCLE_TTL: Duration = Duration::from_secs(3600);

/// The attribute prefix's name when neither the `attribute_prefix` setting
/// nor a default from Tasker's configuration gives one.
pub const DEFAULT_ATTRIBUTE_PREFIX: &str = "tasker";
pub const ATTRIBUTE_PREFIX_EXPECTED: &str = "a non-empty String or nil";

pub const POSITIVE_INTEGER_EXPECTED: &str = "a positive Integer";
pub const TTL_EXPECTED: &str = "a positive number of seconds";

/// The tracer's bounds. Every count is at least 1 and the TTL is positive;
/// [`LifecycleLimits::from_raw`] checks that, and the tracer raises a 0 it is
/// handed anyway to the smallest valid value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleLimits {
    /// Runs open at once; opening one more evicts the least recently active.
    pub max_open_runs: usize,
    /// Spans and span events one run keeps, its root span included; beyond it
    /// the oldest span event or closed attempt goes first.
    pub max_spans_per_run: usize,
    /// Finished runs waiting for export; beyond it the oldest is dropped.
    pub max_finished_runs: usize,
    /// An open run with no event for this long expires (counted, not exported).
    pub ttl: Duration,
}

impl Default for LifecycleLimits {
    fn default() -> Self {
        LifecycleLimits {
            max_open_runs: DEFAULT_MAX_OPEN_RUNS,
            max_spans_per_run: DEFAULT_MAX_SPANS_PER_RUN,
            max_finished_runs: DEFAULT_MAX_FINISHED_RUNS,
            ttl: DEFAULT_LIFECYCLE_TTL,
        }
    }
}

fn positive(setting: &'static str, v: i128) -> Result<usize, SettingError> {
    if v >= 1 {
        Ok(usize::try_from(v).unwrap_or(usize::MAX))
    } else {
        Err(SettingError {
            setting,
            expected: POSITIVE_INTEGER_EXPECTED,
            got: v.to_string(),
        })
    }
}

impl LifecycleLimits {
    pub fn parse_max_open_runs(v: i128) -> Result<usize, SettingError> {
        positive("lifecycle_max_open_runs", v)
    }

    pub fn parse_max_spans_per_run(v: i128) -> Result<usize, SettingError> {
        positive("lifecycle_max_spans_per_run", v)
    }

    pub fn parse_max_finished_runs(v: i128) -> Result<usize, SettingError> {
        positive("lifecycle_max_finished_runs", v)
    }

    /// `lifecycle_ttl` in seconds: finite, above zero, and representable.
    pub fn parse_ttl(seconds: f64) -> Result<Duration, SettingError> {
        match Duration::try_from_secs_f64(seconds) {
            Ok(d) if !d.is_zero() => Ok(d),
            _ => Err(SettingError {
                setting: "lifecycle_ttl",
                expected: TTL_EXPECTED,
                got: seconds.to_string(),
            }),
        }
    }

    /// Builds limits from raw numbers, naming the first setting that is off.
    pub fn from_raw(
        max_open_runs: i128,
        max_spans_per_run: i128,
        max_finished_runs: i128,
        ttl_seconds: f64,
    ) -> Result<LifecycleLimits, SettingError> {
        Ok(LifecycleLimits {
            max_open_runs: Self::parse_max_open_runs(max_open_runs)?,
            max_spans_per_run: Self::parse_max_spans_per_run(max_spans_per_run)?,
            max_finished_runs: Self::parse_max_finished_runs(max_finished_runs)?,
            ttl: Self::parse_ttl(ttl_seconds)?,
        })
    }

    /// The limits with every count at least 1 and the TTL at least 1 ns.
    pub(crate) fn sanitized(self) -> LifecycleLimits {
        LifecycleLimits {
            max_open_runs: self.max_open_runs.max(1),
            max_spans_per_run: self.max_spans_per_run.max(1),
            max_finished_runs: self.max_finished_runs.max(1),
            ttl: self.ttl.max(Duration::from_nanos(1)),
        }
    }

    pub(crate) fn ttl_ns(&self) -> u64 {
        u64::try_from(self.ttl.as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let l = LifecycleLimits::default();
        assert_eq!(l.max_open_runs, 10_000);
        assert_eq!(l.max_spans_per_run, 1_000);
        assert_eq!(l.max_finished_runs, 10_000);
        assert_eq!(l.ttl, Duration::from_secs(3600));
        assert_eq!(l.ttl_ns(), 3_600_000_000_000);
    }

    #[test]
    fn accepts_the_ranges_and_names_the_bad_setting() {
        assert_eq!(
            LifecycleLimits::from_raw(1, 2, 3, 0.5).unwrap(),
            LifecycleLimits {
                max_open_runs: 1,
                max_spans_per_run: 2,
                max_finished_runs: 3,
                ttl: Duration::from_millis(500),
            }
        );
        let e = LifecycleLimits::from_raw(0, 1, 1, 1.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "lifecycle_max_open_runs must be a positive Integer (got 0)"
        );
        for (raw, setting) in [
            ((1, 0, 1, 1.0), "lifecycle_max_spans_per_run"),
            ((1, 1, -5, 1.0), "lifecycle_max_finished_runs"),
            ((1, 1, 1, 0.0), "lifecycle_ttl"),
            ((1, 1, 1, -1.0), "lifecycle_ttl"),
            ((1, 1, 1, f64::NAN), "lifecycle_ttl"),
            ((1, 1, 1, f64::INFINITY), "lifecycle_ttl"),
            ((1, 1, 1, 1e30), "lifecycle_ttl"),
        ] {
            let (a, b, c, d) = raw;
            assert_eq!(
                LifecycleLimits::from_raw(a, b, c, d).unwrap_err().setting,
                setting
            );
        }
        assert_eq!(
            LifecycleLimits::parse_ttl(-2.5).unwrap_err().to_string(),
            "lifecycle_ttl must be a positive number of seconds (got -2.5)"
        );
        assert_eq!(
            LifecycleLimits::parse_max_open_runs(i128::MAX).unwrap(),
            usize::MAX
        );
    }

    #[test]
    fn sanitized_raises_zeros() {
        let l = LifecycleLimits {
            max_open_runs: 0,
            max_spans_per_run: 0,
            max_finished_runs: 0,
            ttl: Duration::ZERO,
        }
        .sanitized();
        assert_eq!(
            (l.max_open_runs, l.max_spans_per_run, l.max_finished_runs),
            (1, 1, 1)
        );
        assert_eq!(l.ttl_ns(), 1);
    }
}
