//! Every process-wide singleton, in one place: the backend's store, the OTLP
//! client, the lifecycle tracer and the background exporter, plus the hook
//! every recording path stores its events through ([`record`]) and the
//! `TaskerTraceNative` module ([`root_module`]).
//!
//! A forked child inherits a copy of each; `lib.rs` registers them for fork
//! at load. Nothing here converts Ruby values: this file depends on the core
//! only.

use std::sync::OnceLock;

use magnus::prelude::*;
use magnus::{Error, RModule, Ruby};
use tasker_trace_core::encode::{Resource, ResourceConfig};
use tasker_trace_core::export::{Exporter, Sources};
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::model::lifecycle::Tracer;
use tasker_trace_core::transport::{Destination, OtlpClient, PushOverrides};

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

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// The process-wide exporter (off until its settings turn it on). It drains
/// the store's traces and the lifecycle tracer's finished runs (see
/// `tasker_trace_core::export::pipeline`).
pub fn exporter() -> &'static Exporter {
    EXPORTER.get_or_init(|| {
        Exporter::new(
            Sources {
                store: backend(),
                runs: Some(lifecycle_tracer()),
            },
            exporter_resource,
            Box::new(exporter_target),
        )
    })
}

/// Stores an event through the exporter: every recording path (handle_event,
/// the lifecycle recorder) calls its core store inside `store`. The exporter
/// starts its thread before this process's first event and counts the event.
#[inline]
pub fn record<R>(store: impl FnOnce() -> R) -> R {
    exporter().record(store)
}

/// Where the exporter's target comes from, in one place: the `otlp_*`
/// settings in force over the `OTEL_EXPORTER_OTLP_*` variables, exactly as
/// `push_otlp` sends without arguments; unusable variables are warnings,
/// shown in `exporter_stats`. Called with the GVL held when a worker starts
/// (the first event in each process).
pub fn exporter_target() -> (Result<Destination, String>, Vec<String>) {
    let client = otlp_client();
    (
        client.target(&PushOverrides::default()),
        client
            .environment_warnings()
            .iter()
            .map(ToString::to_string)
            .collect(),
    )
}

/// The resource of the exporter's requests (called on its thread).
fn exporter_resource() -> Resource {
    resource_for(env!("CARGO_PKG_VERSION").to_string())
}

/// The resource as it is now (pid after any fork), with the gem version
/// given (the background exporter's thread cannot ask Ruby for it). Touches
/// no Ruby.
pub fn resource_for(version: String) -> Resource {
    let s = resource_config().get();
    Resource {
        service_name: s.service_name,
        host_name: backend().instance_id().to_string(),
        pid: std::process::id(),
        version,
        attributes: s.attributes,
    }
}

static SAMPLER_WARNINGS: OnceLock<Vec<String>> = OnceLock::new();

/// What `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` gave that could
/// not be used, as loaded (said once, at load, with the other variables').
pub fn sampler_warnings() -> &'static [String] {
    SAMPLER_WARNINGS.get().map_or(&[], Vec::as_slice)
}

/// Keeps the sampler variables' warnings (the first call wins: once per
/// process).
pub fn set_sampler_warnings(warnings: Vec<String>) {
    let _ = SAMPLER_WARNINGS.set(warnings);
}

/// `TaskerTraceNative`, looked up when needed rather than kept in Rust.
pub fn root_module(ruby: &Ruby) -> Result<RModule, Error> {
    ruby.class_object().const_get("TaskerTraceNative")
}
