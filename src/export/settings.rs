//! The exporter's settings: whether it runs (`exporter`), how often it wakes
//! (`export_schedule_delay`), after how many events it wakes early
//! (`export_max_batch_size`) and how long one export may take
//! (`export_timeout`); their defaults from OpenTelemetry's variables, and the
//! checks every entry point shares.
//!
//! - `OTEL_TRACES_EXPORTER`: a comma-separated list: `otlp` turns the OTLP
//!   sink on, `console` the console sink (each run drawn as a waterfall),
//!   `otlp,console` both; `none` (or unset) leaves the exporter off. (OpenTelemetry SDKs default to `otlp`; this gem defaults
//!   to off, so that adding it for its drop-in API starts no network traffic.)
//! - `OTEL_SDK_DISABLED=true`: the exporter stays off, whatever else says.
//! - `OTEL_BSP_SCHEDULE_DELAY`: milliseconds between exports (5000).
//! - `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: events that wake the exporter early (512).
//! - `OTEL_BSP_EXPORT_TIMEOUT`: milliseconds one export may take (30000; 0 is
//!   no limit, as for `OTEL_EXPORTER_OTLP_TIMEOUT`).
//! - `OTEL_BSP_MAX_QUEUE_SIZE`: the most traces the exporter keeps waiting
//!   for delivery (2048), the `export_max_queue_size` setting.
//!
//! Like [`crate::transport::env`], nothing here reads the process environment: the
//! binding passes a lookup function.

use std::time::Duration;

use crate::support::env::Warning;
use crate::support::SettingError;
use crate::transport::env::parse_timeout_ms;
use crate::transport::settings::MAX_TIMEOUT;

pub const TRACES_EXPORTER_VARIABLE: &str = "OTEL_TRACES_EXPORTER";
pub const SDK_DISABLED_VARIABLE: &str = "OTEL_SDK_DISABLED";
pub const SCHEDULE_DELAY_VARIABLE: &str = "OTEL_BSP_SCHEDULE_DELAY";
pub const MAX_BATCH_SIZE_VARIABLE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
pub const EXPORT_TIMEOUT_VARIABLE: &str = "OTEL_BSP_EXPORT_TIMEOUT";
pub const MAX_QUEUE_SIZE_VARIABLE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";

pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(5000);
pub const DEFAULT_MAX_BATCH_SIZE: usize = 512;
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(30_000);
/// The BatchSpanProcessor's default queue size.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;

/// The shortest delay and timeout taken (a millisecond) and the longest (a
/// day); the binding's one check of durations takes them as its range.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
pub const MAX_DURATION: Duration = MAX_TIMEOUT;
/// The largest batch size (and queue size) taken.
pub const MAX_BATCH_SIZE: usize = 1_000_000;

pub const EXPORTER_EXPECTED: &str = ":none, :otlp, :console or [:otlp, :console]";
pub const SECONDS_EXPECTED: &str = "a number of seconds from 0.001 to 86400";
pub const BATCH_SIZE_EXPECTED: &str = "an Integer from 1 to 1000000";
pub const QUEUE_SIZE_EXPECTED: &str = "an Integer from 1 to 1000000";

/// Whether the exporter runs, and where it sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Off: traces leave the process only through `push_otlp`.
    #[default]
    None,
    /// A background thread exports over OTLP/HTTP.
    Otlp,
    /// A background thread draws each finished run on the console.
    Console,
    /// Both sinks.
    OtlpAndConsole,
}

impl Mode {
    /// The name the setting and `OTEL_TRACES_EXPORTER` use.
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Otlp => "otlp",
            Mode::Console => "console",
            Mode::OtlpAndConsole => "otlp,console",
        }
    }

    /// Whether the OTLP sink is on.
    pub fn otlp(self) -> bool {
        matches!(self, Mode::Otlp | Mode::OtlpAndConsole)
    }

    /// Whether the console sink is on.
    pub fn console(self) -> bool {
        matches!(self, Mode::Console | Mode::OtlpAndConsole)
    }

    /// The mode with the sink named `name` added (`none` adds nothing).
    pub fn with(self, name: &str) -> Option<Mode> {
        let (otlp, console) = match name {
            "none" => (false, false),
            "otlp" => (true, false),
            "console" => (false, true),
            _ => return None,
        };
        Some(Mode::from_sinks(
            self.otlp() || otlp,
            self.console() || console,
        ))
    }

    fn from_sinks(otlp: bool, console: bool) -> Mode {
        match (otlp, console) {
            (false, false) => Mode::None,
            (true, false) => Mode::Otlp,
            (false, true) => Mode::Console,
            (true, true) => Mode::OtlpAndConsole,
        }
    }

    /// `none`, `otlp` or `console` (exactly; the binding passes Symbol or
    /// String names, and builds both sinks from a list).
    pub fn parse(name: &str) -> Result<Mode, SettingError> {
        Mode::None.with(name).ok_or_else(|| SettingError {
            setting: "exporter",
            expected: EXPORTER_EXPECTED,
            got: format!(":{name}"),
        })
    }
}

