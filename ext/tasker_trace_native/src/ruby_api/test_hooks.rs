//! Hooks for the test suite and the benchmarks, kept out of what a user sees:
//! `TaskerTraceNative::TestHooks` is defined only when the process was started
//! with `TASKER_TRACE_NATIVE_TEST_HOOKS=1` (the specs, `bin/bench` and
//! `bin/valgrind-check` set it).
//!
//! - `TestHooks.panic_next_call!`: the next guarded native call panics inside
//!   Rust (how the specs show that a panic never crosses into Ruby);
//! - `TestHooks.noop(name, payload)`: a native method that takes
//!   `handle_event`'s arguments and does nothing, the floor no binding can
//!   beat, for benchmarks;
//! - `TestHooks.native_live_bytes`: the bytes this library has allocated and
//!   not freed, for leak checks.

use magnus::prelude::*;
use magnus::{function, Error, RModule, Ruby, Value as RValue};

use crate::helpers::{allocator, errors};

/// The variable that makes the hooks exist.
pub const ENABLE_VARIABLE: &str = "TASKER_TRACE_NATIVE_TEST_HOOKS";

fn noop(_ruby: &Ruby, args: &[RValue]) -> bool {
    !args.is_empty()
}

fn panic_next_call() -> bool {
    errors::arm_test_panic();
    true
}

fn native_live_bytes() -> i64 {
    allocator::live_bytes() as i64
}

pub fn define(root: RModule) -> Result<(), Error> {
    if std::env::var(ENABLE_VARIABLE).as_deref() != Ok("1") {
        return Ok(());
    }
    let hooks = root.define_module("TestHooks")?;
    hooks.define_module_function("noop", function!(noop, -1))?;
    hooks.define_module_function("panic_next_call!", function!(panic_next_call, 0))?;
    hooks.define_module_function("native_live_bytes", function!(native_live_bytes, 0))?;
    Ok(())
}
