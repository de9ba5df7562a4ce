//! Every setting's name and check: a Ruby value to the core value it sets,
//! or ArgumentError naming the setting and what it takes.
//!
//! `TaskerTraceNative::Configuration` (Ruby) asks for the list of names
//! (`Native::SETTING_NAMES`), checks each assignment through
//! `Native.check_setting` and puts a whole set in force through
//! `Native.apply_settings` (see [`crate::ruby_api::native::settings`], which
//! reports the settings and puts them in force), which checks every value
//! again first, so a bad value changes nothing. A new setting is added here
//! (its name, its check, its field of [`InForce`], and when a variable gives
//! it, its arm in [`take_from_environment`]) and reported there.
//!
//! The `otlp_*` checks also serve `push_otlp`'s and `export_otlp`'s
//! arguments, under the argument's name, as [`boolean_argument`] serves the
//! true-or-false arguments.

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::rb_sys::AsRawValue;
use std::time::Duration;

use magnus::{
    Error, Float, Integer, RArray, RClass, RHash, RModule, RString, Ruby, Symbol, Value as RValue,
};
use rb_sys::VALUE;
use tasker_trace_core::encode::limits::{
    COUNT_LIMIT_EXPECTED, OPTIONAL_COUNT_LIMIT_EXPECTED, VALUE_LENGTH_LIMIT_EXPECTED,
};
use tasker_trace_core::encode::resource::ResourceSettings;
use tasker_trace_core::encode::SpanLimits;
use tasker_trace_core::export::settings::{
    parse_max_batch_size, parse_max_queue_size, Mode, BATCH_SIZE_EXPECTED, EXPORTER_EXPECTED,
    MAX_DURATION, MIN_DURATION, QUEUE_SIZE_EXPECTED, SECONDS_EXPECTED,
};
use tasker_trace_core::export::BackgroundSettings;
use tasker_trace_core::input::lifecycle::NEVER_EXPORTED;
use tasker_trace_core::model::backend::limits::{
    MAX_SPANS_EXPECTED, MAX_TRACES_EXPECTED, PRECISION_EXPECTED,
};
use tasker_trace_core::model::backend::Limits;
use tasker_trace_core::model::lifecycle::{
    LifecycleLimits, ATTRIBUTE_PREFIX_EXPECTED, POSITIVE_INTEGER_EXPECTED, TTL_EXPECTED,
};
use tasker_trace_core::model::sampling::{Sampling, RATIO_EXPECTED, SLOWER_THAN_EXPECTED};
use tasker_trace_core::support::protocol::Protocol;
use tasker_trace_core::support::SettingError;
use tasker_trace_core::transport::env;
use tasker_trace_core::transport::tls::{check_client_files, check_pem_file, PemRole};
use tasker_trace_core::transport::{Compression, OtlpSettings};
use tasker_trace_core::value::Value;

use crate::from_ruby::convert::{self, PayloadConverter};
use crate::from_ruby::lifecycle_read_plan::{MAX_ALLOWLIST, MAX_KEY_BYTES};
use crate::helpers::errors::{self, argument_error, shown};

/// The settings, in the order `TaskerTraceNative.config` lists them.
pub const SETTING_NAMES: &[&str] = &[
    "max_traces",
    "max_spans_per_trace",
    "timestamp_precision",
    "service_name",
    "resource_attributes",
    // OTLP export: where `push_otlp` sends and how.
    "otlp_endpoint",
    "otlp_headers",
    "otlp_protocol",
    "otlp_compression",
    "otlp_timeout",
    "otlp_certificate",
    "otlp_client_certificate",
    "otlp_client_key",
    "lifecycle_ttl",
    "lifecycle_max_open_runs",
    "lifecycle_max_spans_per_run",
    "lifecycle_max_finished_runs",
    "lifecycle_attributes",
    "attribute_prefix",
    "lifecycle_workflow_events",
    // The background exporter.
    "exporter",
    "export_schedule_delay",
    "export_max_batch_size",
    "export_timeout",
    // Sampling and the console exporter (see the block at the end).
    "sample_ratio",
    "sample_keep_errors",
    "sample_keep_slower_than",
    "sample_keep_retried",
    "console_output",
    // OpenTelemetry's span limits and the exporter's queue bound (checked
    // by `check_limit_setting`).
    "export_max_queue_size",
    "attribute_value_length_limit",
    "attribute_count_limit",
    "span_attribute_count_limit",
    "span_event_count_limit",
    "span_link_count_limit",
    "event_attribute_count_limit",
    "link_attribute_count_limit",
    // Connected traces (one block: see `check_connected_setting`).
    "opentelemetry_context",
];

pub const SERVICE_NAME_EXPECTED: &str = "a non-empty String";
pub const RESOURCE_ATTRIBUTES_EXPECTED: &str = "a Hash of String or Symbol keys to Strings, \
     Symbols, Integers, Floats, true, false or Arrays of one of these kinds";

pub const LIFECYCLE_ATTRIBUTES_EXPECTED: &str = "an Array of at most 256 payload key names \
     (non-empty Strings or Symbols of at most 256 bytes)";