/// When the exporter wakes, how long an export may take, and how many
/// traces it keeps waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The longest wait between two exports.
    pub delay: Duration,
    /// This many recorded events wake the exporter before the delay is up.
    pub max_batch_size: usize,
    /// The budget of one export (each of its requests).
    pub export_timeout: Duration,
    /// `export_max_queue_size`: the most traces the exporter keeps waiting
    /// for delivery; beyond it the oldest is dropped (and counted).
    pub max_queue_size: usize,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            delay: DEFAULT_SCHEDULE_DELAY,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
        }
    }
}

/// Every exporter setting, plus `OTEL_SDK_DISABLED` (read once, at load).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackgroundSettings {
    pub mode: Mode,
    pub schedule: Schedule,
    /// `OTEL_SDK_DISABLED=true`: off whatever `mode` says.
    pub sdk_disabled: bool,
}

impl BackgroundSettings {
    /// Whether the exporter is to run.
    pub fn is_on(&self) -> bool {
        self.mode != Mode::None && !self.sdk_disabled
    }

    /// The defaults from OpenTelemetry's variables, read through `get`.
    /// Unusable values are reported as warnings and count as unset.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> (BackgroundSettings, Vec<Warning>) {
        let mut warnings = Vec::new();
        let value = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mode = value(TRACES_EXPORTER_VARIABLE)
            .map(|v| traces_exporter(&v, &mut warnings))
            .unwrap_or_default();
        let sdk_disabled = match value(SDK_DISABLED_VARIABLE) {
            None => false,
            Some(v) if v.trim().eq_ignore_ascii_case("true") => true,
            Some(v) if v.trim().eq_ignore_ascii_case("false") => false,
            Some(v) => {
                warnings.push(Warning::ignored(
                    "OTEL_SDK_DISABLED",
                    format!("{v:?} is not true or false"),
                ));
                false
            }
        };
        let defaults = Schedule::default();
        let schedule = Schedule {
            delay: parsed(
                SCHEDULE_DELAY_VARIABLE,
                value(SCHEDULE_DELAY_VARIABLE),
                parse_delay_ms,
                &mut warnings,
            )
            .unwrap_or(defaults.delay),
            max_batch_size: parsed(
                MAX_BATCH_SIZE_VARIABLE,
                value(MAX_BATCH_SIZE_VARIABLE),
                parse_batch_size_text,
                &mut warnings,
            )
            .unwrap_or(defaults.max_batch_size),
            export_timeout: parsed(
                EXPORT_TIMEOUT_VARIABLE,
                value(EXPORT_TIMEOUT_VARIABLE),
                |v| parse_timeout_ms(v).map(|d| d.max(MIN_DURATION)),
                &mut warnings,
            )
            .unwrap_or(defaults.export_timeout),
            max_queue_size: parsed(
                MAX_QUEUE_SIZE_VARIABLE,
                value(MAX_QUEUE_SIZE_VARIABLE),
                parse_queue_size_text,
                &mut warnings,
            )
            .unwrap_or(defaults.max_queue_size),
        };
        (
            BackgroundSettings {
                mode,
                schedule,
                sdk_disabled,
            },
            warnings,
        )
    }
}

/// A variable's value parsed, or a warning and `None`.
fn parsed<T>(
    variable: &'static str,
    value: Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
    warnings: &mut Vec<Warning>,
) -> Option<T> {
    match parse(&value?) {
        Ok(t) => Some(t),
        Err(message) => {
            warnings.push(Warning::ignored(variable, message));
            None
        }
    }
}

/// `OTEL_TRACES_EXPORTER`: a comma-separated list; `otlp` and `console` in
/// it turn those sinks on. Exporters this gem does not have are reported.
fn traces_exporter(v: &str, warnings: &mut Vec<Warning>) -> Mode {
    let mut mode = Mode::None;
    for name in v.split(',').map(|n| n.trim().to_ascii_lowercase()) {
        match mode.with(&name) {
            Some(m) => mode = m,
            None if name.is_empty() => {}
            None => warnings.push(Warning::ignored(
                "OTEL_TRACES_EXPORTER",
                format!("{name:?} is not an exporter this gem has (otlp, console or none)"),
            )),
        }
    }
    mode
}

/// `OTEL_BSP_SCHEDULE_DELAY`: whole milliseconds, 1 to a day.
fn parse_delay_ms(v: &str) -> Result<Duration, String> {
    let t = v.trim();
    let ms = t
        .parse::<u64>()
        .map_err(|_| format!("{t:?} is not a whole number of milliseconds"))?;
    let d = Duration::from_millis(ms);
    if d < MIN_DURATION || d > MAX_DURATION {
        return Err(format!("{ms} ms is not from 1 ms to a day"));
    }
    Ok(d)
}

fn parse_batch_size_text(v: &str) -> Result<usize, String> {
    let t = v.trim();
    let n = t
        .parse::<i128>()
        .map_err(|_| format!("{t:?} is not a whole number"))?;
    parse_max_batch_size(n).map_err(|e| format!("{} is not {}", e.got, e.expected))
}

