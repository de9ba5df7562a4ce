//! The instance methods of the native backend: `handle_event`, `export`,
//! `traces`, `stats` and `reset!`, defined on `TaskerTraceNative::BackendMethods`,
//! which the Ruby layer prepends into `Tasker::Telemetry::TraceBackend`; and
//! the module functions the Ruby layer builds `created_at` from.
//!
//! Each method converts its arguments first, then calls the core (which locks
//! and unlocks inside), then builds Ruby results from copied data.

use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::prelude::*;
use magnus::rb_sys::AsRawValue;
use magnus::{function, method, Error, Integer, RModule, Ruby, Value as RValue};
use rb_sys::{ruby_value_type as T, VALUE};
use tasker_trace_core::input::backend::Event;
use tasker_trace_core::input::backend::{KeySource, Route};
use tasker_trace_core::support::clock::{iso8601, wall_now_ns, Stamp};

use crate::backend;
use crate::convert::{self, NameRefusal, PayloadConverter};
use crate::errors::{self, argument_error, guarded, must_propagate};
use crate::names::sym;
use crate::to_ruby::{
    self, build_protected, count_to_ruby, float_to_ruby, hash_from_pairs, nil, utf8_to_ruby, wrap,
};

/// `TaskerTraceNative.<logger>(event_name, message)` (`log_error`, or
/// `log_lifecycle_error` for the lifecycle tracer). A failure of the logger
/// itself (a StandardError) is absorbed, because the recorders must not
/// raise for it; an interrupt, a kill or a throw that arrives meanwhile
/// propagates.
fn log_failure(ruby: &Ruby, logger: &str, event_name: RValue, message: &str) -> Result<(), Error> {
    let logged = crate::root_module(ruby)
        .and_then(|module| module.funcall::<_, _, RValue>(logger, (event_name, message)));
    match logged {
        Err(e) if must_propagate(ruby, &e) => Err(e),
        _ => Ok(()),
    }
}

/// How a recorder's work ended (`handle_event`, `record_lifecycle_event`).
pub(crate) enum Ingested {
    /// Stored in the core.
    Stored,
    /// Refused for its input: false, quietly.
    Refused,
    /// Failed inside: false, and logged.
    Failed(String),
    /// A non-local exit or an exception that must propagate.
    Raise(Error),
}

impl Ingested {
    /// A Ruby error met while converting: propagated, or a logged failure.
    pub(crate) fn from_error(ruby: &Ruby, e: Error) -> Ingested {
        if must_propagate(ruby, &e) {
            return Ingested::Raise(e);
        }
        match errors::error_message(ruby, &e) {
            Ok(message) => Ingested::Failed(message),
            Err(interrupt) => Ingested::Raise(interrupt),
        }
    }
}

/// The whole of `handle_event` once arguments are known: convert, then store.
fn ingest(ruby: &Ruby, name: VALUE, payload: VALUE) -> Ingested {
    errors::maybe_injected_panic();
    let at = Stamp::now();
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
            Ok(k) => k,
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
    crate::exporter_methods::record(|| backend().ingest(event));
    Ingested::Stored
}

/// `handle_event(event_name, payload = {})` → true or false. Never raises for
/// its input; only non-local exits and non-StandardError exceptions raised by
/// payload objects' own methods propagate.
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

/// What a recorder returns for how its work ended: true when stored; false
/// when refused or failed (counted by `count_refusal`; a failure, a caught
/// panic included, also logged through `TaskerTraceNative.<logger>`); the
/// error itself when it must propagate.
pub(crate) fn recorder_result(
    ruby: &Ruby,
    outcome: std::thread::Result<Ingested>,
    name: RValue,
    logger: &str,
    count_refusal: impl Fn(),
) -> Result<bool, Error> {
    let outcome =
        outcome.unwrap_or_else(|panic| Ingested::Failed(errors::panic_report(panic.as_ref())));
    match outcome {
        Ingested::Stored => Ok(true),
        Ingested::Refused => {
            count_refusal();
            Ok(false)
        }
        Ingested::Failed(message) => {
            count_refusal();
            log_failure(ruby, logger, name, &message)?;
            Ok(false)
        }
        Ingested::Raise(e) => Err(e),
    }
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

/// Nanoseconds since the epoch at which the backend was created.
fn created_at_ns(ruby: &Ruby) -> Result<Integer, Error> {
    guarded(ruby, || {
        Ok(ruby.integer_from_i64(backend().created_at().wall_ns))
    })
}

fn instance_id(ruby: &Ruby) -> Result<RValue, Error> {
    guarded(ruby, || Ok(wrap(utf8_to_ruby(backend().instance_id()))))
}

pub fn define(methods: RModule, native: RModule) -> Result<(), Error> {
    methods.define_method("handle_event", method!(handle_event, -1))?;
    methods.define_method("export", method!(export, 0))?;
    methods.define_method("traces", method!(traces, 0))?;
    methods.define_method("stats", method!(stats, 0))?;
    methods.define_method("reset!", method!(reset, 0))?;
    native.define_module_function("created_at_ns", function!(created_at_ns, 0))?;
    native.define_module_function("instance_id", function!(instance_id, 0))?;
    Ok(())
}
