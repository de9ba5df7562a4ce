//! `tasker_trace_native`: the Ruby binding of the native trace backend.
//!
//! This crate only converts between Ruby objects and core values and defines
//! the Ruby methods; the behaviour lives in the `tasker_trace_core` crate.
//!
//! - [`allocator`]: the global allocator (GC accounting, live bytes)
//! - [`backend_methods`]: `handle_event`, `export`, `traces`, `stats`, `reset!`
//! - [`otlp_methods`]: `export_otlp` and `push_otlp`, with their arguments
//! - [`lifecycle_methods`]: the lifecycle tracer: `record_lifecycle_event`,
//!   `lifecycle_stats`, `lifecycle_runs`, the filter decisions
//! - [`lifecycle_convert`]: a published event's payload to a core event
//! - [`lifecycle_plan`]: which payload keys events read, and their filtering
//! - [`lifecycle_to_ruby`]: lifecycle runs and stats to new Ruby objects
//! - [`exporter_methods`]: the background exporter: flush, shutdown, stats,
//!   the hook recording paths store through, where its target comes from
//! - [`settings`]: every setting: its check, its name, how it is put in force
//! - [`convert`]: Ruby payloads, names and keys to core values
//! - [`to_ruby`]: core records and values to new Ruby objects
//! - [`gvl`]: running Rust with the GVL released
//! - [`names`]: interned Symbols and encoding indexes
//! - [`errors`]: `TaskerTraceNative::Error`, panic guards, what propagates
//! - [`test_hooks`]: hooks for the test suite and benchmarks, defined only on request

mod allocator;
mod backend_methods;
mod convert;
mod errors;
mod exporter_methods;
mod gvl;
mod lifecycle_convert;
mod lifecycle_methods;
mod lifecycle_plan;
mod lifecycle_to_ruby;
mod names;
mod otlp_methods;
mod settings;
mod test_hooks;
mod to_ruby;

use std::sync::OnceLock;

use magnus::prelude::*;
use magnus::{Error, RModule, Ruby};
use tasker_trace_core::encode::ResourceConfig;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::model::lifecycle::Tracer;
use tasker_trace_core::transport::OtlpClient;

static BACKEND: OnceLock<Backend> = OnceLock::new();

/// The process-wide backend. A forked child inherits a copy of it.
pub fn backend() -> &'static Backend {
    BACKEND.get_or_init(|| {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Backend::new(host)
    })
}

static OTLP_CLIENT: OtlpClient = OtlpClient::new();

/// The process-wide OTLP client: the `otlp_*` settings in force and the
/// transport built from them.
pub fn otlp_client() -> &'static OtlpClient {
    &OTLP_CLIENT
}

static RESOURCE: OnceLock<ResourceConfig> = OnceLock::new();

/// The process-wide resource settings (`service_name`,
/// `resource_attributes`) that every OTLP request carries.
pub fn resource_config() -> &'static ResourceConfig {
    RESOURCE.get_or_init(ResourceConfig::default)
}

static TRACER: OnceLock<Tracer> = OnceLock::new();

/// The process-wide lifecycle tracer (Tasker's published events as one
/// trace per task run). A forked child inherits a copy of it.
pub fn lifecycle_tracer() -> &'static Tracer {
    TRACER.get_or_init(Tracer::default)
}

/// `TaskerTraceNative`, looked up when needed rather than kept in Rust.
pub fn root_module(ruby: &Ruby) -> Result<RModule, Error> {
    ruby.class_object().const_get("TaskerTraceNative")
}

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    names::init();
    let root = ruby.define_module("TaskerTraceNative")?;
    let native = root.define_module("Native")?;
    let methods = root.define_module("BackendMethods")?;
    errors::define(ruby, root)?;
    backend_methods::define(methods, native)?;
    otlp_methods::define(native)?;
    lifecycle_methods::define(native)?;
    exporter_methods::define(native)?;
    settings::define(native)?;
    test_hooks::define(root)?;
    // Create the backend now, so `created_at` is the load time, and read the
    // OTEL_* variables now.
    backend().register_for_fork();
    otlp_client().register_for_fork();
    resource_config().register_for_fork();
    lifecycle_tracer().register_for_fork();
    lifecycle_plan::init();
    exporter_methods::exporter().register_for_fork();
    settings::load_environment_defaults();
    Ok(())
}
