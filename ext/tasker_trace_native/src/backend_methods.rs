//! The Ruby methods of the native backend.
//!
//! `TaskerTraceNative::BackendMethods` holds the instance methods that are
//! prepended into `Tasker::Telemetry::TraceBackend`; `TaskerTraceNative::Native`
//! holds module functions the Ruby layer uses (configuration, clock, test hooks).
//! Each method converts its arguments first, then calls the core (which locks
//! and unlocks inside), then builds Ruby results from copied data.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use magnus::prelude::*;
use magnus::rb_sys::{AsRawValue, FromRawValue};
use magnus::{function, method, Error, Integer, RModule, Ruby, Symbol, Value as RValue};
use rb_sys::{ruby_value_type as T, VALUE};
use tasker_trace_core::clock::{iso8601, wall_now_ns, Stamp};
use tasker_trace_core::config::{
    Limits, SettingError, MAX_SPANS_EXPECTED, MAX_TRACES_EXPECTED, PRECISION_EXPECTED,
};
use tasker_trace_core::{Backend, Event, EventKind, KeySource};

use crate::convert::{self, NameRefusal, PayloadConverter};
use crate::errors::{self, argument_error, guarded, must_propagate};
use crate::names::sym;
use crate::to_ruby::{self, float_to_ruby, hash_set, int_to_ruby, new_hash, nil, utf8_to_ruby};

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

fn rvalue(v: VALUE) -> RValue {
    // SAFETY: `v` is a live VALUE produced on this thread during this call.
    unsafe { RValue::from_raw(v) }
}

/// `TaskerTraceNative.log_error(event_name, message)`, best effort: a failure
/// to log is ignored, because handle_event must not raise.
fn log_error(ruby: &Ruby, event_name: RValue, message: &str) {
    let Ok(module) = ruby
        .class_object()
        .const_get::<_, RModule>("TaskerTraceNative")
    else {
        return;
    };
    let _ = module.funcall::<_, _, RValue>("log_error", (event_name, message));
}

enum Refused {
    /// Refused for its input: returns false quietly.
    Input,
    /// Failed inside: returns false and is logged.
    Internal(String),
}

/// The whole of `handle_event` once arguments are known: convert, then store.
fn ingest(ruby: &Ruby, name: VALUE, payload: VALUE) -> Result<Result<(), Refused>, Error> {
    errors::maybe_injected_panic();
    let at = Stamp::now();
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    if unsafe { rb_sys::RB_TYPE(payload) } != T::RUBY_T_HASH {
        return Ok(Err(Refused::Input));
    }
    let mut converter = PayloadConverter::new(ruby);
    let (name, kind) = match converter.event_name(name) {
        Ok(n) => n,
        Err(NameRefusal::NotStringOrSymbol) | Err(NameRefusal::UnmatchableEncoding) => {
            return Ok(Err(Refused::Input))
        }
    };
    let key = match kind {
        EventKind::Generic => KeySource::Fresh,
        _ => match convert::trace_key(ruby, payload) {
            Ok(k) => k,
            Err(e) if must_propagate(ruby, &e) => return Err(e),
            Err(e) => return Ok(Err(Refused::Internal(errors::error_message(&e)))),
        },
    };
    let packed = match converter.pack_root(payload) {
        Ok(v) => v,
        Err(e) if must_propagate(ruby, &e) => return Err(e),
        Err(e) => return Ok(Err(Refused::Internal(errors::error_message(&e)))),
    };
    backend().ingest(Event {
        name,
        kind,
        key,
        payload: packed,
        at,
    });
    Ok(Ok(()))
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
    match outcome {
        Ok(Ok(Ok(()))) => Ok(true),
        Ok(Ok(Err(Refused::Input))) => {
            backend().reject();
            Ok(false)
        }
        Ok(Ok(Err(Refused::Internal(message)))) => {
            backend().reject();
            log_error(ruby, name, &message);
            Ok(false)
        }
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            backend().reject();
            let message = errors::panic_report(panic.as_ref());
            log_error(ruby, name, &message);
            Ok(false)
        }
    }
}

