//! OpenTelemetry export from Ruby: `export_otlp`, `push_otlp` and the
//! resource settings (`service_name`, `resource_attributes`).
//!
//! Each method converts and checks all its arguments first (ArgumentError
//! naming the argument), then releases the GVL for the work that touches no
//! Ruby (selecting, encoding, the network wait), then builds its Ruby result.
//! Inside the GVL-free section panics are caught and no Ruby API is called;
//! drained records go back into the store whenever the result cannot reach
//! the caller.

use std::time::Duration;

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::rb_sys::AsRawValue;
use magnus::{
    function, Error, Float, Integer, RHash, RModule, RString, Ruby, Symbol, Value as RValue,
};
use tasker_trace_core::otlp::env::{self, EndpointSource};
use tasker_trace_core::otlp::{
    self, Cancel, Compression, Protocol, PushOutcome, Resource, Target, Transport,
};

use crate::backend;
use crate::errors::{self, argument_error, native_error};
use crate::gvl::{without_gvl, NO_UNBLOCK};
use crate::names::sym;
use crate::settings::shown;
use crate::to_ruby::{count_to_ruby, hash_from_pairs, nil, utf8_to_ruby, wrap};

/// Longest `timeout:` taken, in seconds (a day).
const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
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
    resource_for(gem_version(ruby))
}

/// The resource as it is now, with the gem version given (the background
/// exporter's thread cannot ask Ruby for it). Touches no Ruby.
pub fn resource_for(version: String) -> Resource {
    let s = backend().resource_settings();
    Resource {
        service_name: s.service_name,
        host_name: backend().instance_id().to_string(),
        pid: std::process::id(),
        version,
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
            format!("{name} must be true or false (got {})", shown(ruby, v)?),
        ))
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
        NO_UNBLOCK,
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
        Ok(v) => match RString::from_value(wrap(v)) {
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
                shown(ruby, v)?
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
        return Err(bad(format!("got {}", shown(ruby, v)?)));
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
                problem = Some(format!("got {} => {}", shown(ruby, k)?, shown(ruby, val)?));
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

pub fn timeout_argument(ruby: &Ruby, v: RValue) -> Result<Duration, Error> {
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
                shown(ruby, v)?
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

/// `{sent:, status:, error:}`.
fn push_result(sent: usize, status: Option<u16>, error: Option<&str>) -> RValue {
    let kv = [
        sym(|s| s.sent),
        count_to_ruby(sent),
        sym(|s| s.status),
        status.map_or_else(nil, |s| count_to_ruby(u64::from(s))),
        sym(|s| s.error),
        error.map_or_else(nil, utf8_to_ruby),
    ];
    wrap(hash_from_pairs(&kv))
}

/// `Native.push_otlp(endpoint, headers, timeout)` → `{sent:, status:, error:}`.
fn push_otlp(
    ruby: &Ruby,
    endpoint: RValue,
    headers: RValue,
    timeout: RValue,
) -> Result<RValue, Error> {
    let target = push_target(ruby, endpoint, headers, timeout)?;
    let transport = Transport::new(target).map_err(|e| argument_error(ruby, e))?;
    let resource = resource(ruby);
    let b = backend();
    let cancel = Cancel::for_current_thread();
    let unblock = || cancel.cancel();
    let done = without_gvl(
        || {
            errors::maybe_injected_panic();
            otlp::push_finished(b, &resource, &transport, &cancel)
        },
        Some(&unblock),
    );
    // `push_finished` has already put undelivered records back, panics included.
    let (outcome, interrupt) = done.finished(ruby, "push_otlp")?;
    if let Some(interrupt) = interrupt {
        return Err(interrupt);
    }
    Ok(match outcome {
        PushOutcome::Nothing => push_result(0, None, None),
        PushOutcome::Sent {
            records,
            status,
            partial,
            ..
        } => push_result(records, Some(status), partial.as_deref()),
        PushOutcome::Failed { status, error, .. } => push_result(0, status, Some(&error)),
    })
}

pub fn define(native: RModule) -> Result<(), Error> {
    native.define_module_function("export_otlp", function!(export_otlp, 2))?;
    native.define_module_function("push_otlp", function!(push_otlp, 3))?;
    Ok(())
}
