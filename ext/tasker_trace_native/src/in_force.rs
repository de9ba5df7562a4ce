//! The settings in force, and the one rule for where they come from: a
//! setting given in Ruby (`configure`, the Railtie) wins; every other one
//! takes its variable's value, else its default.
//!
//! The environment is read when it is used, not at load: at this process's
//! first export, push, recorded event (which may start the exporter) or
//! flush ([`ensure_environment`]), and again at every `configure` (which the
//! Railtie's setup ends with: [`apply`]). Until the first read,
//! `TaskerTraceNative.config` shows what the environment would give now
//! ([`current`]) without putting it in force or warning. A forked child reads it again
//! at its first use. Warnings about variables go through
//! [`crate::helpers::warnings`].

use magnus::r_hash::ForEach;
use magnus::{Error, RHash, Ruby, Symbol, Value as RValue};
use tasker_trace_core::encode::resource::{
    resource_attributes_warning, ResourceSettings, RESOURCE_ATTRIBUTES_VARIABLE,
    SERVICE_NAME_VARIABLE,
};
use tasker_trace_core::encode::SpanLimits;
use tasker_trace_core::export::console::ConsoleOutput;
use tasker_trace_core::export::BackgroundSettings;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::model::lifecycle::LifecycleLimits;
use tasker_trace_core::model::sampling::Sampling;
use tasker_trace_core::support::env::Warning;
use tasker_trace_core::transport::client::settings_from_environment;
use tasker_trace_core::transport::proxy::ProxyVariables;

use crate::from_ruby::lifecycle_read_plan;
use crate::from_ruby::setting_checks::{
    check_client_pair, check_into, take_from_environment, InForce, SETTING_NAMES,
};
use crate::helpers::errors::guarded;
use crate::helpers::warnings::deliver;
use crate::process::{
    self, backend, exporter, lifecycle_tracer, otlp_client, resource_config, span_limits,
};

impl InForce {
    /// The settings in force, from the singletons.
    pub fn read(b: &Backend) -> InForce {
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
            span_limits: span_limits(),
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
        process::set_span_limits(self.span_limits);
        exporter().configure(self.exporter, Vec::new());
        lifecycle_tracer().set_sampling(self.sampling);
        exporter().set_console_output(
            self.console_output
                .map_or(ConsoleOutput::Stdout, ConsoleOutput::Path),
        );
        lifecycle_tracer().set_opentelemetry_context(self.opentelemetry_context);
    }
}

/// What the environment alone gives, read now: every setting a variable
/// gives (the others at their defaults), the traces URL of
/// `OTEL_EXPORTER_OTLP_*ENDPOINT` (or the default), and a warning for each
/// value that cannot be used.
struct Environment {
    settings: InForce,
    endpoint: String,
    proxy: ProxyVariables,
    warnings: Vec<Warning>,
}

fn read_environment() -> Environment {
    let var = |name: &str| std::env::var(name).ok();
    let resource = ResourceSettings::from_env_values(
        var(SERVICE_NAME_VARIABLE).as_deref(),
        var(RESOURCE_ATTRIBUTES_VARIABLE).as_deref(),
    );
    let (otlp, endpoint, mut warnings) = settings_from_environment(var);
    warnings.extend(resource_attributes_warning(
        var(RESOURCE_ATTRIBUTES_VARIABLE).as_deref(),
    ));
    let (exporter, exporter_warnings) = BackgroundSettings::from_env(var);
    warnings.extend(exporter_warnings);
    let (span_limits, limit_warnings) = SpanLimits::from_env(var);
    warnings.extend(limit_warnings);
    let (sampling, sampler_warnings) = Sampling::from_env(var);
    warnings.extend(sampler_warnings);
    let settings = InForce {
        limits: Default::default(),
        resource,
        otlp,
        lifecycle: LifecycleLimits::default(),
        lifecycle_attributes: Vec::new(),
        attribute_prefix: None,
        workflow_events: false,
        exporter,
        sampling,
        console_output: None,
        span_limits,
        opentelemetry_context: None,
    };
    Environment {
        settings,
        endpoint,
        proxy: ProxyVariables::read(var),
        warnings,
    }
}

