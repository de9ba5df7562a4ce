//! OpenTelemetry export from Ruby: `export_otlp`, `push_otlp` and the
//! resource settings (`service_name`, `resource_attributes`).
//!
//! Each method converts and checks all its arguments first (ArgumentError
//! naming the argument), then releases the GVL for the work that touches no
//! Ruby (selecting, encoding, the network wait), then builds its Ruby result.
//! Inside the GVL-free section panics are caught and no Ruby API is called;
//! drained records go back into the store whenever the result cannot reach
//! the caller.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::rb_sys::{AsRawValue, FromRawValue};
use magnus::{
    function, Error, Float, Integer, RHash, RModule, RString, Ruby, Symbol, Value as RValue,
};
use tasker_trace_core::config::SettingError;
use tasker_trace_core::otlp::env::{self, EndpointSource};
use tasker_trace_core::otlp::{
    self, Cancel, Compression, Protocol, PushOutcome, Resource, Target, Transport,
};
use tasker_trace_core::Value;

use crate::backend_methods::backend;
use crate::convert::PayloadConverter;
use crate::errors::{self, argument_error, native_error};
use crate::to_ruby::{hash_set, new_hash, utf8_to_ruby, value_to_ruby};

pub const SERVICE_NAME_EXPECTED: &str = "a non-empty String";
pub const RESOURCE_ATTRIBUTES_EXPECTED: &str =
    "a Hash of String or Symbol keys to Strings, Symbols, numbers, booleans or Arrays of them";
/// Longest `timeout:` taken, in seconds (a day).
const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// The resource settings in force.
#[derive(Clone, Debug)]
struct ResourceSettings {
    service_name: String,
    attributes: Vec<(String, Value)>,
}

static SETTINGS: OnceLock<RwLock<ResourceSettings>> = OnceLock::new();

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Defaults from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, read once.
fn settings() -> &'static RwLock<ResourceSettings> {
    SETTINGS.get_or_init(|| {
        let (service_name, attrs) = env::resource_defaults(
            env_var("OTEL_SERVICE_NAME").as_deref(),
            env_var("OTEL_RESOURCE_ATTRIBUTES").as_deref(),
        );
        RwLock::new(ResourceSettings {
            service_name,
            attributes: attrs
                .into_iter()
                .map(|(k, v)| (k, Value::string(&v)))
                .collect(),
        })
    })
}

