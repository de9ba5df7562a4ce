//! The settings from Ruby: `Native.settings`, `Native.check_setting`,
//! `Native.apply_settings`, `Native.setting_warning` and
//! `Native::SETTING_NAMES`, which `TaskerTraceNative::Configuration` (Ruby)
//! is built on.
//!
//! Each value is checked by [`crate::from_ruby::setting_checks`]; where the
//! settings in force come from (Ruby, the environment) is
//! [`crate::in_force`]'s.

use magnus::prelude::*;
use std::time::Duration;

use magnus::{function, Error, RHash, RModule, Ruby, Symbol, Value as RValue};
use rb_sys::VALUE;
use tasker_trace_core::export::settings::Mode;
use tasker_trace_core::transport::Compression;
use tasker_trace_core::value::Value;

use super::lifecycle::read_pending;
use crate::from_ruby::setting_checks::{check_into, InForce, SETTING_NAMES};
use crate::helpers::errors::guarded;
use crate::helpers::static_ids::sym;
use crate::helpers::warnings;
use crate::in_force;
use crate::process::backend;
use crate::to_ruby::values::{
    array_of, bool_to_ruby, count_to_ruby, float_to_ruby, hash_from_pairs, hash_set, int_to_ruby,
    new_hash, nil, utf8_to_ruby, value_to_ruby, wrap,
};

/// `Native.check_setting(:max_traces, 5)`: the value, or ArgumentError naming
/// the setting and what it takes.
fn check_setting(ruby: &Ruby, name: Symbol, value: RValue) -> Result<RValue, Error> {
    let mut scratch = InForce::read(backend());
    check_into(ruby, &mut scratch, &name.name()?, value)?;
    Ok(value)
}

/// `Native.apply_settings({max_traces: 5, ...})`: checks every given setting
/// again, reads the environment again, then puts them all in force over
/// what the environment gives for the others (see [`crate::in_force`]). A
/// bad value raises and changes nothing.
fn apply_settings(ruby: &Ruby, given: RHash) -> Result<bool, Error> {
    read_pending(ruby)?;
    in_force::apply(ruby, given)?;
    Ok(true)
}

fn optional_count(n: Option<usize>) -> VALUE {
    n.map_or_else(nil, count_to_ruby)
}

