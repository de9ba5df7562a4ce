//! Every setting in one place: its name, its check, how it is reported and
//! how it is put in force in the core.
//!
//! `TaskerTraceNative::Configuration` (Ruby) asks this module for the list of
//! names (`Native::SETTING_NAMES`), checks each assignment through
//! `Native.check_setting` and puts a whole set in force through
//! `Native.apply_settings`, which checks every value again first, so a bad
//! value changes nothing. A new setting is added here, and nowhere else in the
//! binding.

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::rb_sys::AsRawValue;
use magnus::{function, Error, Integer, RHash, RModule, RString, Ruby, Symbol, Value as RValue};
use rb_sys::VALUE;
use tasker_trace_core::backend::limits::{
    MAX_SPANS_EXPECTED, MAX_TRACES_EXPECTED, PRECISION_EXPECTED,
};
use tasker_trace_core::exporter::schedule::{
    self, Mode, BATCH_SIZE_EXPECTED, EXPORTER_EXPECTED, SECONDS_EXPECTED,
};
use tasker_trace_core::exporter::ExporterConfig;
use tasker_trace_core::settings::ResourceSettings;
use tasker_trace_core::{Backend, Limits, SettingError, Value};

use crate::backend;
use crate::convert::{self, PayloadConverter};
use crate::errors::{self, argument_error, guarded};
use crate::exporter_methods::exporter;
use crate::names::sym;
use crate::to_ruby::{
    count_to_ruby, float_to_ruby, hash_from_pairs, hash_set, int_to_ruby, new_hash, nil,
    utf8_to_ruby, value_to_ruby, wrap,
};

/// The settings, in the order `TaskerTraceNative.config` lists them.
pub const SETTING_NAMES: [&str; 9] = [
    "max_traces",
    "max_spans_per_trace",
    "timestamp_precision",
    "service_name",
    "resource_attributes",
    // The background exporter.
    "exporter",
    "export_schedule_delay",
    "export_max_batch_size",
    "export_timeout",
];

pub const SERVICE_NAME_EXPECTED: &str = "a non-empty String";
pub const RESOURCE_ATTRIBUTES_EXPECTED: &str =
    "a Hash of String or Symbol keys to Strings, Symbols, numbers, booleans or Arrays of them";

/// Every setting in force, as core values.
#[derive(Clone, Debug)]
struct InForce {
    limits: Limits,
    resource: ResourceSettings,
    exporter: ExporterConfig,
}

impl InForce {
    fn read(b: &Backend) -> InForce {
        InForce {
            limits: b.limits(),
            resource: b.resource_settings(),
            exporter: exporter().config(),
        }
    }

    fn put_in_force(self, b: &Backend) {
        b.set_resource_settings(self.resource);
        b.configure(self.limits);
        exporter().configure(self.exporter, Vec::new());
    }
}

/// `Native.load_environment_defaults`: the resource settings from
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, and the exporter's from
/// `OTEL_TRACES_EXPORTER`, `OTEL_SDK_DISABLED` and `OTEL_BSP_*`, read once at
/// load (nothing starts: the exporter's thread waits for the first event).
pub fn load_environment_defaults(b: &Backend) {
    let var = |name: &str| std::env::var(name).ok();
    b.set_resource_settings(ResourceSettings::from_env_values(
        var("OTEL_SERVICE_NAME").as_deref(),
        var("OTEL_RESOURCE_ATTRIBUTES").as_deref(),
    ));
    let (config, warnings) = ExporterConfig::from_env(var);
    exporter().configure(config, warnings.iter().map(ToString::to_string).collect());
}