fn current_settings() -> ResourceSettings {
    match settings().read() {
        Ok(s) => s.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn shown(v: RValue) -> String {
    v.inspect().chars().take(80).collect()
}

fn setting_error(ruby: &Ruby, setting: &'static str, expected: &'static str, v: RValue) -> Error {
    argument_error(
        ruby,
        SettingError {
            setting,
            expected,
            got: shown(v),
        }
        .to_string(),
    )
}

/// Checks a `service_name` value: a non-empty UTF-8 String.
pub fn check_service_name(ruby: &Ruby, v: RValue) -> Result<String, Error> {
    let bad = || setting_error(ruby, "service_name", SERVICE_NAME_EXPECTED, v);
    let s = RString::from_value(v).ok_or_else(bad)?;
    // Read in place (no Ruby allocation): the bytes must be UTF-8 text.
    let text = crate::convert::string_to_str(s.as_raw())
        .as_utf8()
        .map(str::to_string)
        .ok_or_else(bad)?;
    if text.trim().is_empty() {
        return Err(bad());
    }
    Ok(text)
}

fn scalar_attribute(v: &Value) -> bool {
    matches!(
        v,
        Value::Str(_)
            | Value::Sym(_)
            | Value::Int(_)
            | Value::BigInt(_)
            | Value::Float(_)
            | Value::Bool(_)
    )
}

/// Checks a `resource_attributes` value: a Hash whose keys are non-empty
/// Strings or Symbols and whose values are scalars or Arrays of scalars.
pub fn check_resource_attributes(ruby: &Ruby, v: RValue) -> Result<Vec<(String, Value)>, Error> {
    let bad = || setting_error(ruby, "resource_attributes", RESOURCE_ATTRIBUTES_EXPECTED, v);
    if RHash::from_value(v).is_none() {
        return Err(bad());
    }
    let converted = PayloadConverter::new(ruby)
        .convert_root(v.as_raw())
        .map_err(|_| bad())?;
    let Value::Hash(pairs) = &converted else {
        return Err(bad());
    };
    let mut out: Vec<(String, Value)> = Vec::with_capacity(pairs.len());
    for (k, val) in pairs {
        let key = match k {
            Value::Str(s) => s.as_utf8().map(str::to_string),
            Value::Sym(s) => s.as_utf8().map(str::to_string),
            _ => None,
        }
        .filter(|k| !k.is_empty())
        .ok_or_else(bad)?;
        let ok = scalar_attribute(val)
            || matches!(val, Value::Array(items) if items.iter().all(scalar_attribute));
        if !ok {
            return Err(bad());
        }
        out.retain(|(existing, _)| *existing != key);
        out.push((key, val.clone()));
    }
    Ok(out)
}

/// `Native.otlp_settings` → `{service_name:, resource_attributes:}`.
fn otlp_settings(ruby: &Ruby) -> Result<RValue, Error> {
    errors::guarded(ruby, || {
        let s = current_settings();
        let attrs = new_hash(s.attributes.len());
        for (k, v) in &s.attributes {
            hash_set(attrs, utf8_to_ruby(k), value_to_ruby(v));
        }
        let h = ruby.hash_new();
        h.aset(ruby.sym_new("service_name"), ruby.str_new(&s.service_name))?;
        // SAFETY: `attrs` is a Hash just built on this thread and still on the stack.
        h.aset(ruby.sym_new("resource_attributes"), unsafe {
            RValue::from_raw(attrs)
        })?;
        Ok(h.as_value())
    })
}

/// `Native.apply_otlp_settings(service_name, resource_attributes)`: checks both,
/// then puts both in force.
fn apply_otlp_settings(
    ruby: &Ruby,
    service_name: RValue,
    attributes: RValue,
) -> Result<bool, Error> {
    let service_name = check_service_name(ruby, service_name)?;
    let attributes = check_resource_attributes(ruby, attributes)?;
    errors::guarded(ruby, || {
        let mut s = match settings().write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        *s = ResourceSettings {
            service_name,
            attributes,
        };
        Ok(true)
    })
}

fn gem_version(ruby: &Ruby) -> String {
    ruby.class_object()
        .const_get::<_, RModule>("TaskerTraceNative")
        .and_then(|m| m.const_get::<_, RString>("VERSION"))
        .and_then(|v| v.to_string())
        .unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string())
}

/// The resource of a request, as it is now (pid after any fork).
fn resource(ruby: &Ruby) -> Resource {
    let s = current_settings();
    Resource {
        service_name: s.service_name,
        host_name: backend().instance_id().to_string(),
        pid: std::process::id(),
        version: gem_version(ruby),
        attributes: s.attributes,
    }
}

fn boolean_argument(ruby: &Ruby, name: &str, v: RValue) -> Result<bool, Error> {
    let raw = v.as_raw();
    if raw == rb_sys::Qtrue as rb_sys::VALUE {
        Ok(true)
    } else if raw == rb_sys::Qfalse as rb_sys::VALUE {
        Ok(false)
    } else {
        Err(argument_error(
            ruby,
            format!("{name} must be true or false (got {})", shown(v)),
        ))
    }
}

// ---------------------------------------------------------------------------
// Running Rust without the GVL.

struct NoGvlCall<F, R> {
    work: Option<F>,
    result: Option<std::thread::Result<R>>,
}

unsafe extern "C" fn no_gvl_trampoline<F: FnOnce() -> R, R>(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the `NoGvlCall` that `without_gvl` keeps on its stack
    // for the whole blocking region; only this thread uses it meanwhile.
    let call = unsafe { &mut *(data as *mut NoGvlCall<F, R>) };
    if let Some(work) = call.work.take() {
        call.result = Some(catch_unwind(AssertUnwindSafe(work)));
    }
    std::ptr::null_mut()
}

unsafe extern "C" fn cancel_push(data: *mut c_void) {
    // SAFETY: `data` is the `Cancel` that `push_otlp` keeps alive until the
    // blocking region has ended; `cancel` only stores a flag and unparks.
    let cancel = unsafe { &*(data as *const Cancel) };
    // Ruby calls this through C: a panic must not unwind out of it.
    let _ = catch_unwind(AssertUnwindSafe(|| cancel.cancel()));
}

/// What a GVL-free call gave.
struct NoGvl<R> {
    /// The work's result; `None` when it never ran (an interrupt was pending).
    result: Option<std::thread::Result<R>>,
    /// An exception or interrupt (Thread#raise, #kill, Timeout) that arrived
    /// around the call: raise it once cleanup is done.
    interrupt: Option<Error>,
}

/// Runs `work` with the GVL released. `work` must not touch Ruby; its panics
/// are caught inside. `cancel`, when given, is called if Ruby interrupts the
/// thread (Thread#raise, #kill, signals) while `work` runs.
fn without_gvl<F, R>(work: F, cancel: Option<&Cancel>) -> NoGvl<R>
where
    F: FnOnce() -> R,
{
    let mut call = NoGvlCall {
        work: Some(work),
        result: None,
    };
    let data = &mut call as *mut NoGvlCall<F, R> as *mut c_void;
    let (ubf, ubf_data): (rb_sys::rb_unblock_function_t, *mut c_void) = match cancel {
        Some(c) => (
            Some(cancel_push as unsafe extern "C" fn(*mut c_void)),
            c as *const Cancel as *mut c_void,
        ),
        None => (None, std::ptr::null_mut()),
    };
    // Ruby checks for pending interrupts before and after the blocking region
    // and raises by unwinding its own way; `protect` stops that here so that
    // the caller can put drained records back first.
    let protected = magnus::rb_sys::protect(|| {
        // SAFETY: `data` and `ubf_data` outlive the call; the trampoline runs
        // `work` on this thread without the GVL and touches no Ruby API.
        unsafe {
            rb_sys::rb_thread_call_without_gvl(
                Some(no_gvl_trampoline::<F, R>),
                data,
                ubf,
                ubf_data,
            );
        }
        rb_sys::Qnil as rb_sys::VALUE
    });
    NoGvl {
        result: call.result.take(),
        interrupt: protected.err(),
    }
}

impl<R> NoGvl<R> {
    /// The work's value and any interrupt that arrived around it; a panic
    /// inside the work, or work that never ran, is an error (the interrupt,
    /// when there was one, else `TaskerTraceNative::Error`).
    fn finished(self, ruby: &Ruby, what: &str) -> Result<(R, Option<Error>), Error> {
        match self.result {
            Some(Ok(value)) => Ok((value, self.interrupt)),
            Some(Err(panic)) => Err(self
                .interrupt
                .unwrap_or_else(|| errors::panic_error(ruby, panic.as_ref()))),
            None => Err(self
                .interrupt
                .unwrap_or_else(|| native_error(ruby, format!("{what} did not run")))),
        }
    }
}

// ---------------------------------------------------------------------------
// export_otlp

/// `Native.export_otlp(drain, include_open)` → the JSON String.
fn export_otlp(ruby: &Ruby, drain: RValue, include_open: RValue) -> Result<RString, Error> {
    let drain = boolean_argument(ruby, "drain", drain)?;
    let include_open = boolean_argument(ruby, "include_open", include_open)?;
    let resource = resource(ruby);
    let b = backend();
    let done = without_gvl(
        || {
            errors::maybe_injected_panic();
            otlp::export(b, drain, include_open, &resource, Protocol::HttpJson)
        },
        None,
    );
    let (encoded, interrupt) = done.finished(ruby, "export_otlp")?;
    let export = match encoded {
        Ok(export) => export,
        // `otlp::export` has put drained records back before failing.
        Err(e) => {
            return Err(interrupt
                .unwrap_or_else(|| native_error(ruby, format!("OTLP encoding failed: {e}"))))
        }
    };
    if let Some(interrupt) = interrupt {
        if drain {
            b.restore(export.records);
        }
        return Err(interrupt);
    }
    // serde_json writes UTF-8 only; the check is a fast scan, kept as a guard.
    let text = match std::str::from_utf8(&export.body) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(&export.body),
    };
    let string = magnus::rb_sys::protect(|| utf8_to_ruby(&text));
    match string {
        Ok(v) => match RString::from_value({
            // SAFETY: `v` is the String just created on this thread.
            unsafe { RValue::from_raw(v) }
        }) {
            Some(s) => Ok(s),
            None => Err(native_error(ruby, "export_otlp built no String")),
        },
        Err(e) => {
            if drain {
                b.restore(export.records);
            }
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------
// push_otlp

fn string_like(v: RValue) -> Option<String> {
    if let Some(s) = RString::from_value(v) {
        return s.to_string().ok();
    }
    Symbol::from_value(v).and_then(|s| s.name().ok().map(|n| n.into_owned()))
}

fn endpoint_argument(ruby: &Ruby, v: RValue) -> Result<Option<String>, Error> {
    if v.is_nil() {
        return Ok(None);
    }
    match RString::from_value(v).and_then(|s| s.to_string().ok()) {
        Some(s) => Ok(Some(s)),
        None => Err(argument_error(
            ruby,
            format!(
                "endpoint must be an http:// URL String or nil (got {})",
                shown(v)
            ),
        )),
    }
}

fn headers_argument(ruby: &Ruby, v: RValue) -> Result<Vec<(String, String)>, Error> {
    let bad = |detail: String| {
        argument_error(
            ruby,
            format!("headers must be a Hash of String or Symbol names to String values ({detail})"),
        )
    };
    let Some(hash) = RHash::from_value(v) else {
        return Err(bad(format!("got {}", shown(v))));
    };
    let mut out = Vec::new();
    let mut problem: Option<String> = None;
    hash.foreach(|k: RValue, val: RValue| {
        match (string_like(k), string_like(val)) {
            (Some(name), Some(value)) => match env::check_header(&name, &value) {
                Ok(()) => out.push((name, value)),
                Err(e) => {
                    problem = Some(e);
                    return Ok(ForEach::Stop);
                }
            },
            _ => {
                problem = Some(format!("got {} => {}", shown(k), shown(val)));
                return Ok(ForEach::Stop);
            }
        }
        Ok(ForEach::Continue)
    })?;
    match problem {
        Some(p) => Err(bad(p)),
        None => Ok(out),
    }
}

fn timeout_argument(ruby: &Ruby, v: RValue) -> Result<Duration, Error> {
    let seconds = if let Some(i) = Integer::from_value(v) {
        i.to_i64().map(|n| n as f64).unwrap_or(f64::INFINITY)
    } else if let Some(f) = Float::from_value(v) {
        f.to_f64()
    } else {
        f64::NAN
    };
    if seconds.is_finite() && seconds > 0.0 && seconds <= MAX_TIMEOUT_SECONDS {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(argument_error(
            ruby,
            format!(
                "timeout must be a positive number of seconds, at most {MAX_TIMEOUT_SECONDS} (got {})",
                shown(v)
            ),
        ))
    }
}

/// The target of a push: the argument or OpenTelemetry's variables.
fn push_target(
    ruby: &Ruby,
    endpoint: RValue,
    headers: RValue,
    timeout: RValue,
) -> Result<Target, Error> {
    let endpoint = endpoint_argument(ruby, endpoint)?;
    let extra_headers = headers_argument(ruby, headers)?;
    let timeout = timeout_argument(ruby, timeout)?;
    let (url, source) = env::traces_endpoint(
        endpoint.as_deref(),
        env_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").as_deref(),
        env_var("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
    );
    env::check_endpoint(&url).map_err(|e| {
        let name = source.name();
        match source {
            EndpointSource::Argument => argument_error(ruby, format!("endpoint: {e}")),
            _ => argument_error(ruby, format!("{name}: {e}")),
        }
    })?;
    let mut headers = env::headers_from_env(
        env_var("OTEL_EXPORTER_OTLP_HEADERS").as_deref(),
        env_var("OTEL_EXPORTER_OTLP_TRACES_HEADERS").as_deref(),
    )
    .map_err(|(variable, e)| argument_error(ruby, format!("{variable}: {e}")))?;
    env::merge_headers(&mut headers, extra_headers);
    // JSON, uncompressed, as before: the OTEL_* protocol, compression and
    // TLS settings (`env::exporter_settings`) are not wired in yet.
    Ok(Target {
        headers,
        timeout,
        protocol: Protocol::HttpJson,
        compression: Compression::None,
        ..Target::new(url)
    })
}

fn count(ruby: &Ruby, n: usize) -> RValue {
    ruby.integer_from_i64(i64::try_from(n).unwrap_or(i64::MAX))
        .as_value()
}

fn push_result(
    ruby: &Ruby,
    sent: usize,
    status: Option<u16>,
    error: Option<&str>,
) -> Result<RHash, Error> {
    let h = ruby.hash_new();
    h.aset(ruby.sym_new("sent"), count(ruby, sent))?;
    h.aset(ruby.sym_new("status"), status.map(i64::from))?;
    h.aset(ruby.sym_new("error"), error)?;
    Ok(h)
}

/// `Native.push_otlp(endpoint, headers, timeout)` → `{sent:, status:, error:}`.
fn push_otlp(
    ruby: &Ruby,
    endpoint: RValue,
    headers: RValue,
    timeout: RValue,
) -> Result<RHash, Error> {
    let target = push_target(ruby, endpoint, headers, timeout)?;
    let transport = Transport::new(target).map_err(|e| argument_error(ruby, e))?;
    let resource = resource(ruby);
    let b = backend();
    let cancel = Cancel::for_current_thread();
    let done = without_gvl(
        || {
            errors::maybe_injected_panic();
            otlp::push_finished(b, &resource, &transport, &cancel)
        },
        Some(&cancel),
    );
    // `push_finished` has already put undelivered records back, panics included.
    let (outcome, interrupt) = done.finished(ruby, "push_otlp")?;
    if let Some(interrupt) = interrupt {
        return Err(interrupt);
    }
    match outcome {
        PushOutcome::Nothing => push_result(ruby, 0, None, None),
        PushOutcome::Sent {
            records,
            status,
            partial,
            ..
        } => push_result(ruby, records, Some(status), partial.as_deref()),
        PushOutcome::Failed { status, error, .. } => push_result(ruby, 0, status, Some(&error)),
    }
}

pub fn define(ruby: &Ruby, module: RModule) -> Result<(), Error> {
    // Read the OTEL_* resource variables now, at load.
    let _ = settings();
    let native = module.define_module("Native")?;
    native.define_module_function("export_otlp", function!(export_otlp, 2))?;
    native.define_module_function("push_otlp", function!(push_otlp, 3))?;
    native.define_module_function("otlp_settings", function!(otlp_settings, 0))?;
    native.define_module_function("apply_otlp_settings", function!(apply_otlp_settings, 2))?;
    let _ = ruby;
    Ok(())
}
