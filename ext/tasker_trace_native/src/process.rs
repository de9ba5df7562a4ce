//! Every process-wide singleton, in one place: the backend's store, the OTLP
//! client, the lifecycle tracer, the background exporter, the span limits,
//! the warnings about settings, which settings Ruby gave and whether this
//! process has read the environment, plus the hook every recording path
//! stores its events through ([`record`]), the state of the waiting step
//! events ([`pending_state`]), the marks of what Ruby threads hold
//! ([`thread_marks`]) and the `TaskerTraceNative` module
//! ([`root_module`]).
//!
//! A forked child inherits a copy of each; `lib.rs` registers them for fork
//! at load. Nothing here converts Ruby values: this file depends on the core
//! only.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use magnus::prelude::*;
use magnus::{Error, RModule, Ruby};
use tasker_trace_core::encode::limits::DEFAULT_VALUE_LENGTH_LIMIT;
use tasker_trace_core::encode::{Resource, ResourceConfig, SpanLimits};
use tasker_trace_core::export::{Exporter, Sources};
use tasker_trace_core::input::lifecycle::values::MAX_VALUE_BYTES;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::model::lifecycle::Tracer;
use tasker_trace_core::support::fork::{forks, ForkSafeMutex};
use tasker_trace_core::support::warnings::Warnings;
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
/// `push_otlp` sends without arguments. Called with the GVL held when a
/// worker starts (the first event in each process), after the environment
/// was read; its warnings went through [`warnings`] then.
pub fn exporter_target() -> (Result<Destination, String>, Vec<String>) {
    (otlp_client().target(&PushOverrides::default()), Vec::new())
}

static SPAN_LIMITS: ForkSafeMutex<SpanLimits> = ForkSafeMutex::new(SpanLimits::DEFAULT);
/// Bytes of text a lifecycle value keeps when recorded: enough for the
/// value length limit in force (up to 4 bytes a character), at most
/// `MAX_VALUE_BYTES`. Read on every text value, so an atomic.
static LIFECYCLE_TEXT_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_VALUE_LENGTH_LIMIT * 4);

/// The span limits in force (every export's spans are cut to them).
pub fn span_limits() -> SpanLimits {
    *SPAN_LIMITS.lock()
}

/// Puts span limits in force, and the recording bound of lifecycle text
/// that follows from them.
pub fn set_span_limits(limits: SpanLimits) {
    let bytes = limits
        .attribute_value_length
        .map_or(MAX_VALUE_BYTES, |chars| chars.saturating_mul(4))
        .clamp(1, MAX_VALUE_BYTES);
    LIFECYCLE_TEXT_BYTES.store(bytes, Ordering::Relaxed);
    *SPAN_LIMITS.lock() = limits;
}

/// Bytes of text a lifecycle attribute value keeps when recorded.
pub fn lifecycle_text_bytes() -> usize {
    LIFECYCLE_TEXT_BYTES.load(Ordering::Relaxed)
}

static WARNINGS: Warnings = Warnings::new();

/// Every warning about settings and variables goes here (once per distinct
/// message); the binding hands them to Ruby on the calling thread.
pub fn warnings() -> &'static Warnings {
    &WARNINGS
}

/// The settings given in Ruby (`configure`, the Railtie), by name: they win
/// over the environment, which fills in the others.
static GIVEN: ForkSafeMutex<Vec<&'static str>> = ForkSafeMutex::new(Vec::new());

pub fn given_settings() -> Vec<&'static str> {
    GIVEN.lock().clone()
}

pub fn set_given_settings(names: Vec<&'static str>) {
    let old = std::mem::replace(&mut *GIVEN.lock(), names);
    drop(old);
}

/// The fork generation + 1 in which the environment was last read (0:
/// never): each process reads it at its first use.
static ENVIRONMENT_READ_IN: AtomicU64 = AtomicU64::new(0);

/// Whether this process has read the environment.
#[inline]
pub fn environment_read() -> bool {
    ENVIRONMENT_READ_IN.load(Ordering::Acquire) == forks() + 1
}

pub fn mark_environment_read() {
    ENVIRONMENT_READ_IN.store(forks() + 1, Ordering::Release);
}

/// The plain path's waiting events (see [`crate::helpers::pending`]):
/// they live in a Ruby Array that Ruby owns; here only in which fork
/// generation they were put there, and which generation (+ 1; 0: none) is
/// reading them, so that a child neither reads its parent's nor waits for
/// a reader that did not survive the fork.
pub struct PendingState {
    pub pushed_in: AtomicU64,
    pub reading_in: AtomicU64,
    /// Events were put to wait since all were last read.
    pub pushed: AtomicBool,
}

static PENDING: PendingState = PendingState {
    pushed_in: AtomicU64::new(0),
    reading_in: AtomicU64::new(0),
    pushed: AtomicBool::new(false),
};

pub fn pending_state() -> &'static PendingState {
    &PENDING
}

/// Slots in [`ThreadMarks`].
pub const THREAD_MARK_SLOTS: usize = 256;

/// One Ruby thread's marks (see [`crate::helpers::thread_token`]): the
/// thread's token, and the stamp each mark was made with (0: none). One
/// cache line holds a slot.
#[repr(align(32))]
pub struct ThreadMark {
    pub thread: AtomicU64,
    pub span: AtomicU64,
    pub root: AtomicU64,
}

/// What Ruby threads hold that lets their events wait (a thread span, a
/// run's root that needs no check), by thread token, in slots picked by
/// the token's hash: a thread meeting another's slot takes it over (the
/// other's next event is read when it arrives, and marks it again). Read
/// and written with the GVL held. A table and not native thread-locals: an
/// extension's thread-local is a call into the dynamic loader, whose code
/// and tables are cold when an event arrives.
pub struct ThreadMarks {
    pub slots: [ThreadMark; THREAD_MARK_SLOTS],
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_MARK: ThreadMark = ThreadMark {
    thread: AtomicU64::new(0),
    span: AtomicU64::new(0),
    root: AtomicU64::new(0),
};

static THREAD_MARKS: ThreadMarks = ThreadMarks {
    slots: [NO_MARK; THREAD_MARK_SLOTS],
};

pub fn thread_marks() -> &'static ThreadMarks {
    &THREAD_MARKS
}

/// Makes the locks of this file's own statics fork-safe.
pub fn register_for_fork() {
    SPAN_LIMITS.register();
    WARNINGS.register_for_fork();
    GIVEN.register();
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
        span_limits: span_limits(),
    }
}

/// `TaskerTraceNative`, looked up when needed rather than kept in Rust.
pub fn root_module(ruby: &Ruby) -> Result<RModule, Error> {
    ruby.class_object().const_get("TaskerTraceNative")
}