/// `base` with every setting not `given` in Ruby taken from `env`.
fn combine(mut base: InForce, given: &[&str], env: &InForce) -> InForce {
    for name in SETTING_NAMES {
        if !given.contains(name) {
            take_from_environment(name, env, &mut base);
        }
    }
    // A `service.name` among the resource_attributes given in Ruby names
    // the service unless service_name is given too (Ruby first, then the
    // environment), as OpenTelemetry's SDKs take a resource's service.name.
    if !given.contains(&"service_name") && given.contains(&"resource_attributes") {
        if let Some(name) = base.resource.service_name_attribute() {
            base.resource.service_name = name;
        }
    }
    // Not a setting: OTEL_SDK_DISABLED alone decides it.
    base.exporter.sdk_disabled = env.exporter.sdk_disabled;
    // Nor is whether the sampler is parent-based: OTEL_TRACES_SAMPLER.
    base.sampling.parent_based = env.sampling.parent_based;
    base
}

fn note(warnings: Vec<Warning>) {
    for w in warnings {
        process::warnings().warn(w.to_string());
    }
}

/// Reads the environment unless this process already has: called by every
/// use (an export, a push, a recorded event, a flush). Costs two atomic
/// loads once read.
#[inline]
pub fn ensure_environment(ruby: &Ruby) -> Result<(), Error> {
    if process::environment_read() {
        return Ok(());
    }
    read_and_put_in_force(ruby)
}

#[cold]
fn read_and_put_in_force(ruby: &Ruby) -> Result<(), Error> {
    let env = read_environment();
    let given = process::given_settings();
    let b = backend();
    let next = combine(InForce::read(b), &given, &env.settings);
    note(env.warnings);
    guarded(ruby, || {
        otlp_client().set_environment_endpoint(env.endpoint);
        otlp_client().set_environment_proxy(env.proxy);
        next.put_in_force(b);
        process::mark_environment_read();
        Ok(())
    })?;
    deliver(ruby)
}

/// The settings as they are, or before this process's first read of the
/// environment, as the environment would make them now. Nothing is put in
/// force and nothing is warned about: the environment may still change
/// (a `.env` file loaded later) before its first use.
pub fn current() -> InForce {
    let b = backend();
    if process::environment_read() {
        return InForce::read(b);
    }
    let env = read_environment();
    combine(InForce::read(b), &process::given_settings(), &env.settings)
}

/// `configure`: checks every setting in `given` (ArgumentError naming the
/// first bad one; then nothing changes), reads the environment again, and
/// puts in force the settings given now and before over what the
/// environment gives for the others.
pub fn apply(ruby: &Ruby, given: RHash) -> Result<(), Error> {
    let b = backend();
    let before = InForce::read(b);
    let mut next = before.clone();
    let mut names = process::given_settings();
    given.foreach(|name: Symbol, value: RValue| {
        let name = name.name()?;
        check_into(ruby, &mut next, &name, value)?;
        if let Some(known) = SETTING_NAMES.iter().find(|n| **n == name) {
            if !names.contains(known) {
                names.push(known);
            }
        }
        Ok(ForEach::Continue)
    })?;
    let env = read_environment();
    let next = combine(next, &names, &env.settings);
    note(env.warnings);
    check_client_pair(ruby, &before.otlp, &next.otlp)?;
    guarded(ruby, || {
        otlp_client().set_environment_endpoint(env.endpoint);
        otlp_client().set_environment_proxy(env.proxy);
        next.put_in_force(b);
        process::set_given_settings(names);
        process::mark_environment_read();
        Ok(())
    })?;
    deliver(ruby)
}
