//! The store's limits, with the validation every entry point shares.

use crate::support::SettingError;

pub const DEFAULT_MAX_TRACES: usize = 100_000;
pub const DEFAULT_MAX_SPANS_PER_TRACE: usize = 10_000;
pub const MAX_TIMESTAMP_PRECISION: u8 = 9;

/// The settings in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most this many traces are kept; `None` is unbounded.
    pub max_traces: Option<usize>,
    /// At most this many spans a trace; `None` is unbounded.
    pub max_spans_per_trace: Option<usize>,
    /// Fractional-second digits in timestamps (0–9).
    pub timestamp_precision: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_traces: Some(DEFAULT_MAX_TRACES),
            max_spans_per_trace: Some(DEFAULT_MAX_SPANS_PER_TRACE),
            timestamp_precision: 0,
        }
    }
}

pub const MAX_TRACES_EXPECTED: &str = "a positive Integer or nil";
pub const MAX_SPANS_EXPECTED: &str = "a non-negative Integer or nil";
pub const PRECISION_EXPECTED: &str = "an Integer from 0 to 9";

impl Limits {
    /// `max_traces` from a signed number: at least 1, or `None` for unbounded.
    pub fn parse_max_traces(v: Option<i128>) -> Result<Option<usize>, SettingError> {
        match v {
            None => Ok(None),
            Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            Some(n) => Err(SettingError {
                setting: "max_traces",
                expected: MAX_TRACES_EXPECTED,
                got: n.to_string(),
            }),
        }
    }

    /// `max_spans_per_trace` from a signed number: 0 or more, or `None` for unbounded.
    pub fn parse_max_spans(v: Option<i128>) -> Result<Option<usize>, SettingError> {
        match v {
            None => Ok(None),
            Some(n) if n >= 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            Some(n) => Err(SettingError {
                setting: "max_spans_per_trace",
                expected: MAX_SPANS_EXPECTED,
                got: n.to_string(),
            }),
        }
    }

    /// `timestamp_precision` from a signed number: 0 to 9.
    pub fn parse_precision(v: i128) -> Result<u8, SettingError> {
        if (0..=i128::from(MAX_TIMESTAMP_PRECISION)).contains(&v) {
            Ok(v as u8)
        } else {
            Err(SettingError {
                setting: "timestamp_precision",
                expected: PRECISION_EXPECTED,
                got: v.to_string(),
            })
        }
    }

    /// Builds limits from raw numbers, naming the first setting that is off.
    pub fn from_raw(
        max_traces: Option<i128>,
        max_spans_per_trace: Option<i128>,
        timestamp_precision: i128,
    ) -> Result<Limits, SettingError> {
        Ok(Limits {
            max_traces: Self::parse_max_traces(max_traces)?,
            max_spans_per_trace: Self::parse_max_spans(max_spans_per_trace)?,
            timestamp_precision: Self::parse_precision(timestamp_precision)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let l = Limits::default();
        assert_eq!(l.max_traces, Some(100_000));
        assert_eq!(l.max_spans_per_trace, Some(10_000));
        assert_eq!(l.timestamp_precision, 0);
    }

    #[test]
    fn accepts_the_ranges_and_names_the_bad_setting() {
        assert_eq!(
            Limits::from_raw(None, None, 9).unwrap(),
            Limits {
                max_traces: None,
                max_spans_per_trace: None,
                timestamp_precision: 9
            }
        );
        assert_eq!(Limits::parse_max_spans(Some(0)).unwrap(), Some(0));
        let e = Limits::from_raw(Some(0), None, 0).unwrap_err();
        assert_eq!(e.setting, "max_traces");
        assert_eq!(
            e.to_string(),
            "max_traces must be a positive Integer or nil (got 0)"
        );
        assert_eq!(
            Limits::from_raw(Some(1), Some(-1), 0).unwrap_err().setting,
            "max_spans_per_trace"
        );
        assert_eq!(
            Limits::from_raw(Some(1), None, 10).unwrap_err().setting,
            "timestamp_precision"
        );
        assert_eq!(
            Limits::from_raw(Some(1), None, -1).unwrap_err().setting,
            "timestamp_precision"
        );
        assert_eq!(
            Limits::parse_max_traces(Some(i128::MAX)).unwrap(),
            Some(usize::MAX)
        );
    }
}
