//! Every setting's name and check: a Ruby value to the core value it sets,
//! or ArgumentError naming the setting and what it takes.
//!
//! `TaskerTraceNative::Configuration` (Ruby) asks for the list of names
//! (`Native::SETTING_NAMES`), checks each assignment through
//! `Native.check_setting` and puts a whole set in force through
//! `Native.apply_settings` (see [`crate::ruby_api::native::settings`], which
//! reports the settings and puts them in force), which checks every value
//! again first, so a bad value changes nothing. A new setting is added here
//! (its name, its check, its field of [`InForce`]) and reported there.
//!
//! The `otlp_*` checks also serve `push_otlp`'s and `export_otlp`'s
//! arguments, under the argument's name, as [`boolean_argument`] serves the
//! true-or-false arguments.

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::rb_sys::AsRawValue;
use std::time::Duration;

use magnus::{
    Error, Float, Integer, RArray, RClass, RHash, RModule, RRational, RString, Ruby, Symbol,
    TryConvert, Value as RValue,
};
use rb_sys::VALUE;
use tasker_trace_core::encode::resource::ResourceSettings;
use tasker_trace_core::export::settings::{
    parse_max_batch_size, parse_seconds, Mode, BATCH_SIZE_EXPECTED, EXPORTER_EXPECTED,
    SECONDS_EXPECTED,
};
use tasker_trace_core::export::BackgroundSettings;
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
pub const SETTING_NAMES: [&str; 30] = [
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
    // Connected traces (one block: see `check_connected_setting`).
    "opentelemetry_context",
];

pub const SERVICE_NAME_EXPECTED: &str = "a non-empty String";
pub const RESOURCE_ATTRIBUTES_EXPECTED: &str =
    "a Hash of String or Symbol keys to Strings, Symbols, numbers, booleans or Arrays of them";

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

fn scalar_attribute(v: &Value) -> bool {
    matches!(
        v,
        Value::Str(_)
            | Value::Sym(_)
            | Value::Int(_)
            | Value::BigInt(_)
            | Value::Float(_)
            | Value::Bool(_)
    )
}

/// Checks a `resource_attributes` value: a Hash whose keys are non-empty
/// Strings or Symbols and whose values are scalars or Arrays of scalars.
fn check_resource_attributes(ruby: &Ruby, v: RValue) -> Result<Vec<(String, Value)>, Error> {
    let bad = || setting_error(ruby, "resource_attributes", RESOURCE_ATTRIBUTES_EXPECTED, v);
    if RHash::from_value(v).is_none() {
        return Err(bad());
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
        let ok = scalar_attribute(val)
            || matches!(val, Value::Array(items) if items.iter().all(scalar_attribute));
        if !ok {
            return Err(bad());
        }
        out.retain(|(existing, _)| *existing != key);
        out.push((key, val.clone()));
    }
    Ok(out)
}

