//! `tasker_trace_native`: the Ruby binding of the native trace backend.
//!
//! This crate only converts between Ruby objects and core values and defines
//! the Ruby methods; the behaviour lives in the `tasker_trace_core` crate.
//! Dependencies run one way, from the top of this list down:
//!
//! - [`ruby_api`]: the methods Ruby sees, one file per Ruby module
//! - [`in_force`]: the settings in force: Ruby's over the environment's,
//!   the environment read at first use
//! - [`from_ruby`]: Ruby payloads, names, keys and settings to core values
//! - [`to_ruby`]: core records and values to new Ruby objects
//! - [`helpers`]: allocator, GVL release, errors and panic guards, static ids
//! - [`process`]: every process-wide singleton and the shared `record` hook

mod from_ruby;
mod helpers;
mod in_force;
mod process;
mod ruby_api;
mod to_ruby;

use magnus::prelude::*;
use magnus::{Error, Ruby};

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    helpers::static_ids::init();
    let root = ruby.define_module("TaskerTraceNative")?;
    let native = root.define_module("Native")?;
    let methods = root.define_module("BackendMethods")?;
    ruby_api::backend_methods::define(methods)?;
    ruby_api::native::define(native)?;
    ruby_api::test_hooks::define(root)?;
    // Create the backend now, so `created_at` is the load time. The OTEL_*
    // variables are read at the first use (see `in_force`), not here.
    process::register_for_fork();
    process::backend().register_for_fork();
    process::otlp_client().register_for_fork();
    process::resource_config().register_for_fork();
    process::lifecycle_tracer().register_for_fork();
    from_ruby::lifecycle_read_plan::init();
    process::exporter().register_for_fork();
    Ok(())
}
