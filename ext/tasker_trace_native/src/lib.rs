//! `tasker_trace_native`: the Ruby binding of the native trace backend.
//!
//! This crate only converts between Ruby objects and core values and defines
//! the Ruby methods; the behaviour lives in the `tasker_trace_core` crate.
//!
//! - [`backend_methods`]: `handle_event`, `export`, `traces`, `stats`, `reset!`
//! - [`otlp_methods`]: `export_otlp` and `push_otlp`, with their arguments
//! - [`exporter_methods`]: the background exporter: flush, shutdown, stats,
//!   the hook recording paths store through, where its target comes from
//! - [`settings`]: every setting: its check, its name, how it is put in force
//! - [`convert`]: Ruby payloads, names and keys to core values
//! - [`to_ruby`]: core records and values to new Ruby objects
//! - [`gvl`]: running Rust with the GVL released
//! - [`names`]: interned Symbols and encoding indexes
//! - [`errors`]: `TaskerTraceNative::Error`, panic guards, what propagates
//! - [`test_hooks`]: hooks for the test suite and benchmarks, defined only on request

mod backend_methods;
mod convert;
mod errors;
mod exporter_methods;
mod gvl;
mod names;
mod otlp_methods;
mod settings;
mod test_hooks;
mod to_ruby;

use std::sync::OnceLock;

use magnus::prelude::*;
use magnus::{Error, RModule, Ruby};
use tasker_trace_core::Backend;

// Every byte this library allocates or frees is reported to Ruby's GC
// (`rb_gc_adjust_memory_usage`), so a growing store triggers GC the way Ruby's
// own malloc'd memory does. The report is a pair of atomic counter updates,
// safe from any thread.
rb_sys::set_global_tracking_allocator!();

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
    exporter_methods::define(native)?;
    settings::define(native)?;
    test_hooks::define(root)?;
    // Create the backend now, so `created_at` is the load time, and read the
    // OTEL_* resource variables now.
    backend().register_for_fork();
    exporter_methods::exporter().register_for_fork();
    settings::load_environment_defaults(backend());
    Ok(())
}