/// Every setting in force, as core values.
#[derive(Clone, Debug)]
pub struct InForce {
    pub limits: Limits,
    pub resource: ResourceSettings,
    pub otlp: OtlpSettings,
    pub lifecycle: LifecycleLimits,
    /// `lifecycle_attributes`: the payload keys exported besides the known ones.
    pub lifecycle_attributes: Vec<String>,
    /// `attribute_prefix`: the lifecycle attribute keys' prefix name (`None`:
    /// Tasker's telemetry service name, else `tasker`).
    pub attribute_prefix: Option<String>,
    /// `lifecycle_workflow_events`: whether `trace_lifecycle!` also subscribes
    /// to the events the trace model only keeps as span events.
    pub workflow_events: bool,
    pub exporter: BackgroundSettings,
    /// `sample_*`: the sampling settings.
    pub sampling: Sampling,
    /// `console_output`: where the console exporter writes (`None`: stdout).
    pub console_output: Option<String>,
    pub span_limits: SpanLimits,
    /// `opentelemetry_context` (connected traces): `None` for `:auto`.
    pub opentelemetry_context: Option<bool>,
}

/// The ArgumentError for a setting given a value it does not take (or the
/// interrupt that arrived while the value was being described).
pub fn setting_error(
    ruby: &Ruby,
    setting: &'static str,
    expected: &'static str,
    v: RValue,
) -> Error {
    match shown(ruby, v) {
        Ok(got) => core_setting_error(
            ruby,
            SettingError {
                setting,
                expected,
                got,
            },
        ),
        Err(interrupt) => interrupt,
    }
}

fn core_setting_error(ruby: &Ruby, e: SettingError) -> Error {
    argument_error(ruby, e.to_string())
}

/// A core check's result, its error as ArgumentError.
fn checked<T>(ruby: &Ruby, r: Result<T, SettingError>) -> Result<T, Error> {
    r.map_err(|e| core_setting_error(ruby, e))
}

/// An Integer setting as a wide number (huge Integers saturate), `None` for
/// nil where nil is allowed, or the error that names the setting.
fn integer_setting(
    ruby: &Ruby,
    setting: &'static str,
    expected: &'static str,
    v: RValue,
    nil_allowed: bool,
) -> Result<Option<i128>, Error> {
    if v.is_nil() && nil_allowed {
        return Ok(None);
    }
    let Some(i) = Integer::from_value(v) else {
        return Err(setting_error(ruby, setting, expected, v));
    };
    Ok(Some(i.to_i128().unwrap_or_else(|_| {
        // Beyond i128 either way: the sign decides which end it saturates to.
        // SAFETY: `i` is an Integer; rb_big_sign reads a Bignum's sign flag.
        let positive = unsafe { rb_sys::rb_big_sign(i.as_raw()) } != 0;
        if positive {
            i128::MAX
        } else {
            i128::MIN
        }
    })))
}

/// Checks a `service_name` value: a non-empty UTF-8 String.
fn check_service_name(ruby: &Ruby, v: RValue) -> Result<String, Error> {
    check_name(ruby, "service_name", SERVICE_NAME_EXPECTED, v)
}

/// Checks an `attribute_prefix` value: a non-empty UTF-8 String, or nil.
pub fn check_attribute_prefix(ruby: &Ruby, v: RValue) -> Result<Option<String>, Error> {
    if v.is_nil() {
        return Ok(None);
    }
    check_name(ruby, "attribute_prefix", ATTRIBUTE_PREFIX_EXPECTED, v).map(Some)
}

/// A non-empty UTF-8 String setting.
fn check_name(
    ruby: &Ruby,
    setting: &'static str,
    expected: &'static str,
    v: RValue,
) -> Result<String, Error> {
    let bad = || setting_error(ruby, setting, expected, v);
    let s = RString::from_value(v).ok_or_else(bad)?;
    // Read in place (no Ruby allocation): the bytes must be UTF-8 text.
    let text = convert::string_to_str(s.as_raw())
        .as_utf8()
        .map(str::to_string)
        .ok_or_else(bad)?;
    if text.trim().is_empty() {
        return Err(bad());
    }
    Ok(text)
}

/// The kind of a value `resource_attributes` takes, for the one-kind rule
/// of Arrays (Strings and Symbols are one kind: both become strings).
#[derive(Clone, Copy, PartialEq, Eq)]
enum AttributeKind {
    Text,
    Integer,
    Float,
    Boolean,
}

fn attribute_kind(v: RValue) -> Option<AttributeKind> {
    let raw = v.as_raw();
    if raw == rb_sys::Qtrue as VALUE || raw == rb_sys::Qfalse as VALUE {
        Some(AttributeKind::Boolean)
    } else if RString::from_value(v).is_some() || Symbol::from_value(v).is_some() {
        Some(AttributeKind::Text)
    } else if Integer::from_value(v).is_some() {
        Some(AttributeKind::Integer)
    } else if Float::from_value(v).is_some() {
        Some(AttributeKind::Float)
    } else {
        None
    }
}

/// Why a `resource_attributes` value is refused (`None`: it is taken): a
/// scalar of another class, or an Array that is empty of kinds, mixes them
/// or holds something else.
fn refused_attribute_value(ruby: &Ruby, v: RValue) -> Result<Option<String>, Error> {
    if attribute_kind(v).is_some() {
        return Ok(None);
    }
    if v.is_nil() {
        return Ok(Some("is nil".to_string()));
    }
    let Some(items) = RArray::from_value(v) else {
        return Ok(Some(format!("is {}", class_name(v))));
    };
    let mut kind = None;
    for item in items.into_iter() {
        match (attribute_kind(item), kind) {
            (None, _) => {
                return Ok(Some(format!(
                    "is an Array holding {} {}",
                    class_name(item),
                    shown(ruby, item)?
                )))
            }
            (Some(k), Some(first)) if k != first => {
                return Ok(Some("is an Array mixing kinds of values".to_string()))
            }
            (Some(k), _) => kind = Some(k),
        }
    }
    Ok(None)
}