/// `export` → `{ traces:, metadata: }`, an independent copy.
fn export(ruby: &Ruby, _rb_self: RValue) -> Result<RValue, Error> {
    guarded(ruby, || {
        let b = backend();
        let snapshot = b.snapshot();
        let exported_at = wall_now_ns();
        let precision = snapshot.timestamp_precision;
        let traces = to_ruby::traces_to_ruby(&snapshot);
        let result = new_hash(2);
        hash_set(result, sym(|s| s.traces), traces);
        let meta = new_hash(5);
        hash_set(result, sym(|s| s.metadata), meta);
        hash_set(meta, sym(|s| s.backend), utf8_to_ruby("trace"));
        hash_set(meta, sym(|s| s.instance_id), utf8_to_ruby(b.instance_id()));
        hash_set(
            meta,
            sym(|s| s.created_at),
            utf8_to_ruby(&iso8601(b.created_at().wall_ns, precision)),
        );
        hash_set(
            meta,
            sym(|s| s.exported_at),
            utf8_to_ruby(&iso8601(exported_at, precision)),
        );
        hash_set(
            meta,
            sym(|s| s.trace_count),
            int_to_ruby(snapshot.entries.len() as i64),
        );
        Ok(rvalue(result))
    })
}

/// `traces` → a copy of `export[:traces]`.
fn traces(ruby: &Ruby, _rb_self: RValue) -> Result<RValue, Error> {
    guarded(ruby, || {
        let snapshot = backend().snapshot();
        Ok(rvalue(to_ruby::traces_to_ruby(&snapshot)))
    })
}

fn optional_count(n: Option<usize>) -> VALUE {
    match n {
        Some(n) => int_to_ruby(i64::try_from(n).unwrap_or(i64::MAX)),
        None => nil(),
    }
}

/// `stats` → sizes, uptime and counters.
fn stats(ruby: &Ruby, _rb_self: RValue) -> Result<RValue, Error> {
    guarded(ruby, || {
        let b = backend();
        let s = b.stats();
        let uptime = (wall_now_ns() - b.created_at().wall_ns) as f64 / 1e9;
        let count = |n: u64| int_to_ruby(i64::try_from(n).unwrap_or(i64::MAX));
        // Built on the stack, inserted in one call into a table sized for it.
        let kv = [
            sym(|s| s.active_traces),
            count(s.active_traces as u64),
            sym(|s| s.backend_uptime),
            float_to_ruby(uptime),
            sym(|s| s.instance_id),
            utf8_to_ruby(b.instance_id()),
            sym(|s| s.events_handled),
            count(s.events_handled),
            sym(|s| s.rejected_events),
            count(s.rejected_events),
            sym(|s| s.orphaned_events),
            count(s.orphaned_events),
            sym(|s| s.evicted_traces),
            count(s.evicted_traces),
            sym(|s| s.dropped_spans),
            count(s.dropped_spans),
            sym(|s| s.max_traces),
            optional_count(s.max_traces),
        ];
        Ok(rvalue(to_ruby::hash_from_pairs(&kv)))
    })
}

/// `reset!`: removes every trace and zeroes the counters.
fn reset(ruby: &Ruby, _rb_self: RValue) -> Result<RValue, Error> {
    guarded(ruby, || {
        backend().reset();
        Ok(rvalue(nil()))
    })
}

/// Nanoseconds since the epoch at which the backend was created.
fn created_at_ns(ruby: &Ruby) -> Result<Integer, Error> {
    guarded(ruby, || {
        Ok(ruby.integer_from_i64(backend().created_at().wall_ns))
    })
}

fn instance_id(ruby: &Ruby) -> Result<RValue, Error> {
    guarded(ruby, || Ok(rvalue(utf8_to_ruby(backend().instance_id()))))
}

/// The limits in force as `{max_traces:, max_spans_per_trace:, timestamp_precision:}`.
fn limits(ruby: &Ruby) -> Result<RValue, Error> {
    guarded(ruby, || {
        let l = backend().limits();
        let h = new_hash(3);
        hash_set(h, sym(|s| s.max_traces), optional_count(l.max_traces));
        hash_set(
            h,
            sym(|s| s.max_spans_per_trace),
            optional_count(l.max_spans_per_trace),
        );
        hash_set(
            h,
            sym(|s| s.timestamp_precision),
            int_to_ruby(i64::from(l.timestamp_precision)),
        );
        Ok(rvalue(h))
    })
}

/// An Integer setting as a wide number (huge Integers saturate), or the error
/// that names the setting when the value is not an Integer at all.
fn integer_setting(
    ruby: &Ruby,
    setting: &'static str,
    expected: &'static str,
    v: RValue,
    nil_allowed: bool,
) -> Result<Option<i128>, Error> {
    if v.is_nil() && nil_allowed {
        return Ok(None);
    }
    match Integer::from_value(v) {
        Some(i) => Ok(Some(i.to_i128().unwrap_or_else(|_| {
            if i.funcall::<_, _, bool>("negative?", ()).unwrap_or(false) {
                i128::MIN
            } else {
                i128::MAX
            }
        }))),
        None => {
            let shown = v.inspect().chars().take(80).collect::<String>();
            Err(argument_error(
                ruby,
                SettingError {
                    setting,
                    expected,
                    got: shown,
                }
                .to_string(),
            ))
        }
    }
}

