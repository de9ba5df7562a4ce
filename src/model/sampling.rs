//! Sampling: which runs leave the process.
//!
//! Two steps, in this order:
//!
//! 1. **Head.** When a run opens, its trace id decides, exactly as
//!    OpenTelemetry's `TraceIdRatioBased` sampler does: the trace id's last
//!    8 bytes, read as a big-endian unsigned integer, are compared with
//!    `ceil(ratio × (2^64 − 1))`; the run is sampled when they are below it
//!    (always at ratio 1.0). Every process (and every OpenTelemetry SDK)
//!    that sees the same trace id decides the same way. With a parent-based
//!    sampler (the default, as in OpenTelemetry SDKs: `parentbased_always_on`),
//!    a run that has a parent (connected traces: the OpenTelemetry span
//!    current when it opens) follows the parent's sampled flag instead.
//! 2. **Keep rules, at the end.** A run the head left out is still exported
//!    when, as it ends, any span has status ERROR
//!    (`sample_keep_errors`), its root lasted longer than
//!    `sample_keep_slower_than`, or a step had more than one attempt
//!    (`sample_keep_retried`). The rules only add runs; they never remove
//!    a sampled one.
//!
//! A run left out by both is counted (`sampled_out`) and freed when it
//! ends. While no keep rule is on, a run left out at the head records
//! nothing but its end (there is nothing it could be kept for), unless it
//! has a parent: the connected path puts its spans in the OpenTelemetry
//! context, marked unsampled.
//!
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` give the ratio's
//! default (and whether it is parent-based); the `sample_ratio` setting wins
//! over them. Nothing here reads the process environment: the binding
//! passes a lookup function.

use std::time::Duration;

use crate::support::env::Warning;
use crate::support::SettingError;

pub const SAMPLER_VARIABLE: &str = "OTEL_TRACES_SAMPLER";
pub const SAMPLER_ARG_VARIABLE: &str = "OTEL_TRACES_SAMPLER_ARG";

pub const RATIO_EXPECTED: &str = "a Float from 0.0 to 1.0";
pub const SLOWER_THAN_EXPECTED: &str =
    "a positive number of seconds (or an ActiveSupport::Duration), or nil";

/// The sampling settings in force.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// `sample_ratio`: the share of runs the head decision keeps.
    pub ratio: f64,
    /// A run with a parent follows the parent's sampled flag: true unless
    /// `OTEL_TRACES_SAMPLER` names a sampler that is not parent-based (the
    /// specification's default is `parentbased_always_on`).
    pub parent_based: bool,
    /// `sample_keep_errors`: keep a run with any span of status ERROR.
    pub keep_errors: bool,
    /// `sample_keep_slower_than`: keep a run whose root lasted longer.
    pub keep_slower_than: Option<Duration>,
    /// `sample_keep_retried`: keep a run in which a step had more than one
    /// attempt.
    pub keep_retried: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            ratio: 1.0,
            parent_based: true,
            keep_errors: true,
            keep_slower_than: None,
            keep_retried: true,
        }
    }
}

/// The keep rule that rescued a run the head decision left out, in the
/// order they are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeepRule {
    Error,
    Slow,
    Retried,
}

/// Spans of runs the head left out that each keep rule brought back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeptSpans {
    pub errors: u64,
    pub slow: u64,
    pub retried: u64,
}

impl KeptSpans {
    pub fn add(&mut self, rule: KeepRule, spans: u64) {
        match rule {
            KeepRule::Error => self.errors += spans,
            KeepRule::Slow => self.slow += spans,
            KeepRule::Retried => self.retried += spans,
        }
    }
}

/// What the keep rules look at in a run as it ends.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunFacts {
    pub any_error: bool,
    /// The root's duration (nanoseconds, monotonic).
    pub root_ns: u64,
    pub retried: bool,
}

/// Whether a trace id is sampled at `ratio`, as OpenTelemetry's
/// `TraceIdRatioBased` decides it.
pub fn ratio_sampled(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(low);
    // ratio × (2^64 − 1) in double precision, rounded up, compared exactly
    // (the product may reach 2^64, which no u64 holds).
    let bound = (ratio * u64::MAX as f64).ceil() as u128;
    u128::from(x) < bound
}

impl Sampling {
    /// Whether any keep rule is on (then a run left out at the head is
    /// still recorded in full: a rule may keep it at the end).
    pub fn any_rule(&self) -> bool {
        self.keep_errors || self.keep_slower_than.is_some() || self.keep_retried
    }

    /// The head decision for a run with `trace_id`. `parent_sampled` is the
    /// sampled flag of the run's parent span (`None`: no parent; a run has
    /// one when the connected path finds an OpenTelemetry span current).
    pub fn head(&self, trace_id: &[u8; 16], parent_sampled: Option<bool>) -> bool {
        match parent_sampled {
            Some(flag) if self.parent_based => flag,
            _ => ratio_sampled(trace_id, self.ratio),
        }
    }

    /// The head sampler as OpenTelemetry SDKs describe theirs:
    /// `AlwaysOnSampler`, `AlwaysOffSampler`, `TraceIdRatioBased{0.250000}`,
    /// or `ParentBased{root=...}` around one of those.
    pub fn description(&self) -> String {
        let root = if self.ratio >= 1.0 {
            "AlwaysOnSampler".to_string()
        } else if self.ratio <= 0.0 {
            "AlwaysOffSampler".to_string()
        } else {
            format!("TraceIdRatioBased{{{:.6}}}", self.ratio)
        };
        if self.parent_based {
            format!("ParentBased{{root={root}}}")
        } else {
            root
        }
    }

    /// The first keep rule that holds for a run with these facts.
    pub fn keep_rule(&self, facts: &RunFacts) -> Option<KeepRule> {
        if self.keep_errors && facts.any_error {
            return Some(KeepRule::Error);
        }
        if let Some(limit) = self.keep_slower_than {
            if u128::from(facts.root_ns) > limit.as_nanos() {
                return Some(KeepRule::Slow);
            }
        }
        if self.keep_retried && facts.retried {
            return Some(KeepRule::Retried);
        }
        None
    }

    /// `sample_ratio`: 0.0 to 1.0.
    pub fn parse_ratio(ratio: f64) -> Result<f64, SettingError> {
        if (0.0..=1.0).contains(&ratio) {
            Ok(ratio)
        } else {
            Err(SettingError {
                setting: "sample_ratio",
                expected: RATIO_EXPECTED,
                got: ratio.to_string(),
            })
        }
    }

    /// The defaults from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`,
    /// read through `get`. An unknown sampler or an unusable argument is a
    /// warning and counts as unset (`parentbased_always_on`; a ratio sampler's argument
    /// defaults to 1.0, as the specification says).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> (Sampling, Vec<Warning>) {
        let mut warnings = Vec::new();
        let mut s = Sampling::default();
        let value = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(name) = value(SAMPLER_VARIABLE) else {
            return (s, warnings);
        };
        let arg = |warnings: &mut Vec<Warning>| -> f64 {
            let Some(text) = value(SAMPLER_ARG_VARIABLE) else {
                return 1.0;
            };
            match text.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    warnings.push(Warning::ignored(
                        SAMPLER_ARG_VARIABLE,
                        format!("{text:?} is not a ratio from 0.0 to 1.0 (1.0 is used)"),
                    ));
                    1.0
                }
            }
        };
        match name.to_ascii_lowercase().as_str() {
            "always_on" => s.parent_based = false,
            "always_off" => {
                s.parent_based = false;
                s.ratio = 0.0;
            }
            "traceidratio" => {
                s.parent_based = false;
                s.ratio = arg(&mut warnings);
            }
            "parentbased_always_on" => s.parent_based = true,
            "parentbased_always_off" => {
                s.parent_based = true;
                s.ratio = 0.0;
            }
            "parentbased_traceidratio" => {
                s.parent_based = true;
                s.ratio = arg(&mut warnings);
            }
            _ => warnings.push(Warning::ignored(
                SAMPLER_VARIABLE,
                format!(
                    "{name:?} is not a sampler this gem has (always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
                ),
            )),
        }
        (s, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn id(low: u64) -> [u8; 16] {
        let mut t = [0xAB; 16];
        t[8..].copy_from_slice(&low.to_be_bytes());
        t
    }

    #[test]
    fn the_ratio_reads_the_last_eight_bytes_big_endian() {
        // At 0.5 the bound is 2^63: below it sampled, from it on not.
        assert!(ratio_sampled(&id((1 << 63) - 1), 0.5));
        assert!(!ratio_sampled(&id(1 << 63), 0.5));
        // The first 8 bytes play no part.
        let mut t = id(1 << 63);
        t[..8].copy_from_slice(&[0; 8]);
        assert!(!ratio_sampled(&t, 0.5));
        // Little-endian reading would sample this one (its low byte is 0x01).
        assert!(!ratio_sampled(&id(0x8000_0000_0000_0001), 0.5));
        assert!(ratio_sampled(&id(0x0100_0000_0000_0080), 0.5));
        assert!(ratio_sampled(&id(u64::MAX), 1.0));
        assert!(!ratio_sampled(&id(0), 0.0));
        assert!(ratio_sampled(&id(0), f64::MIN_POSITIVE));
        assert!(!ratio_sampled(&id(u64::MAX), 0.999_999));
        // 0.1 × (2^64 − 1) in double precision is 0x1999_9999_9999_9A00
        // (0.1 is 0x1.999999999999Ap-4 and 2^64 − 1 rounds to 2^64).
        assert!(ratio_sampled(&id(0x1999_9999_9999_99FF), 0.1));
        assert!(!ratio_sampled(&id(0x1999_9999_9999_9A00), 0.1));
    }

    #[test]
    fn the_same_ids_get_the_same_decisions_in_about_the_ratio() {
        let mut g = crate::support::ids::IdGenerator::seeded(7);
        let ids: Vec<[u8; 16]> = (0..20_000).map(|_| g.trace_id()).collect();
        let s = Sampling {
            ratio: 0.1,
            ..Sampling::default()
        };
        let first: Vec<bool> = ids.iter().map(|t| s.head(t, None)).collect();
        let again: Vec<bool> = ids.iter().map(|t| s.head(t, None)).collect();
        assert_eq!(first, again);
        let n = first.iter().filter(|&&b| b).count() as f64;
        // Binomial(20,000, 0.1): mean 2,000, sigma 42.4; 5 sigma.
        assert!((n - 2000.0).abs() < 5.0 * 42.43, "{n}");
    }

    #[test]
    fn parent_based_follows_the_parent_and_others_ignore_it() {
        let t = id(u64::MAX);
        let ratio = Sampling {
            ratio: 0.0,
            parent_based: false,
            ..Sampling::default()
        };
        assert!(!ratio.head(&t, Some(true)));
        let parent = Sampling {
            parent_based: true,
            ..ratio
        };
        assert!(parent.head(&t, Some(true)));
        assert!(!parent.head(&t, None));
        // The default is parent-based (`parentbased_always_on`).
        let on = Sampling::default();
        assert!(on.parent_based);
        assert!(!on.head(&t, Some(false)));
        assert!(on.head(&t, None));
    }

    #[test]
    fn keep_rules_in_order() {
        let s = Sampling {
            keep_slower_than: Some(Duration::from_secs(2)),
            ..Sampling::default()
        };
        let facts = RunFacts {
            any_error: true,
            root_ns: 3_000_000_000,
            retried: true,
        };
        assert_eq!(s.keep_rule(&facts), Some(KeepRule::Error));
        let facts = RunFacts {
            any_error: false,
            ..facts
        };
        assert_eq!(s.keep_rule(&facts), Some(KeepRule::Slow));
        let facts = RunFacts {
            root_ns: 2_000_000_000,
            ..facts
        };
        assert_eq!(s.keep_rule(&facts), Some(KeepRule::Retried));
        let none = Sampling {
            keep_errors: false,
            keep_retried: false,
            ..Sampling::default()
        };
        assert!(!none.any_rule());
        assert_eq!(none.keep_rule(&facts), None);
    }

    fn env(vars: &[(&str, &str)]) -> (Sampling, Vec<Warning>) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Sampling::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn the_six_samplers_and_a_bad_one() {
        let cases = [
            ("always_on", None, 1.0, false),
            ("always_off", None, 0.0, false),
            ("traceidratio", Some("0.25"), 0.25, false),
            ("parentbased_always_on", None, 1.0, true),
            ("parentbased_always_off", None, 0.0, true),
            ("parentbased_traceidratio", Some("0.5"), 0.5, true),
        ];
        for (name, arg, ratio, parent_based) in cases {
            let mut vars = vec![(SAMPLER_VARIABLE, name)];
            vars.extend(arg.map(|a| (SAMPLER_ARG_VARIABLE, a)));
            let (s, w) = env(&vars);
            assert!(w.is_empty(), "{name}: {w:?}");
            let root = match ratio {
                1.0 => "AlwaysOnSampler".to_string(),
                0.0 => "AlwaysOffSampler".to_string(),
                r => format!("TraceIdRatioBased{{{r:.6}}}"),
            };
            let described = if parent_based {
                format!("ParentBased{{root={root}}}")
            } else {
                root
            };
            assert_eq!(s.description(), described);
            assert_eq!((s.ratio, s.parent_based), (ratio, parent_based), "{name}");
        }
        let (s, w) = env(&[(SAMPLER_VARIABLE, "jaeger_remote")]);
        assert_eq!(s, Sampling::default());
        assert_eq!(w.len(), 1);
        assert!(w[0]
            .message
            .starts_with("\"jaeger_remote\" is not a sampler"));
        let (s, w) = env(&[
            (SAMPLER_VARIABLE, "traceidratio"),
            (SAMPLER_ARG_VARIABLE, "2"),
        ]);
        assert_eq!(s.ratio, 1.0);
        assert_eq!(w[0].variable, SAMPLER_ARG_VARIABLE);
        assert_eq!(env(&[(SAMPLER_VARIABLE, "traceidratio")]).0.ratio, 1.0);
    }

    #[test]
    fn settings_are_checked_with_their_names() {
        assert_eq!(Sampling::parse_ratio(0.0), Ok(0.0));
        assert_eq!(Sampling::parse_ratio(1.0), Ok(1.0));
        for bad in [-0.1, 1.01, f64::NAN] {
            assert_eq!(
                Sampling::parse_ratio(bad).unwrap_err().setting,
                "sample_ratio"
            );
        }
    }
}