/// `a Time`, `an Object`: the class of `v` with its article.
fn class_name(v: RValue) -> String {
    // SAFETY: rb_obj_classname reads the class name of any object without
    // calling Ruby code; the C string lives as long as the class.
    let name = unsafe { std::ffi::CStr::from_ptr(rb_sys::rb_obj_classname(v.as_raw())) };
    let name = name.to_string_lossy();
    let article = if name.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// Checks a `resource_attributes` value: a Hash whose keys are non-empty
/// Strings or Symbols and whose values are Strings, Symbols, Integers,
/// Floats, true or false, or Arrays of one of these kinds (as OTLP allows).
/// A refused entry is named by its key.
fn check_resource_attributes(ruby: &Ruby, v: RValue) -> Result<Vec<(String, Value)>, Error> {
    let bad = || setting_error(ruby, "resource_attributes", RESOURCE_ATTRIBUTES_EXPECTED, v);
    let Some(hash) = RHash::from_value(v) else {
        return Err(bad());
    };
    let mut problem: Option<String> = None;
    hash.foreach(|k: RValue, val: RValue| {
        let key = string_like(k).filter(|k| !k.is_empty());
        problem = match key {
            None => Some(format!(
                "the key {} is not a non-empty String or Symbol",
                shown(ruby, k)?
            )),
            Some(key) => {
                refused_attribute_value(ruby, val)?.map(|why| format!("the value of {key:?} {why}"))
            }
        };
        Ok(if problem.is_some() {
            ForEach::Stop
        } else {
            ForEach::Continue
        })
    })?;
    if let Some(why) = problem {
        return Err(setting_error_because(
            ruby,
            "resource_attributes",
            RESOURCE_ATTRIBUTES_EXPECTED,
            v,
            &why,
        ));
    }
    let converted = PayloadConverter::new(ruby)
        .convert_root(v.as_raw())
        .map_err(|_| bad())?;
    let Value::Hash(pairs) = &converted else {
        return Err(bad());
    };
    let mut out: Vec<(String, Value)> = Vec::with_capacity(pairs.len());
    for (k, val) in pairs {
        let key = match k {
            Value::Str(s) => s.as_utf8().map(str::to_string),
            Value::Sym(s) => s.as_utf8().map(str::to_string),
            _ => None,
        }
        .filter(|k| !k.is_empty())
        .ok_or_else(bad)?;
        out.retain(|(existing, _)| *existing != key);
        out.push((key, val.clone()));
    }
    Ok(out)
}

/// `lifecycle_attributes`: an Array of payload key names.
fn check_lifecycle_attributes(ruby: &Ruby, v: RValue) -> Result<Vec<String>, Error> {
    let bad = || {
        setting_error(
            ruby,
            "lifecycle_attributes",
            LIFECYCLE_ATTRIBUTES_EXPECTED,
            v,
        )
    };
    let ary = RArray::from_value(v).ok_or_else(bad)?;
    if ary.len() > MAX_ALLOWLIST {
        return Err(bad());
    }
    let mut names = Vec::with_capacity(ary.len());
    for item in ary.into_iter() {
        let name = key_name(item).ok_or_else(bad)?;
        if NEVER_EXPORTED.contains(&name.as_str()) {
            return Err(setting_error_because(
                ruby,
                "lifecycle_attributes",
                LIFECYCLE_ATTRIBUTES_EXPECTED,
                v,
                &format!(
                    "{name} is never exported (it holds the app's own data, secrets among it)"
                ),
            ));
        }
        names.push(name);
    }
    Ok(names)
}

/// A positive Integer lifecycle bound, through its core check.
fn lifecycle_count(
    ruby: &Ruby,
    setting: &'static str,
    v: RValue,
    parse: fn(i128) -> Result<usize, SettingError>,
) -> Result<usize, Error> {
    let n = integer_setting(ruby, setting, POSITIVE_INTEGER_EXPECTED, v, false)?.unwrap_or(0);
    checked(ruby, parse(n))
}

/// Checks an `exporter` value: `:none`, `:otlp` or `:console` (a Symbol or
/// a String), or an Array of them (`[:otlp, :console]`: both sinks).
fn check_exporter_mode(ruby: &Ruby, v: RValue) -> Result<Mode, Error> {
    let bad = || setting_error(ruby, "exporter", EXPORTER_EXPECTED, v);
    let one = |item: RValue| string_like(item).and_then(|n| Mode::parse(&n).ok());
    match RArray::from_value(v) {
        Some(list) if !list.is_empty() && list.len() <= 3 => {
            let mut mode = Mode::None;
            for item in list.into_iter() {
                let name = string_like(item).ok_or_else(bad)?;
                mode = mode.with(&name).ok_or_else(bad)?;
            }
            Ok(mode)
        }
        Some(_) => Err(bad()),
        None => one(v).ok_or_else(bad),
    }
}

// ---------------------------------------------------------------------------
// Durations. Every setting and argument in seconds goes through [`seconds`].

/// What a duration setting or argument takes: from `min` to `max`, and the
/// words that say so in its error.
pub struct SecondsRange {
    pub min: Duration,
    pub max: Duration,
    pub expected: &'static str,
}

/// `lifecycle_ttl`: anything above zero.
pub const TTL: SecondsRange = SecondsRange {
    min: Duration::from_nanos(1),
    max: Duration::MAX,
    expected: TTL_EXPECTED,
};

/// `otlp_timeout` and the `timeout:` of `push_otlp`, `flush` and `shutdown`:
/// above zero, at most a day.
pub const TIMEOUT: SecondsRange = SecondsRange {
    min: Duration::from_nanos(1),
    max: MAX_DURATION,
    expected: "a positive number of seconds, at most 86400",
};

/// `sample_keep_slower_than` (when not nil): anything above zero.
pub const SLOWER_THAN: SecondsRange = SecondsRange {
    min: Duration::from_nanos(1),
    max: Duration::MAX,
    expected: SLOWER_THAN_EXPECTED,
};

/// `export_schedule_delay` and `export_timeout`: a millisecond to a day.
pub const SCHEDULE: SecondsRange = SecondsRange {
    min: MIN_DURATION,
    max: MAX_DURATION,
    expected: SECONDS_EXPECTED,
};

/// A number of seconds: an Integer, a Float, any other Numeric (Rational,
/// BigDecimal) or an ActiveSupport::Duration (`5.seconds`), within `range`,
/// rounded to whole nanoseconds; else ArgumentError naming `name`.
pub fn seconds(
    ruby: &Ruby,
    name: &'static str,
    v: RValue,
    range: &SecondsRange,
) -> Result<Duration, Error> {
    let bad = || setting_error(ruby, name, range.expected, v);
    let value = if let Some(i) = Integer::from_value(v) {
        // Beyond i64 either way is out of every range.
        i.to_i64().map_or(f64::NAN, |n| n as f64)
    } else if let Some(f) = Float::from_value(v) {
        f.to_f64()
    } else if numeric_or_duration(ruby, v) {
        match v.funcall::<_, _, RValue>("to_f", ()) {
            Ok(f) => Float::from_value(f).map_or(f64::NAN, |f| f.to_f64()),
            Err(e) if errors::must_propagate(ruby, &e) => return Err(e),
            Err(_) => f64::NAN,
        }
    } else {
        f64::NAN
    };
    let in_range =
        value.is_finite() && value >= range.min.as_secs_f64() && value <= range.max.as_secs_f64();
    match Duration::try_from_secs_f64(value) {
        Ok(d) if in_range && d >= range.min => Ok(d),
        _ => Err(bad()),
    }
}

/// A Numeric (Rational, BigDecimal) or an ActiveSupport::Duration.
fn numeric_or_duration(ruby: &Ruby, v: RValue) -> bool {
    // SAFETY: rb_obj_is_kind_of walks the ancestry without calling user code.
    let numeric = unsafe { rb_sys::rb_obj_is_kind_of(v.as_raw(), rb_sys::rb_cNumeric) };
    if numeric != rb_sys::Qfalse as VALUE {
        return true;
    }
    let duration = ruby
        .class_object()
        .const_get::<_, RModule>("ActiveSupport")
        .and_then(|m| m.const_get::<_, RClass>("Duration"));
    match duration {
        // SAFETY: as above; `d` is a class.
        Ok(d) => unsafe {
            rb_sys::rb_obj_is_kind_of(v.as_raw(), d.as_raw()) != rb_sys::Qfalse as VALUE
        },
        Err(_) => false,
    }
}

/// Checks `export_max_batch_size`: an Integer from 1 to 1,000,000.
fn check_batch_size(ruby: &Ruby, v: RValue) -> Result<usize, Error> {
    let setting = "export_max_batch_size";
    let n = integer_setting(ruby, setting, BATCH_SIZE_EXPECTED, v, false)?.unwrap_or(0);
    parse_max_batch_size(n).map_err(|_| setting_error(ruby, setting, BATCH_SIZE_EXPECTED, v))
}

/// Checks `value` for the setting `name` and writes it into `settings`.
pub fn check_into(
    ruby: &Ruby,
    settings: &mut InForce,
    name: &str,
    value: RValue,
) -> Result<(), Error> {
    let otlp = &mut settings.otlp;
    let export = &mut settings.exporter;
    match name {
        "max_traces" => {
            let n = integer_setting(ruby, "max_traces", MAX_TRACES_EXPECTED, value, true)?;
            settings.limits.max_traces = checked(ruby, Limits::parse_max_traces(n))?;
        }
        "max_spans_per_trace" => {
            let n = integer_setting(ruby, "max_spans_per_trace", MAX_SPANS_EXPECTED, value, true)?;
            settings.limits.max_spans_per_trace = checked(ruby, Limits::parse_max_spans(n))?;
        }
        "timestamp_precision" => {
            let n = integer_setting(
                ruby,
                "timestamp_precision",
                PRECISION_EXPECTED,
                value,
                false,
            )?
            .unwrap_or(0);
            settings.limits.timestamp_precision = checked(ruby, Limits::parse_precision(n))?;
        }
        "service_name" => settings.resource.service_name = check_service_name(ruby, value)?,
        "resource_attributes" => {
            settings.resource.attributes = check_resource_attributes(ruby, value)?
        }
        "lifecycle_ttl" => settings.lifecycle.ttl = seconds(ruby, "lifecycle_ttl", value, &TTL)?,
        "lifecycle_max_open_runs" => {
            settings.lifecycle.max_open_runs = lifecycle_count(
                ruby,
                "lifecycle_max_open_runs",
                value,
                LifecycleLimits::parse_max_open_runs,
            )?
        }
        "lifecycle_max_spans_per_run" => {
            settings.lifecycle.max_spans_per_run = lifecycle_count(
                ruby,
                "lifecycle_max_spans_per_run",
                value,
                LifecycleLimits::parse_max_spans_per_run,
            )?
        }
        "lifecycle_max_finished_runs" => {
            settings.lifecycle.max_finished_runs = lifecycle_count(
                ruby,
                "lifecycle_max_finished_runs",
                value,
                LifecycleLimits::parse_max_finished_runs,
            )?
        }
        "lifecycle_attributes" => {
            settings.lifecycle_attributes = check_lifecycle_attributes(ruby, value)?
        }
        "attribute_prefix" => settings.attribute_prefix = check_attribute_prefix(ruby, value)?,
        "lifecycle_workflow_events" => {
            settings.workflow_events = match value.as_raw() {
                x if x == rb_sys::Qtrue as VALUE => true,
                x if x == rb_sys::Qfalse as VALUE => false,
                _ => {
                    return Err(setting_error(
                        ruby,
                        "lifecycle_workflow_events",
                        "true or false",
                        value,
                    ))
                }
            }
        }
        "otlp_endpoint" => otlp.endpoint = endpoint_value(ruby, "otlp_endpoint", value)?,
        "otlp_headers" => otlp.headers = headers_value(ruby, "otlp_headers", value)?,
        "otlp_protocol" => otlp.protocol = protocol_value(ruby, "otlp_protocol", value)?,
        "otlp_compression" => otlp.compression = compression_value(ruby, value)?,
        "otlp_timeout" => otlp.timeout = seconds(ruby, "otlp_timeout", value, &TIMEOUT)?,
        "otlp_certificate" => {
            let file = PemSetting::CA;
            otlp.certificate = file.check(ruby, value, otlp.certificate.as_deref())?;
        }
        "otlp_client_certificate" => {
            let file = PemSetting::CLIENT_CERTIFICATE;
            otlp.client_certificate =
                file.check(ruby, value, otlp.client_certificate.as_deref())?;
        }
        "otlp_client_key" => {
            let file = PemSetting::CLIENT_KEY;
            otlp.client_key = file.check(ruby, value, otlp.client_key.as_deref())?;
        }
        "exporter" => export.mode = check_exporter_mode(ruby, value)?,
        "export_schedule_delay" => {
            export.schedule.delay = seconds(ruby, "export_schedule_delay", value, &SCHEDULE)?
        }
        "export_max_batch_size" => export.schedule.max_batch_size = check_batch_size(ruby, value)?,
        "export_timeout" => {
            export.schedule.export_timeout = seconds(ruby, "export_timeout", value, &SCHEDULE)?
        }
        "sample_ratio"
        | "sample_keep_errors"
        | "sample_keep_slower_than"
        | "sample_keep_retried"
        | "console_output" => check_sampling_or_console(ruby, settings, name, value)?,
        other if check_connected_setting(ruby, settings, other, value)? => {}
        other => return check_limit_setting(ruby, settings, other, value),
    }
    Ok(())
}

/// The ArgumentError for a name that is no setting, listing the settings.
pub fn unknown_setting(ruby: &Ruby, name: &str) -> Error {
    argument_error(
        ruby,
        format!(
            "unknown setting {name} (settings: {})",
            SETTING_NAMES.join(", ")
        ),
    )
}

// ---------------------------------------------------------------------------
// OpenTelemetry's span limits and the exporter's queue bound.

/// A limit setting: an Integer from 0 to the largest limit, or nil where
/// `nil_allowed` (then `None`).
fn limit_value(
    ruby: &Ruby,
    setting: &'static str,
    expected: &'static str,
    v: RValue,
    nil_allowed: bool,
) -> Result<Option<usize>, Error> {
    integer_setting(ruby, setting, expected, v, nil_allowed)?
        .map(|n| checked(ruby, SpanLimits::parse_limit(setting, expected, n)))
        .transpose()
}

/// Checks `value` for one of the settings of this block and writes it into
/// `settings`; any other name is an unknown setting.
fn check_limit_setting(
    ruby: &Ruby,
    settings: &mut InForce,
    name: &str,
    value: RValue,
) -> Result<(), Error> {
    let l = &mut settings.span_limits;
    let count = |setting| {
        Ok::<_, Error>(limit_value(ruby, setting, COUNT_LIMIT_EXPECTED, value, false)?.unwrap_or(0))
    };
    let optional = |setting| limit_value(ruby, setting, OPTIONAL_COUNT_LIMIT_EXPECTED, value, true);
    match name {
        "export_max_queue_size" => {
            let n = integer_setting(
                ruby,
                "export_max_queue_size",
                QUEUE_SIZE_EXPECTED,
                value,
                false,
            )?
            .unwrap_or(0);
            settings.exporter.schedule.max_queue_size = parse_max_queue_size(n).map_err(|_| {
                setting_error(ruby, "export_max_queue_size", QUEUE_SIZE_EXPECTED, value)
            })?;
        }
        "attribute_value_length_limit" => {
            l.attribute_value_length = limit_value(
                ruby,
                "attribute_value_length_limit",
                VALUE_LENGTH_LIMIT_EXPECTED,
                value,
                true,
            )?
        }
        "attribute_count_limit" => l.attribute_count = count("attribute_count_limit")?,
        "span_attribute_count_limit" => {
            l.span_attribute_count = optional("span_attribute_count_limit")?
        }
        "span_event_count_limit" => l.span_event_count = count("span_event_count_limit")?,
        "span_link_count_limit" => l.span_link_count = count("span_link_count_limit")?,
        "event_attribute_count_limit" => {
            l.event_attribute_count = optional("event_attribute_count_limit")?
        }
        "link_attribute_count_limit" => {
            l.link_attribute_count = optional("link_attribute_count_limit")?
        }
        other => return Err(unknown_setting(ruby, other)),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The settings a variable gives.

/// Puts the environment's value of setting `name` (in `env`, every setting
/// as the environment alone gives it) into `to`; false for a setting no
/// variable gives. A setting given in Ruby is never taken from `env`.
pub fn take_from_environment(name: &str, env: &InForce, to: &mut InForce) -> bool {
    let (o, e) = (&mut to.otlp, &env.otlp);
    let (x, y) = (&mut to.exporter.schedule, &env.exporter.schedule);
    let (l, m) = (&mut to.span_limits, &env.span_limits);
    match name {
        "service_name" => to.resource.service_name = env.resource.service_name.clone(),
        "resource_attributes" => to.resource.attributes = env.resource.attributes.clone(),
        "otlp_endpoint" => o.endpoint = e.endpoint.clone(),
        "otlp_headers" => o.headers = e.headers.clone(),
        "otlp_protocol" => o.protocol = e.protocol,
        "otlp_compression" => o.compression = e.compression,
        "otlp_timeout" => o.timeout = e.timeout,
        "otlp_certificate" => o.certificate = e.certificate.clone(),
        "otlp_client_certificate" => o.client_certificate = e.client_certificate.clone(),
        "otlp_client_key" => o.client_key = e.client_key.clone(),
        "exporter" => to.exporter.mode = env.exporter.mode,
        "export_schedule_delay" => x.delay = y.delay,
        "export_max_batch_size" => x.max_batch_size = y.max_batch_size,
        "export_timeout" => x.export_timeout = y.export_timeout,
        "export_max_queue_size" => x.max_queue_size = y.max_queue_size,
        "attribute_value_length_limit" => l.attribute_value_length = m.attribute_value_length,
        "attribute_count_limit" => l.attribute_count = m.attribute_count,
        "span_attribute_count_limit" => l.span_attribute_count = m.span_attribute_count,
        "span_event_count_limit" => l.span_event_count = m.span_event_count,
        "span_link_count_limit" => l.span_link_count = m.span_link_count,
        "event_attribute_count_limit" => l.event_attribute_count = m.event_attribute_count,
        "link_attribute_count_limit" => l.link_attribute_count = m.link_attribute_count,
        // OTEL_TRACES_SAMPLER_ARG (with a ratio sampler); the keep rules and
        // console_output have no variable.
        "sample_ratio" => to.sampling.ratio = env.sampling.ratio,
        _ => return false,
    }
    true
}

/// A payload key name: a non-empty String or Symbol of UTF-8 text, at most
/// [`MAX_KEY_BYTES`] bytes (`lifecycle_attributes`, the lifecycle filters).
pub fn key_name(v: RValue) -> Option<String> {
    let name = if let Some(s) = RString::from_value(v) {
        s.to_string().ok()?
    } else {
        Symbol::from_value(v)?.name().ok()?.into_owned()
    };
    (!name.is_empty() && name.len() <= MAX_KEY_BYTES).then_some(name)
}

/// An argument that takes true or false (`drain`, `include_open`).
pub fn boolean_argument(ruby: &Ruby, name: &str, v: RValue) -> Result<bool, Error> {
    let raw = v.as_raw();
    if raw == rb_sys::Qtrue as rb_sys::VALUE {
        Ok(true)
    } else if raw == rb_sys::Qfalse as rb_sys::VALUE {
        Ok(false)
    } else {
        Err(argument_error(
            ruby,
            format!("{name} must be true or false (got {})", shown(ruby, v)?),
        ))
    }
}

// ---------------------------------------------------------------------------
// OTLP export settings (`otlp_*`). The value checks also serve `push_otlp`'s
// and `export_otlp`'s arguments, under the argument's name.

pub const ENDPOINT_EXPECTED: &str = "an http:// or https:// URL String, or nil";
pub const HEADERS_EXPECTED: &str = "a Hash of String or Symbol names to String values";
pub const PROTOCOL_EXPECTED: &str = "\"http/protobuf\" or \"http/json\"";
const COMPRESSION_EXPECTED: &str = "\"gzip\" or \"none\"";

/// The ArgumentError for a value refused for a reason beyond its type:
/// `<setting> must be <expected> (got <inspect>): <why>`, the reason cut
/// at 300 characters (it may quote the value, which can be huge).
fn setting_error_because(
    ruby: &Ruby,
    setting: &'static str,
    expected: &'static str,
    v: RValue,
    why: &str,
) -> Error {
    let why: String = match why.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &why[..cut]),
        None => why.to_string(),
    };
    match shown(ruby, v) {
        Ok(got) => argument_error(
            ruby,
            format!(
                "{}: {why}",
                SettingError {
                    setting,
                    expected,
                    got
                }
            ),
        ),
        Err(interrupt) => interrupt,
    }
}

/// A String (UTF-8) or a Symbol's name.
pub fn string_like(v: RValue) -> Option<String> {
    if let Some(s) = RString::from_value(v) {
        return s.to_string().ok();
    }
    Symbol::from_value(v).and_then(|s| s.name().ok().map(|n| n.into_owned()))
}

/// An endpoint: nil (`None`), or a base URL whose traces URL is http(s)://
/// with a host, kept as given.
pub fn endpoint_value(ruby: &Ruby, name: &'static str, v: RValue) -> Result<Option<String>, Error> {
    if v.is_nil() {
        return Ok(None);
    }
    let Some(url) = RString::from_value(v).and_then(|s| s.to_string().ok()) else {
        return Err(setting_error(ruby, name, ENDPOINT_EXPECTED, v));
    };
    match env::check_endpoint(&url) {
        Ok(()) => Ok(Some(url)),
        Err(why) => {
            // The message quotes the value: its password, if any, hidden.
            let got = match env::shown_url(&url) {
                std::borrow::Cow::Owned(shown) => ruby.str_new(&shown).as_value(),
                std::borrow::Cow::Borrowed(_) => v,
            };
            Err(setting_error_because(
                ruby,
                name,
                ENDPOINT_EXPECTED,
                got,
                &why,
            ))
        }
    }
}

/// HTTP headers: a Hash of String or Symbol names to String (or Symbol)
/// values, each a valid header; a later name replaces an earlier one that
/// differs only in case.
pub fn headers_value(
    ruby: &Ruby,
    name: &'static str,
    v: RValue,
) -> Result<Vec<(String, String)>, Error> {
    // Header values are credentials (a token, Basic authentication): an
    // error names the headers and the values' classes, never a value.
    let Some(hash) = RHash::from_value(v) else {
        let got = format!("an instance of {}", class_of(v)?);
        return Err(headers_error(ruby, name, got, None));
    };
    let mut pairs = Vec::new();
    let mut names = Vec::new();
    let mut problem: Option<String> = None;
    hash.foreach(|k: RValue, val: RValue| {
        let key = shown(ruby, k)?;
        match (string_like(k), string_like(val)) {
            (Some(header), Some(value)) => match env::check_header(&header, &value) {
                Ok(()) => pairs.push((header, value)),
                Err(e) => problem = Some(e),
            },
            _ => problem = Some(format!("{key} => an instance of {}", class_of(val)?)),
        }
        names.push(key);
        Ok(if problem.is_some() {
            ForEach::Stop
        } else {
            ForEach::Continue
        })
    })?;
    if let Some(why) = problem {
        let got = format!("a Hash with the headers {}", names.join(", "));
        return Err(headers_error(ruby, name, got, Some(&why)));
    }
    let mut headers = Vec::with_capacity(pairs.len());
    env::merge_headers(&mut headers, pairs);
    Ok(headers)
}

/// The ArgumentError of a headers setting or argument: `got` says what was
/// given without any value (see `headers_value`).
fn headers_error(ruby: &Ruby, setting: &'static str, got: String, why: Option<&str>) -> Error {
    let error = SettingError {
        setting,
        expected: HEADERS_EXPECTED,
        got,
    };
    match why {
        Some(why) => argument_error(ruby, format!("{error}: {why}")),
        None => core_setting_error(ruby, error),
    }
}

/// `v`'s class name ("String", "Array").
fn class_of(v: RValue) -> Result<String, Error> {
    let name = crate::from_ruby::convert::class_placeholder(v.as_raw())?;
    let name = String::from_utf8_lossy(&name);
    Ok(name
        .trim_start_matches("#<")
        .trim_end_matches('>')
        .to_string())
}

/// `"http/protobuf"` or `"http/json"`, as a String or a Symbol; `grpc` is
/// refused with where to send instead.
pub fn protocol_value(ruby: &Ruby, name: &'static str, v: RValue) -> Result<Protocol, Error> {
    let Some(text) = string_like(v) else {
        return Err(setting_error(ruby, name, PROTOCOL_EXPECTED, v));
    };
    env::parse_protocol(&text)
        .map_err(|why| setting_error_because(ruby, name, PROTOCOL_EXPECTED, v, &why))
}

fn compression_value(ruby: &Ruby, v: RValue) -> Result<Compression, Error> {
    let setting = "otlp_compression";
    let Some(text) = string_like(v) else {
        return Err(setting_error(ruby, setting, COMPRESSION_EXPECTED, v));
    };
    env::parse_compression(&text).map_err(|_| setting_error(ruby, setting, COMPRESSION_EXPECTED, v))
}

/// A setting naming a PEM file.
struct PemSetting {
    setting: &'static str,
    expected: &'static str,
    role: PemRole,
}

impl PemSetting {
    const CA: PemSetting = PemSetting {
        setting: "otlp_certificate",
        expected: "the path of a PEM file of CA certificates, or nil",
        role: PemRole::Ca,
    };
    const CLIENT_CERTIFICATE: PemSetting = PemSetting {
        setting: "otlp_client_certificate",
        expected: "the path of a PEM file of a client certificate (chain), or nil",
        role: PemRole::ClientCertificate,
    };
    const CLIENT_KEY: PemSetting = PemSetting {
        setting: "otlp_client_key",
        expected: "the path of a PEM file of a private key (PKCS#8, SEC1 or PKCS#1), or nil",
        role: PemRole::ClientKey,
    };

    /// nil, or the path of a file holding what the setting needs. A path
    /// equal to the one in force is not read again, so that an unrelated
    /// change never fails for a file that changed since it was set.
    fn check(
        &self,
        ruby: &Ruby,
        v: RValue,
        in_force: Option<&str>,
    ) -> Result<Option<String>, Error> {
        if v.is_nil() {
            return Ok(None);
        }
        let path = RString::from_value(v)
            .and_then(|s| s.to_string().ok())
            .filter(|p| !p.trim().is_empty() && !p.contains('\0'))
            .ok_or_else(|| setting_error(ruby, self.setting, self.expected, v))?;
        if in_force != Some(path.as_str()) {
            check_pem_file(&path, self.role)
                .map_err(|why| setting_error_because(ruby, self.setting, self.expected, v, &why))?;
        }
        Ok(Some(path))
    }
}

/// A client certificate needs its key and the other way round, and they
/// must belong together; checked when either changes.
pub fn check_client_pair(
    ruby: &Ruby,
    before: &OtlpSettings,
    next: &OtlpSettings,
) -> Result<(), Error> {
    let (cert, key) = (&next.client_certificate, &next.client_key);
    if (cert, key) == (&before.client_certificate, &before.client_key) {
        return Ok(());
    }
    let message = match (cert, key) {
        (Some(_), None) => {
            "otlp_client_key must be set with otlp_client_certificate (got nil)".to_string()
        }
        (None, Some(_)) => {
            "otlp_client_certificate must be set with otlp_client_key (got nil)".to_string()
        }
        _ => match check_client_files(cert.as_deref(), key.as_deref()) {
            Ok(()) => return Ok(()),
            Err(why) => format!(
                "otlp_client_key must be the key of otlp_client_certificate (got {:?}): {why}",
                key.as_deref().unwrap_or("")
            ),
        },
    };
    Err(argument_error(ruby, message))
}

// ---------------------------------------------------------------------------
// Sampling (`sample_*`) and the console exporter (`console_output`).

pub const CONSOLE_OUTPUT_EXPECTED: &str =
    "the path of a file to append to, or nil (standard output)";

/// A true-or-false setting.
fn boolean_setting(ruby: &Ruby, setting: &'static str, v: RValue) -> Result<bool, Error> {
    match v.as_raw() {
        x if x == rb_sys::Qtrue as VALUE => Ok(true),
        x if x == rb_sys::Qfalse as VALUE => Ok(false),
        _ => Err(setting_error(ruby, setting, "true or false", v)),
    }
}

/// A real number (`sample_ratio`): an Integer, Float, Rational or
/// BigDecimal; `None` for anything else.
fn real_number(ruby: &Ruby, v: RValue) -> Result<Option<f64>, Error> {
    if let Some(f) = Float::from_value(v) {
        return Ok(Some(f.to_f64()));
    }
    if let Some(i) = Integer::from_value(v) {
        return Ok(Some(i.to_i64().map_or(f64::INFINITY, |n| n as f64)));
    }
    if !numeric_or_duration(ruby, v) {
        return Ok(None);
    }
    match v.funcall::<_, _, RValue>("to_f", ()) {
        Ok(f) => Ok(Float::from_value(f).map(|f| f.to_f64())),
        Err(e) if errors::must_propagate(ruby, &e) => Err(e),
        Err(_) => Ok(None),
    }
}

/// `console_output`: nil, or a path the process can append to (created if
/// missing; checked only when it changes).
fn check_console_output(
    ruby: &Ruby,
    v: RValue,
    in_force: Option<&str>,
) -> Result<Option<String>, Error> {
    if v.is_nil() {
        return Ok(None);
    }
    let setting = "console_output";
    let path = RString::from_value(v)
        .and_then(|s| s.to_string().ok())
        .filter(|p| !p.trim().is_empty() && !p.contains('\0'))
        .ok_or_else(|| setting_error(ruby, setting, CONSOLE_OUTPUT_EXPECTED, v))?;
    if in_force != Some(path.as_str()) {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| {
                setting_error_because(ruby, setting, CONSOLE_OUTPUT_EXPECTED, v, &e.to_string())
            })?;
    }
    Ok(Some(path))
}