fn parse_queue_size_text(v: &str) -> Result<usize, String> {
    let t = v.trim();
    let n = t
        .parse::<i128>()
        .map_err(|_| format!("{t:?} is not a whole number"))?;
    parse_max_queue_size(n).map_err(|e| format!("{} is not {}", e.got, e.expected))
}

/// `export_max_queue_size`: 1 to [`MAX_BATCH_SIZE`].
pub fn parse_max_queue_size(n: i128) -> Result<usize, SettingError> {
    match usize::try_from(n) {
        Ok(n) if (1..=MAX_BATCH_SIZE).contains(&n) => Ok(n),
        _ => Err(SettingError {
            setting: "export_max_queue_size",
            expected: QUEUE_SIZE_EXPECTED,
            got: n.to_string(),
        }),
    }
}

/// `export_max_batch_size`: 1 to [`MAX_BATCH_SIZE`].
pub fn parse_max_batch_size(n: i128) -> Result<usize, SettingError> {
    match usize::try_from(n) {
        Ok(n) if (1..=MAX_BATCH_SIZE).contains(&n) => Ok(n),
        _ => Err(SettingError {
            setting: "export_max_batch_size",
            expected: BATCH_SIZE_EXPECTED,
            got: n.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> (BackgroundSettings, Vec<Warning>) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BackgroundSettings::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_off_with_the_batch_span_processor_figures() {
        let (c, w) = from(&[]);
        assert!(w.is_empty());
        assert_eq!(c.mode, Mode::None);
        assert!(!c.is_on());
        assert_eq!(c.schedule.delay, Duration::from_millis(5000));
        assert_eq!(c.schedule.max_batch_size, 512);
        assert_eq!(c.schedule.export_timeout, Duration::from_millis(30_000));
    }

    #[test]
    fn otel_traces_exporter_turns_it_on_and_sdk_disabled_wins() {
        assert!(from(&[("OTEL_TRACES_EXPORTER", "otlp")]).0.is_on());
        assert!(from(&[("OTEL_TRACES_EXPORTER", " OTLP ")]).0.is_on());
        assert!(!from(&[("OTEL_TRACES_EXPORTER", "none")]).0.is_on());
        let (c, w) = from(&[("OTEL_TRACES_EXPORTER", "console,otlp")]);
        assert!(c.is_on());
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.mode, Mode::OtlpAndConsole);
        let (c, w) = from(&[("OTEL_TRACES_EXPORTER", "console")]);
        assert_eq!((c.mode, c.is_on()), (Mode::Console, true));
        assert!(w.is_empty());
        let (c, w) = from(&[("OTEL_TRACES_EXPORTER", "zipkin,console")]);
        assert_eq!(c.mode, Mode::Console);
        assert_eq!(w.len(), 1, "zipkin is reported: {w:?}");
        let (c, w) = from(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert!(w.is_empty());
        assert_eq!(c.mode, Mode::Otlp);
        assert!(c.sdk_disabled && !c.is_on());
        let (c, w) = from(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_SDK_DISABLED", "yes"),
        ]);
        assert!(c.is_on());
        assert_eq!(w[0].variable, "OTEL_SDK_DISABLED");
    }

    #[test]
    fn bsp_variables_are_milliseconds_and_bad_ones_are_reported() {
        let (c, w) = from(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "1500"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "300"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.schedule.max_queue_size, 300);
        let (q, qw) = from(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]);
        assert_eq!(q.schedule.max_queue_size, DEFAULT_MAX_QUEUE_SIZE);
        assert_eq!(
            qw[0].to_string(),
            "OTEL_BSP_MAX_QUEUE_SIZE ignored: 0 is not an Integer from 1 to 1000000"
        );
        assert_eq!(c.schedule.delay, Duration::from_millis(200));
        assert_eq!(c.schedule.max_batch_size, 64);
        assert_eq!(c.schedule.export_timeout, Duration::from_millis(1500));
        assert_eq!(
            from(&[("OTEL_BSP_EXPORT_TIMEOUT", "0")])
                .0
                .schedule
                .export_timeout,
            MAX_DURATION,
            "0 is no limit"
        );
        let (c, w) = from(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "0"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-3"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "soon"),
        ]);
        assert_eq!(c.schedule, Schedule::default());
        let names: Vec<_> = w.iter().map(|w| w.variable).collect();
        assert_eq!(
            names,
            [
                "OTEL_BSP_SCHEDULE_DELAY",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                "OTEL_BSP_EXPORT_TIMEOUT"
            ]
        );
        let (c, w) = from(&[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "99999999999999999999999")]);
        assert_eq!(c.schedule.max_batch_size, 512);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn settings_are_checked_with_their_names() {
        assert_eq!(Mode::parse("otlp"), Ok(Mode::Otlp));
        let e = Mode::parse("jaeger").unwrap_err();
        assert_eq!(
            e.to_string(),
            "exporter must be :none, :otlp, :console or [:otlp, :console] (got :jaeger)"
        );
        assert_eq!(parse_max_batch_size(1), Ok(1));
        assert_eq!(parse_max_batch_size(1_000_000), Ok(1_000_000));
        assert!(parse_max_batch_size(0).is_err());
        assert!(parse_max_batch_size(i128::MAX).is_err());
    }
}
