//! The instance methods of the native backend: `handle_event`, `export`,
//! `traces`, `stats` and `reset!`, defined on `TaskerTraceNative::BackendMethods`,
//! which the Ruby layer prepends into `Tasker::Telemetry::TraceBackend` (the
//! module functions it builds `created_at` from are in
//! [`crate::ruby_api::native::backend`]).
//!
//! Each method converts its arguments first, then calls the core (which locks
//! and unlocks inside), then builds Ruby results from copied data.

use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::prelude::*;
use magnus::rb_sys::AsRawValue;
use magnus::{method, Error, RModule, Ruby, Value as RValue};
use rb_sys::{ruby_value_type as T, VALUE};
use tasker_trace_core::input::backend::Event;
use tasker_trace_core::input::backend::{KeySource, Route};
use tasker_trace_core::support::clock::{iso8601, wall_now_ns, Stamp};

use crate::from_ruby::convert::{self, NameRefusal, PayloadConverter};
use crate::helpers::errors::{self, argument_error, build_protected, guarded};
use crate::helpers::recorder::{recorder_result, Ingested};
use crate::helpers::static_ids::sym;
use crate::in_force;
use crate::process::{self, backend};
use crate::to_ruby::values::{
    self as to_ruby, count_to_ruby, float_to_ruby, hash_from_pairs, nil, utf8_to_ruby, wrap,
};

/// The whole of `handle_event` once arguments are known: convert, then store.
fn ingest(ruby: &Ruby, name: VALUE, payload: VALUE) -> Ingested {
    errors::maybe_injected_panic();
    let at = Stamp::now();
    // The first event may start the exporter: the environment says whether.
    if let Err(e) = in_force::ensure_environment(ruby) {
        return Ingested::from_error(ruby, e);
    }
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    if unsafe { rb_sys::RB_TYPE(payload) } != T::RUBY_T_HASH {
        return Ingested::Refused;
    }
    let mut converter = PayloadConverter::new(ruby);
    let (name, kind) = match converter.event_name(name) {
        Ok(n) => n,
        Err(NameRefusal::NotStringOrSymbol) | Err(NameRefusal::UnmatchableEncoding) => {
            return Ingested::Refused
        }
    };
    let key = match kind {
        Route::Generic => KeySource::Fresh,
        _ => match convert::trace_key(payload) {
            Ok(Some(k)) => k,
            // A Hash or Array id too deep or large to be spelled safely.
            Ok(None) => return Ingested::Refused,
            Err(e) => return Ingested::from_error(ruby, e),
        },
    };
    let packed = match converter.pack_root(payload) {
        Ok(v) => v,
        Err(e) => return Ingested::from_error(ruby, e),
    };
    let event = Event {
        name,
        kind,
        key,
        payload: packed,
        at,
    };
    process::record(|| backend().ingest(event));
    Ingested::Stored
}

/// `handle_event(event_name, payload = {})` → true or false. Never raises for
/// its input; only non-local exits and non-StandardError exceptions raised by
/// payload objects' own methods propagate (the event counted as rejected).
fn handle_event(ruby: &Ruby, _rb_self: RValue, args: &[RValue]) -> Result<bool, Error> {
    let (name, payload) = match args {
        [name] => (*name, None),
        [name, payload] => (*name, Some(*payload)),
        _ => {
            return Err(argument_error(
                ruby,
                format!(
                    "wrong number of arguments (given {}, expected 1..2)",
                    args.len()
                ),
            ))
        }
    };
    let payload = match payload {
        Some(p) => p.as_raw(),
        None => ruby.hash_new().as_raw(),
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| ingest(ruby, name.as_raw(), payload)));
    recorder_result(ruby, outcome, name, "log_error", || backend().reject())
}

/// `export` → `{ traces:, metadata: }`, an independent copy.
fn export(ruby: &Ruby, _rb_self: RValue) -> Result<RValue, Error> {
    guarded(ruby, || {
        let b = backend();
        let snapshot = b.snapshot();
        let precision = snapshot.timestamp_precision;
        let created_at = iso8601(b.created_at().wall_ns, precision);
        let exported_at = iso8601(wall_now_ns(), precision);
        // The snapshot and the timestamps are owned here, outside the
        // protected build, and freed whatever the build does.
        let built = build_protected(ruby, || {
            let traces = to_ruby::traces_to_ruby(&snapshot);
            let metadata = [
                sym(|s| s.backend),
                utf8_to_ruby("trace"),
                sym(|s| s.instance_id),
                utf8_to_ruby(b.instance_id()),
                sym(|s| s.created_at),
                utf8_to_ruby(&created_at),
                sym(|s| s.exported_at),
                utf8_to_ruby(&exported_at),
                sym(|s| s.trace_count),
                count_to_ruby(snapshot.entries.len()),
            ];
            let metadata = hash_from_pairs(&metadata);
            hash_from_pairs(&[sym(|s| s.traces), traces, sym(|s| s.metadata), metadata])
        });
        built.map(wrap)
    })
}

/// `traces` → a copy of `export[:traces]`.
fn traces(ruby: &Ruby, _rb_self: RValue) -> Result<RValue, Error> {
    guarded(ruby, || {
        let snapshot = backend().snapshot();
        build_protected(ruby, || to_ruby::traces_to_ruby(&snapshot)).map(wrap)
    })
}

/// `stats` → sizes, uptime and counters.
fn stats(ruby: &Ruby, _rb_self: RValue) -> Result<RValue, Error> {
    guarded(ruby, || {
        let b = backend();
        let s = b.stats();
        let uptime = (wall_now_ns() - b.created_at().wall_ns) as f64 / 1e9;
        // Built on the stack, inserted in one call into a table sized for it.
        let kv = [
            sym(|s| s.active_traces),
            count_to_ruby(s.active_traces),
            sym(|s| s.backend_uptime),
            float_to_ruby(uptime),
            sym(|s| s.instance_id),
            utf8_to_ruby(b.instance_id()),
            sym(|s| s.events_handled),
            count_to_ruby(s.events_handled),
            sym(|s| s.rejected_events),
            count_to_ruby(s.rejected_events),
            sym(|s| s.orphaned_events),
            count_to_ruby(s.orphaned_events),
            sym(|s| s.evicted_traces),
            count_to_ruby(s.evicted_traces),
            sym(|s| s.dropped_spans),
            count_to_ruby(s.dropped_spans),
            sym(|s| s.max_traces),
            s.max_traces.map_or_else(nil, count_to_ruby),
        ];
        Ok(wrap(hash_from_pairs(&kv)))
    })
}

/// `reset!`: removes every trace and zeroes the counters.
fn reset(ruby: &Ruby, _rb_self: RValue) -> Result<RValue, Error> {
    guarded(ruby, || {
        backend().reset();
        Ok(wrap(nil()))
    })
}

pub fn define(methods: RModule) -> Result<(), Error> {
    methods.define_method("handle_event", method!(handle_event, -1))?;
    methods.define_method("export", method!(export, 0))?;
    methods.define_method("traces", method!(traces, 0))?;
    methods.define_method("stats", method!(stats, 0))?;
    methods.define_method("reset!", method!(reset, 0))?;
    Ok(())
}