/// Checks a sampling setting or `console_output` and writes it into
/// `settings`.
fn check_sampling_or_console(
    ruby: &Ruby,
    settings: &mut InForce,
    name: &str,
    v: RValue,
) -> Result<(), Error> {
    let sampling = &mut settings.sampling;
    match name {
        "sample_ratio" => {
            let bad = || setting_error(ruby, "sample_ratio", RATIO_EXPECTED, v);
            let ratio = real_number(ruby, v)?.ok_or_else(bad)?;
            sampling.ratio = Sampling::parse_ratio(ratio).map_err(|_| bad())?;
        }
        "sample_keep_errors" => sampling.keep_errors = boolean_setting(ruby, name_of(name), v)?,
        "sample_keep_retried" => sampling.keep_retried = boolean_setting(ruby, name_of(name), v)?,
        "sample_keep_slower_than" => {
            let setting = "sample_keep_slower_than";
            sampling.keep_slower_than = if v.is_nil() {
                None
            } else {
                Some(seconds(ruby, setting, v, &SLOWER_THAN)?)
            };
        }
        _ => {
            let in_force = settings.console_output.clone();
            settings.console_output = check_console_output(ruby, v, in_force.as_deref())?;
        }
    }
    Ok(())
}

/// The static name of a boolean sampling setting.
fn name_of(name: &str) -> &'static str {
    if name == "sample_keep_errors" {
        "sample_keep_errors"
    } else {
        "sample_keep_retried"
    }
}

// ---- Connected traces: the OpenTelemetry context (one block) ----

/// What `opentelemetry_context` takes.
pub const OPENTELEMETRY_CONTEXT_EXPECTED: &str = "true, false or :auto";

/// Checks the connected-trace settings; false when `name` is not one of
/// them. `opentelemetry_context`: `:auto` (the default) or true use the
/// OpenTelemetry context when its API is loaded; false never does.
fn check_connected_setting(
    ruby: &Ruby,
    settings: &mut InForce,
    name: &str,
    value: RValue,
) -> Result<bool, Error> {
    match name {
        "opentelemetry_context" => {
            settings.opentelemetry_context = match value.as_raw() {
                x if x == rb_sys::Qtrue as VALUE => Some(true),
                x if x == rb_sys::Qfalse as VALUE => Some(false),
                _ => match Symbol::from_value(value).map(|s| s.name()) {
                    Some(Ok(n)) if n == "auto" => None,
                    _ => {
                        return Err(setting_error(
                            ruby,
                            "opentelemetry_context",
                            OPENTELEMETRY_CONTEXT_EXPECTED,
                            value,
                        ))
                    }
                },
            };
            Ok(true)
        }
        _ => Ok(false),
    }
}
