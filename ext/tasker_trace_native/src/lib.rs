//! `tasker_trace_native`: the Ruby binding of the native trace backend.
//!
//! This crate only converts between Ruby objects and core values and defines
//! the Ruby methods; the behaviour lives in the `tasker_trace_core` crate.
//!
//! - [`backend_methods`]: the Ruby methods and the process-wide backend
//! - [`convert`]: Ruby payloads, names and keys to core values
//! - [`to_ruby`]: core records and values to new Ruby objects
//! - [`names`]: interned Symbols and encoding indexes
//! - [`otlp_methods`]: OTLP export and push, resource settings
//! - [`errors`]: `TaskerTraceNative::Error` and panic guards

mod backend_methods;
mod convert;
mod errors;
mod names;
mod otlp_methods;
mod to_ruby;

use magnus::{Error, Ruby};

// Every byte this library allocates or frees is reported to Ruby's GC
// (`rb_gc_adjust_memory_usage`), so a growing store triggers GC the way Ruby's
// own malloc'd memory does. The report is a pair of atomic counter updates,
// safe from any thread.
rb_sys::set_global_tracking_allocator!();

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    names::init();
    let module = ruby.define_module("TaskerTraceNative")?;
    errors::define(ruby, module)?;
    backend_methods::define(ruby, module)?;
    otlp_methods::define(ruby, module)?;
    // Create the backend now, so `created_at` is the load time.
    let _ = backend_methods::backend();
    Ok(())
}
