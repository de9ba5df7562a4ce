//! The settings from Ruby: `Native.settings`, `Native.check_setting`,
//! `Native.apply_settings`, `Native.environment_warnings` and
//! `Native::SETTING_NAMES`, which `TaskerTraceNative::Configuration` (Ruby)
//! is built on; how the settings in force are read from the singletons and
//! put in force; and the defaults read from the environment at load.
//!
//! Each value is checked by [`crate::from_ruby::setting_checks`].

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use std::time::Duration;

use magnus::{function, Error, RArray, RHash, RModule, Ruby, Symbol, Value as RValue};
use rb_sys::VALUE;
use tasker_trace_core::encode::resource::{
    resource_attributes_warning, ResourceSettings, RESOURCE_ATTRIBUTES_VARIABLE,
    SERVICE_NAME_VARIABLE,
};
use tasker_trace_core::export::console::ConsoleOutput;
use tasker_trace_core::export::settings::Mode;
use tasker_trace_core::export::BackgroundSettings;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::model::sampling::Sampling;
use tasker_trace_core::transport::Compression;
use tasker_trace_core::value::Value;

use crate::from_ruby::lifecycle_read_plan;
use crate::from_ruby::setting_checks::{check_client_pair, check_into, InForce, SETTING_NAMES};
use crate::helpers::errors::guarded;
use crate::helpers::static_ids::sym;
use crate::process::{
    backend, exporter, lifecycle_tracer, otlp_client, resource_config, sampler_warnings,
    set_sampler_warnings,
};
use crate::to_ruby::values::{
    array_of, bool_to_ruby, count_to_ruby, float_to_ruby, hash_from_pairs, hash_set, int_to_ruby,
    new_hash, nil, utf8_to_ruby, value_to_ruby, wrap,
};

impl InForce {
    fn read(b: &Backend) -> InForce {
        InForce {
            limits: b.limits(),
            resource: resource_config().get(),
            otlp: otlp_client().settings(),
            lifecycle: lifecycle_tracer().limits(),
            lifecycle_attributes: lifecycle_read_plan::allowlist(),
            attribute_prefix: lifecycle_tracer()
                .configured_prefix()
                .map(|p| p.to_string()),
            workflow_events: lifecycle_tracer().workflow_events(),
            exporter: exporter().config(),
            sampling: lifecycle_tracer().sampling(),
            console_output: match exporter().console_output() {
                ConsoleOutput::Stdout => None,
                ConsoleOutput::Path(p) => Some(p),
            },
            opentelemetry_context: lifecycle_tracer().opentelemetry_context(),
        }
    }

    fn put_in_force(self, b: &Backend) {
        resource_config().set(self.resource);
        otlp_client().set_settings(self.otlp);
        b.configure(self.limits);
        lifecycle_tracer().configure(self.lifecycle);
        lifecycle_read_plan::set_allowlist(self.lifecycle_attributes);
        lifecycle_tracer().set_attribute_prefix(self.attribute_prefix.as_deref(), None);
        lifecycle_tracer().set_workflow_events(self.workflow_events);
        exporter().configure(self.exporter, Vec::new());
        lifecycle_tracer().set_sampling(self.sampling);
        exporter().set_console_output(
            self.console_output
                .map_or(ConsoleOutput::Stdout, ConsoleOutput::Path),
        );
        lifecycle_tracer().set_opentelemetry_context(self.opentelemetry_context);
    }
}

/// The defaults from the environment, read once at load: the resource
/// settings from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, the
/// `otlp_*` settings from the `OTEL_EXPORTER_OTLP_*` variables (what cannot
/// be used is kept as a warning, see `environment_warnings`), and the
/// background exporter's from `OTEL_TRACES_EXPORTER`, `OTEL_SDK_DISABLED` and
/// `OTEL_BSP_*` (nothing starts: its thread waits for the first event).
pub fn load_environment_defaults() {
    let var = |name: &str| std::env::var(name).ok();
    resource_config().set(ResourceSettings::from_env_values(
        var(SERVICE_NAME_VARIABLE).as_deref(),
        var(RESOURCE_ATTRIBUTES_VARIABLE).as_deref(),
    ));
    let resource_warning =
        resource_attributes_warning(var(RESOURCE_ATTRIBUTES_VARIABLE).as_deref());
    otlp_client().load_environment(var, resource_warning);
    let (config, mut warnings) = BackgroundSettings::from_env(var);
    let (sampling, sampler_warnings) = Sampling::from_env(var);
    lifecycle_tracer().set_sampling(sampling);
    set_sampler_warnings(sampler_warnings.iter().map(ToString::to_string).collect());
    warnings.extend(sampler_warnings);
    exporter().configure(config, warnings.iter().map(ToString::to_string).collect());
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
    let before = InForce::read(backend());
    let mut next = before.clone();
    given.foreach(|name: Symbol, value: RValue| {
        check_into(ruby, &mut next, &name.name()?, value)?;
        Ok(ForEach::Continue)
    })?;
    check_client_pair(ruby, &before.otlp, &next.otlp)?;
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
            otlp,
            lifecycle,
            lifecycle_attributes,
            attribute_prefix,
            workflow_events,
            exporter,
            sampling,
            console_output,
            opentelemetry_context,
        } = InForce::read(backend());
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

/// `Native.environment_warnings` → the OTEL_* values that could not be
/// used when the gem loaded (each ignored), as messages naming the variable.
fn environment_warnings(ruby: &Ruby) -> Result<RArray, Error> {
    let warnings = guarded(ruby, || Ok(otlp_client().environment_warnings()))?;
    let list = ruby.ary_new_capa(warnings.len());
    for w in &warnings {
        list.push(ruby.str_new(&w.to_string()))?;
    }
    for w in sampler_warnings() {
        list.push(ruby.str_new(w))?;
    }
    Ok(list)
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
    native.define_module_function("environment_warnings", function!(environment_warnings, 0))?;
    Ok(())
}