/// A value shown in an error message: its `inspect`, at most 80
/// characters. An interrupt raised by `inspect` is the error instead.
pub fn shown(ruby: &Ruby, v: RValue) -> Result<String, Error> {
    Ok(errors::inspect(ruby, v)?.chars().take(80).collect())
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
    let bad = || setting_error(ruby, "service_name", SERVICE_NAME_EXPECTED, v);
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

/// Checks an `exporter` value: `:none` or `:otlp` (a Symbol or a String).
fn check_exporter_mode(ruby: &Ruby, v: RValue) -> Result<Mode, Error> {
    let name = match (Symbol::from_value(v), RString::from_value(v)) {
        (Some(s), _) => s.name().ok().map(|n| n.into_owned()),
        (None, Some(s)) => s.to_string().ok(),
        _ => None,
    };
    name.and_then(|n| Mode::parse(&n).ok())
        .ok_or_else(|| setting_error(ruby, "exporter", EXPORTER_EXPECTED, v))
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
    schedule::parse_seconds(setting, seconds)
        .map_err(|_| setting_error(ruby, setting, SECONDS_EXPECTED, v))
}

/// Checks `export_max_batch_size`: an Integer from 1 to 1,000,000.
fn check_batch_size(ruby: &Ruby, v: RValue) -> Result<usize, Error> {
    let setting = "export_max_batch_size";
    let n = integer_setting(ruby, setting, BATCH_SIZE_EXPECTED, v, false)?.unwrap_or(0);
    schedule::parse_max_batch_size(n)
        .map_err(|_| setting_error(ruby, setting, BATCH_SIZE_EXPECTED, v))
}

/// Checks `value` for the setting `name` and writes it into `settings`.
fn check_into(ruby: &Ruby, settings: &mut InForce, name: &str, value: RValue) -> Result<(), Error> {
    let limits = &mut settings.limits;
    let resource = &mut settings.resource;
    let export = &mut settings.exporter;
    match name {
        "max_traces" => {
            let n = integer_setting(ruby, "max_traces", MAX_TRACES_EXPECTED, value, true)?;
            limits.max_traces = checked(ruby, Limits::parse_max_traces(n))?;
        }
        "max_spans_per_trace" => {
            let n = integer_setting(ruby, "max_spans_per_trace", MAX_SPANS_EXPECTED, value, true)?;
            limits.max_spans_per_trace = checked(ruby, Limits::parse_max_spans(n))?;
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
            limits.timestamp_precision = checked(ruby, Limits::parse_precision(n))?;
        }
        "service_name" => resource.service_name = check_service_name(ruby, value)?,
        "resource_attributes" => resource.attributes = check_resource_attributes(ruby, value)?,
        "exporter" => export.mode = check_exporter_mode(ruby, value)?,
        "export_schedule_delay" => {
            export.schedule.delay = check_seconds(ruby, "export_schedule_delay", value)?
        }
        "export_max_batch_size" => export.schedule.max_batch_size = check_batch_size(ruby, value)?,
        "export_timeout" => {
            export.schedule.export_timeout = check_seconds(ruby, "export_timeout", value)?
        }
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

/// `Native.check_setting(:max_traces, 5)`: the value, or ArgumentError naming
/// the setting and what it takes.
fn check_setting(ruby: &Ruby, name: Symbol, value: RValue) -> Result<RValue, Error> {
    let mut scratch = InForce::read(backend());
    check_into(ruby, &mut scratch, &name.name()?, value)?;
    Ok(value)
}

/// `Native.apply_settings({max_traces: 5, ...})`: checks every given setting
/// again, then puts them all in force; the settings not given keep their
/// values. A bad value raises and changes nothing.
fn apply_settings(ruby: &Ruby, given: RHash) -> Result<bool, Error> {
    let mut next = InForce::read(backend());
    given.foreach(|name: Symbol, value: RValue| {
        check_into(ruby, &mut next, &name.name()?, value)?;
        Ok(ForEach::Continue)
    })?;
    guarded(ruby, || {
        next.put_in_force(backend());
        Ok(true)
    })
}

fn optional_count(n: Option<usize>) -> VALUE {
    n.map_or_else(nil, count_to_ruby)
}

/// `Native.settings` → every setting in force, by name.
fn settings(ruby: &Ruby) -> Result<RValue, Error> {
    guarded(ruby, || {
        let InForce {
            limits,
            resource,
            exporter,
        } = InForce::read(backend());
        let attrs = new_attributes_hash(&resource.attributes);
        let mode = match exporter.mode {
            Mode::None => sym(|s| s.none),
            Mode::Otlp => sym(|s| s.otlp),
        };
        let schedule = exporter.schedule;
        let kv = [
            sym(|s| s.max_traces),
            optional_count(limits.max_traces),
            sym(|s| s.max_spans_per_trace),
            optional_count(limits.max_spans_per_trace),
            sym(|s| s.timestamp_precision),
            int_to_ruby(i64::from(limits.timestamp_precision)),
            sym(|s| s.service_name),
            utf8_to_ruby(&resource.service_name),
            sym(|s| s.resource_attributes),
            attrs,
            sym(|s| s.exporter),
            mode,
            sym(|s| s.export_schedule_delay),
            float_to_ruby(schedule.delay.as_secs_f64()),
            sym(|s| s.export_max_batch_size),
            count_to_ruby(schedule.max_batch_size),
            sym(|s| s.export_timeout),
            float_to_ruby(schedule.export_timeout.as_secs_f64()),
        ];
        Ok(wrap(hash_from_pairs(&kv)))
    })
}

/// The resource attributes as a new Hash of String keys. Filled entry by
/// entry: each key and value is on this stack frame until it is stored.
fn new_attributes_hash(attributes: &[(String, Value)]) -> VALUE {
    let hash = new_hash(attributes.len());
    for (k, v) in attributes {
        hash_set(hash, utf8_to_ruby(k), value_to_ruby(v));
    }
    hash
}

pub fn define(native: RModule) -> Result<(), Error> {
    let ruby = Ruby::get_with(native);
    let names = ruby.ary_new_capa(SETTING_NAMES.len());
    for name in SETTING_NAMES {
        names.push(ruby.to_symbol(name))?;
    }
    names.freeze();
    native.const_set("SETTING_NAMES", names)?;
    native.define_module_function("settings", function!(settings, 0))?;
    native.define_module_function("check_setting", function!(check_setting, 2))?;
    native.define_module_function("apply_settings", function!(apply_settings, 1))?;
    Ok(())
}
