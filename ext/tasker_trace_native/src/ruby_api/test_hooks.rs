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
//!   not freed, for leak checks;
//! - `TestHooks.seed_lifecycle_ids(seed)`, `TestHooks.advance_announcer_clock(s)`,
//!   `TestHooks.record_lifecycle_event_at(name, payload, wall_ns, mono_ns)`:
//!   deterministic ids, the announcer's fake clock, events at given times.
//! - `TestHooks.count_lock_waits(on)` and `TestHooks.lock_waits`: count, on
//!   the lifecycle tracer's and the store's locks, the acquisitions by app
//!   threads that found the lock held (`*_app_waits`) and the acquisitions
//!   by the gem's own threads, the exporter's among them (`*_native_locks`);
//!   cumulative, for the spec that the app never waits on the exporter.
//! - `TestHooks.expire_lifecycle_runs_in(seconds)`: expires the open runs
//!   as an export would that many seconds from now, without reading the
//!   events waiting in `Lifecycle::PENDING` first (the exporter's thread
//!   cannot); returns how many expired.
//! - `TestHooks.waiting_events(pending)`: how many events wait in
//!   `pending` (`Lifecycle::PENDING`, whose layout is the extension's).

use magnus::prelude::*;
use magnus::rb_sys::AsRawValue;
use magnus::{function, Error, RModule, Ruby, Value as RValue};
use rb_sys::ruby_value_type as T;

use std::time::Duration;

use tasker_trace_core::support::clock::Stamp;
use tasker_trace_core::support::fork::count_lock_waits;

use crate::from_ruby::lifecycle_read_plan;
use crate::helpers::static_ids::sym;
use crate::helpers::{allocator, errors, pending};
use crate::process::{backend, exporter, lifecycle_tracer};
use crate::ruby_api::native::lifecycle;
use crate::to_ruby::values::{count_to_ruby, hash_from_pairs, wrap};

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

/// `TestHooks.seed_lifecycle_ids(seed)`: the tracer's trace and span ids
/// follow from `seed` (two processes with one seed make the same ids, hence
/// the same sampling decisions).
fn seed_lifecycle_ids(seed: u64) -> bool {
    lifecycle_tracer().seed_ids(seed);
    true
}

/// `TestHooks.advance_announcer_clock(seconds)`: moves the drop
/// announcer's clock forward (a fake clock for its once-a-minute rule).
fn advance_announcer_clock(seconds: f64) -> bool {
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) => {
            exporter().announcer().advance_clock(d);
            true
        }
        Err(_) => false,
    }
}

/// `TestHooks.record_lifecycle_event_at(name, payload, wall_ns, mono_ns)`:
/// `record_lifecycle_event` at a given clock reading (a recorded stream
/// replayed at its recorded times).
fn record_lifecycle_event_at(
    ruby: &Ruby,
    name: RValue,
    payload: RValue,
    wall_ns: i64,
    mono_ns: u64,
) -> Result<bool, Error> {
    lifecycle::record_lifecycle_event_at(ruby, name, payload, Stamp { wall_ns, mono_ns })
}

fn set_lock_counting(on: bool) -> bool {
    count_lock_waits(on);
    on
}

/// `{tracer_app_waits:, tracer_native_locks:, store_app_waits:,
/// store_native_locks:}`.
fn lock_waits() -> RValue {
    let (t, s) = (lifecycle_tracer().lock_waits(), backend().lock_waits());
    let kv = [
        sym(|s| s.tracer_app_waits),
        count_to_ruby(t.app_waits),
        sym(|s| s.tracer_native_locks),
        count_to_ruby(t.native_locks),
        sym(|s| s.store_app_waits),
        count_to_ruby(s.app_waits),
        sym(|s| s.store_native_locks),
        count_to_ruby(s.native_locks),
    ];
    wrap(hash_from_pairs(&kv))
}

/// `TestHooks.expire_lifecycle_runs_in(seconds)` → how many open runs an
/// export `seconds` from now would expire, expired now.
fn expire_lifecycle_runs_in(seconds: f64) -> usize {
    let ahead = Duration::try_from_secs_f64(seconds).unwrap_or_default();
    let later = Stamp::now()
        .mono_ns
        .saturating_add(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX));
    lifecycle_tracer().expire_at(Stamp::at_mono(later))
}

/// `TestHooks.read_plans_made` → how many read plans the process has made
/// (one per distinct set of settings and filters).
fn read_plans_made() -> usize {
    lifecycle_read_plan::plans_made()
}

pub fn define(root: RModule) -> Result<(), Error> {
    if std::env::var(ENABLE_VARIABLE).as_deref() != Ok("1") {
        return Ok(());
    }
    let hooks = root.define_module("TestHooks")?;
    hooks.define_module_function("noop", function!(noop, -1))?;
    hooks.define_module_function("panic_next_call!", function!(panic_next_call, 0))?;
    hooks.define_module_function("native_live_bytes", function!(native_live_bytes, 0))?;
    hooks.define_module_function("seed_lifecycle_ids", function!(seed_lifecycle_ids, 1))?;
    hooks.define_module_function(
        "advance_announcer_clock",
        function!(advance_announcer_clock, 1),
    )?;
    hooks.define_module_function(
        "record_lifecycle_event_at",
        function!(record_lifecycle_event_at, 4),
    )?;
    hooks.define_module_function("count_lock_waits", function!(set_lock_counting, 1))?;
    hooks.define_module_function("lock_waits", function!(lock_waits, 0))?;
    hooks.define_module_function("read_plans_made", function!(read_plans_made, 0))?;
    hooks.define_module_function(
        "expire_lifecycle_runs_in",
        function!(expire_lifecycle_runs_in, 1),
    )?;
    hooks.define_module_function("waiting_events", function!(waiting_events, 1))?;
    Ok(())
}

/// `TestHooks.waiting_events(pending)` → how many events wait in `pending`
/// (0 for anything but an Array).
fn waiting_events(pending: RValue) -> i64 {
    let raw = pending.as_raw();
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    if unsafe { rb_sys::RB_TYPE(raw) } != T::RUBY_T_ARRAY {
        return 0;
    }
    pending::waiting(raw)
}