/// `lifecycle_ttl`: seconds as any real number (Integer, Float, Rational,
/// BigDecimal) or an ActiveSupport::Duration (`1.hour`).
fn check_ttl(ruby: &Ruby, v: RValue) -> Result<Duration, Error> {
    let bad = || setting_error(ruby, "lifecycle_ttl", TTL_EXPECTED, v);
    let seconds = if let Some(f) = Float::from_value(v) {
        f.to_f64()
    } else if Integer::from_value(v).is_some() {
        integer_setting(ruby, "lifecycle_ttl", TTL_EXPECTED, v, false)?.unwrap_or(0) as f64
    } else if numeric_or_duration(ruby, v) {
        match v.funcall::<_, _, RValue>("to_f", ()) {
            Ok(f) => Float::from_value(f).map(|f| f.to_f64()).ok_or_else(bad)?,
            Err(e) if errors::must_propagate(ruby, &e) => return Err(e),
            Err(_) => return Err(bad()),
        }
    } else {
        return Err(bad());
    };
    checked(ruby, LifecycleLimits::parse_ttl(seconds))
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
        names.push(key_name(item).ok_or_else(bad)?);
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

/// Checks `export_schedule_delay` and `export_timeout`: seconds, an Integer
/// or a Float, from a millisecond to a day.
fn check_seconds(
    ruby: &Ruby,
    setting: &'static str,
    v: RValue,
) -> Result<std::time::Duration, Error> {
    let seconds = if let Some(i) = Integer::from_value(v) {
        i.to_i64().map_or(f64::INFINITY, |n| n as f64)
    } else if let Some(f) = magnus::Float::from_value(v) {
        f.to_f64()
    } else {
        f64::NAN
    };
    parse_seconds(setting, seconds).map_err(|_| setting_error(ruby, setting, SECONDS_EXPECTED, v))
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
        "lifecycle_ttl" => settings.lifecycle.ttl = check_ttl(ruby, value)?,
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
        "otlp_timeout" => otlp.timeout = seconds_value(ruby, "otlp_timeout", value)?,
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
            export.schedule.delay = check_seconds(ruby, "export_schedule_delay", value)?
        }
        "export_max_batch_size" => export.schedule.max_batch_size = check_batch_size(ruby, value)?,
        "export_timeout" => {
            export.schedule.export_timeout = check_seconds(ruby, "export_timeout", value)?
        }
        "sample_ratio"
        | "sample_keep_errors"
        | "sample_keep_slower_than"
        | "sample_keep_retried"
        | "console_output" => check_sampling_or_console(ruby, settings, name, value)?,
        other if check_connected_setting(ruby, settings, other, value)? => {}
        other => {
            return Err(argument_error(
                ruby,
                format!(
                    "unknown setting {other} (settings: {})",
                    SETTING_NAMES.join(", ")
                ),
            ))
        }
    }
    Ok(())
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
/// Longest timeout taken, in seconds (a day).
const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;
pub const TIMEOUT_EXPECTED: &str = "a positive number of seconds, at most 86400";

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
    match env::check_endpoint(&env::traces_url_from_base(&url)) {
        Ok(()) => Ok(Some(url)),
        Err(why) => Err(setting_error_because(
            ruby,
            name,
            ENDPOINT_EXPECTED,
            v,
            &why,
        )),
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
    let Some(hash) = RHash::from_value(v) else {
        return Err(setting_error(ruby, name, HEADERS_EXPECTED, v));
    };
    let mut pairs = Vec::new();
    let mut problem: Option<String> = None;
    hash.foreach(|k: RValue, val: RValue| {
        match (string_like(k), string_like(val)) {
            (Some(header), Some(value)) => match env::check_header(&header, &value) {
                Ok(()) => pairs.push((header, value)),
                Err(e) => problem = Some(e),
            },
            _ => problem = Some(format!("{} => {}", shown(ruby, k)?, shown(ruby, val)?)),
        }
        Ok(if problem.is_some() {
            ForEach::Stop
        } else {
            ForEach::Continue
        })
    })?;
    if let Some(why) = problem {
        return Err(setting_error_because(ruby, name, HEADERS_EXPECTED, v, &why));
    }
    let mut headers = Vec::with_capacity(pairs.len());
    env::merge_headers(&mut headers, pairs);
    Ok(headers)
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

/// Seconds as an Integer, Float or Rational: positive, at most a day,
/// rounded to whole nanoseconds.
pub fn seconds_value(
    ruby: &Ruby,
    name: &'static str,
    v: RValue,
) -> Result<std::time::Duration, Error> {
    let seconds = if let Some(i) = Integer::from_value(v) {
        i.to_i64().map_or(f64::INFINITY, |n| n as f64)
    } else if Float::from_value(v).is_some() || RRational::from_value(v).is_some() {
        f64::try_convert(v).unwrap_or(f64::NAN)
    } else {
        f64::NAN
    };
    let nanos = (seconds * 1e9).round();
    if seconds.is_finite() && seconds <= MAX_TIMEOUT_SECONDS && nanos >= 1.0 {
        Ok(std::time::Duration::from_nanos(nanos as u64))
    } else {
        Err(setting_error(ruby, name, TIMEOUT_EXPECTED, v))
    }
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

/// A real number as seconds: an Integer, Float, Rational or BigDecimal, or
/// an ActiveSupport::Duration; `None` for anything else.
fn real_seconds(ruby: &Ruby, v: RValue) -> Result<Option<f64>, Error> {
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
            let ratio = real_seconds(ruby, v)?.ok_or_else(bad)?;
            sampling.ratio = Sampling::parse_ratio(ratio).map_err(|_| bad())?;
        }
        "sample_keep_errors" => sampling.keep_errors = boolean_setting(ruby, name_of(name), v)?,
        "sample_keep_retried" => sampling.keep_retried = boolean_setting(ruby, name_of(name), v)?,
        "sample_keep_slower_than" => {
            let setting = "sample_keep_slower_than";
            sampling.keep_slower_than = if v.is_nil() {
                None
            } else {
                let bad = || setting_error(ruby, setting, SLOWER_THAN_EXPECTED, v);
                let seconds = real_seconds(ruby, v)?.ok_or_else(bad)?;
                Some(Sampling::parse_slower_than(seconds).map_err(|_| bad())?)
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