/// `Native.settings` → every setting in force, by name.
fn settings(ruby: &Ruby) -> Result<RValue, Error> {
    let current = in_force::current();
    guarded(ruby, || {
        let InForce {
            limits,
            resource,
            otlp,
            lifecycle,
            lifecycle_attributes,
            attribute_prefix,
            workflow_events,
            exporter,
            sampling,
            console_output,
            opentelemetry_context,
            span_limits,
        } = current;
        let attrs = new_attributes_hash(&resource.attributes);
        let otlp_headers = new_headers_hash(&otlp.headers);
        let optional_text = |s: &Option<String>| s.as_deref().map_or_else(nil, utf8_to_ruby);
        let allowlist = array_of(lifecycle_attributes.iter(), |n| utf8_to_ruby(n));
        let mode = match exporter.mode {
            Mode::None => sym(|s| s.none),
            Mode::Otlp => sym(|s| s.otlp),
            Mode::Console => sym(|s| s.console),
            Mode::OtlpAndConsole => array_of([sym(|s| s.otlp), sym(|s| s.console)].iter(), |v| *v),
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
            sym(|s| s.otlp_endpoint),
            optional_text(&otlp.endpoint),
            sym(|s| s.otlp_headers),
            otlp_headers,
            sym(|s| s.otlp_protocol),
            utf8_to_ruby(otlp.protocol.name()),
            sym(|s| s.otlp_compression),
            utf8_to_ruby(compression_name(otlp.compression)),
            sym(|s| s.otlp_timeout),
            seconds_to_ruby(otlp.timeout),
            sym(|s| s.otlp_certificate),
            optional_text(&otlp.certificate),
            sym(|s| s.otlp_client_certificate),
            optional_text(&otlp.client_certificate),
            sym(|s| s.otlp_client_key),
            optional_text(&otlp.client_key),
            sym(|s| s.lifecycle_ttl),
            seconds_to_ruby(lifecycle.ttl),
            sym(|s| s.lifecycle_max_open_runs),
            count_to_ruby(lifecycle.max_open_runs),
            sym(|s| s.lifecycle_max_spans_per_run),
            count_to_ruby(lifecycle.max_spans_per_run),
            sym(|s| s.lifecycle_max_finished_runs),
            count_to_ruby(lifecycle.max_finished_runs),
            sym(|s| s.lifecycle_attributes),
            allowlist,
            sym(|s| s.attribute_prefix),
            optional_text(&attribute_prefix),
            sym(|s| s.lifecycle_workflow_events),
            bool_to_ruby(workflow_events),
            sym(|s| s.exporter),
            mode,
            sym(|s| s.export_schedule_delay),
            float_to_ruby(schedule.delay.as_secs_f64()),
            sym(|s| s.export_max_batch_size),
            count_to_ruby(schedule.max_batch_size),
            sym(|s| s.export_timeout),
            float_to_ruby(schedule.export_timeout.as_secs_f64()),
            sym(|s| s.sample_ratio),
            float_to_ruby(sampling.ratio),
            sym(|s| s.sample_keep_errors),
            bool_to_ruby(sampling.keep_errors),
            sym(|s| s.sample_keep_slower_than),
            sampling.keep_slower_than.map_or_else(nil, seconds_to_ruby),
            sym(|s| s.sample_keep_retried),
            bool_to_ruby(sampling.keep_retried),
            sym(|s| s.console_output),
            optional_text(&console_output),
            sym(|s| s.export_max_queue_size),
            count_to_ruby(schedule.max_queue_size),
            sym(|s| s.attribute_value_length_limit),
            optional_count(span_limits.attribute_value_length),
            sym(|s| s.attribute_count_limit),
            count_to_ruby(span_limits.attribute_count),
            sym(|s| s.span_attribute_count_limit),
            optional_count(span_limits.span_attribute_count),
            sym(|s| s.span_event_count_limit),
            count_to_ruby(span_limits.span_event_count),
            sym(|s| s.span_link_count_limit),
            count_to_ruby(span_limits.span_link_count),
            sym(|s| s.event_attribute_count_limit),
            optional_count(span_limits.event_attribute_count),
            sym(|s| s.link_attribute_count_limit),
            optional_count(span_limits.link_attribute_count),
            sym(|s| s.opentelemetry_context),
            opentelemetry_context.map_or_else(|| sym(|s| s.auto), bool_to_ruby),
        ];
        Ok(wrap(hash_from_pairs(&kv)))
    })
}

/// Whole seconds as an Integer, else a Float.
fn seconds_to_ruby(d: Duration) -> VALUE {
    if d.subsec_nanos() == 0 {
        count_to_ruby(d.as_secs())
    } else {
        float_to_ruby(d.as_secs_f64())
    }
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

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::None => "none",
    }
}

/// Headers as a new Hash of String names to String values, filled entry by
/// entry (each key and value is on this stack frame until it is stored).
fn new_headers_hash(headers: &[(String, String)]) -> VALUE {
    let hash = new_hash(headers.len());
    for (k, v) in headers {
        hash_set(hash, utf8_to_ruby(k), utf8_to_ruby(v));
    }
    hash
}

/// `Native.setting_warning(message)`: a warning about a setting, given
/// once per distinct message like the native ones (see
/// [`crate::helpers::warnings`]).
fn setting_warning(ruby: &Ruby, message: String) -> Result<bool, Error> {
    warnings::warn(ruby, &message)?;
    Ok(true)
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
    native.define_module_function("setting_warning", function!(setting_warning, 1))?;
    Ok(())
}