fn setting_error(ruby: &Ruby, e: SettingError) -> Error {
    argument_error(ruby, e.to_string())
}

fn parse_limits(
    ruby: &Ruby,
    max_traces: RValue,
    max_spans: RValue,
    precision: RValue,
) -> Result<Limits, Error> {
    let mt = integer_setting(ruby, "max_traces", MAX_TRACES_EXPECTED, max_traces, true)?;
    let ms = integer_setting(
        ruby,
        "max_spans_per_trace",
        MAX_SPANS_EXPECTED,
        max_spans,
        true,
    )?;
    let p = integer_setting(
        ruby,
        "timestamp_precision",
        PRECISION_EXPECTED,
        precision,
        false,
    )?
    .unwrap_or(0);
    Limits::from_raw(mt, ms, p).map_err(|e| setting_error(ruby, e))
}

/// Validates one setting (`check_setting(:max_traces, 5)`), returning the value
/// or raising ArgumentError that names the setting and what it takes.
fn check_setting(ruby: &Ruby, name: Symbol, value: RValue) -> Result<RValue, Error> {
    let defaults = Limits::default();
    let name = name.name()?;
    match &*name {
        "max_traces" => {
            let n = integer_setting(ruby, "max_traces", MAX_TRACES_EXPECTED, value, true)?;
            Limits::parse_max_traces(n).map_err(|e| setting_error(ruby, e))?;
        }
        "max_spans_per_trace" => {
            let n =
                integer_setting(ruby, "max_spans_per_trace", MAX_SPANS_EXPECTED, value, true)?;
            Limits::parse_max_spans(n).map_err(|e| setting_error(ruby, e))?;
        }
        "timestamp_precision" => {
            let n = integer_setting(ruby, "timestamp_precision", PRECISION_EXPECTED, value, false)?
                .unwrap_or(i128::from(defaults.timestamp_precision));
            Limits::parse_precision(n).map_err(|e| setting_error(ruby, e))?;
        }
        "service_name" => {
            crate::otlp_methods::check_service_name(ruby, value)?;
        }
        "resource_attributes" => {
            crate::otlp_methods::check_resource_attributes(ruby, value)?;
        }
        other => {
            return Err(argument_error(
                ruby,
                format!("unknown setting {other} (settings: max_traces, max_spans_per_trace, timestamp_precision, service_name, resource_attributes)"),
            ))
        }
    }
    Ok(value)
}

/// Puts limits in force; validates all three first, so a bad value changes nothing.
fn apply_limits(
    ruby: &Ruby,
    max_traces: RValue,
    max_spans: RValue,
    precision: RValue,
) -> Result<RValue, Error> {
    let limits = parse_limits(ruby, max_traces, max_spans, precision)?;
    guarded(ruby, || {
        backend().configure(limits);
        Ok(rvalue(nil()))
    })
}

/// A native method that takes `handle_event`'s arguments and does nothing: the
/// floor no binding can beat, for benchmarks.
fn noop(_ruby: &Ruby, args: &[RValue]) -> bool {
    !args.is_empty()
}

/// Test-only: the next guarded native call panics inside Rust.
fn panic_next_call() -> bool {
    errors::arm_test_panic();
    true
}

pub fn define(ruby: &Ruby, module: RModule) -> Result<(), Error> {
    let methods = module.define_module("BackendMethods")?;
    methods.define_method("handle_event", method!(handle_event, -1))?;
    methods.define_method("export", method!(export, 0))?;
    methods.define_method("traces", method!(traces, 0))?;
    methods.define_method("stats", method!(stats, 0))?;
    methods.define_method("reset!", method!(reset, 0))?;

    let native = module.define_module("Native")?;
    native.define_module_function("created_at_ns", function!(created_at_ns, 0))?;
    native.define_module_function("instance_id", function!(instance_id, 0))?;
    native.define_module_function("limits", function!(limits, 0))?;
    native.define_module_function("apply_limits", function!(apply_limits, 3))?;
    native.define_module_function("check_setting", function!(check_setting, 2))?;
    native.define_module_function("noop", function!(noop, -1))?;
    native.define_module_function("__panic_next_call!", function!(panic_next_call, 0))?;
    let _ = ruby;
    Ok(())
}
