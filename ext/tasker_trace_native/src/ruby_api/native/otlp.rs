//! OpenTelemetry export from Ruby: `export_otlp` and `push_otlp`.
//!
//! Each method converts and checks all its arguments first (ArgumentError
//! naming the argument; the checks are the `otlp_*` settings' own, in
//! [`crate::from_ruby::setting_checks`]), then releases the GVL for the work
//! that touches no Ruby (selecting, encoding, the transport, the network
//! wait), then builds its Ruby result. Inside the GVL-free section panics are caught and no Ruby
//! API is called; drained records go back into the store whenever the
//! result cannot reach the caller.

use magnus::prelude::*;
use magnus::{function, Error, RModule, RString, Ruby, Value as RValue};
use tasker_trace_core::encode::Resource;
use tasker_trace_core::export::{
    encode_export, push, PushOutcome, Sending, Sources, EXPLICIT_SETTLE,
};
use tasker_trace_core::support::protocol::Protocol;
use tasker_trace_core::transport::{Cancel, PushOverrides};

use super::lifecycle::read_pending;
use crate::from_ruby::setting_checks::{self as settings, boolean_argument};
use crate::helpers::errors::{self, guarded, native_error};
use crate::helpers::gvl::{without_gvl, NO_UNBLOCK};
use crate::helpers::static_ids::sym;
use crate::in_force;
use crate::process::{backend, exporter, lifecycle_tracer, otlp_client, resource_for};
use crate::to_ruby::values::{
    binary_to_ruby, count_to_ruby, hash_from_pairs, nil, utf8_to_ruby, wrap,
};

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

// ---------------------------------------------------------------------------
// export_otlp

/// `Native.export_otlp(drain, include_open, protocol)` → the request: a
/// UTF-8 String in http/json, a binary String in http/protobuf.
fn export_otlp(
    ruby: &Ruby,
    drain: RValue,
    include_open: RValue,
    protocol: RValue,
) -> Result<RString, Error> {
    let drain = boolean_argument(ruby, "drain", drain)?;
    let include_open = boolean_argument(ruby, "include_open", include_open)?;
    let protocol = settings::protocol_value(ruby, "protocol", protocol)?;
    read_pending(ruby)?;
    in_force::ensure_environment(ruby)?;
    let resource = resource(ruby);
    let (b, t) = (backend(), lifecycle_tracer());
    let done = without_gvl(
        || {
            errors::maybe_injected_panic();
            encode_export(
                Sources::both(b, t),
                drain,
                include_open,
                &resource,
                protocol,
            )
        },
        NO_UNBLOCK,
    );
    let (encoded, interrupt) = done.finished(ruby, "export_otlp")?;
    let export = match encoded {
        Ok(export) => export,
        // `encode_export` has put drained records back before failing.
        Err(e) => {
            return Err(interrupt
                .unwrap_or_else(|| native_error(ruby, format!("OTLP encoding failed: {e}"))))
        }
    };
    if let Some(interrupt) = interrupt {
        export.put_back(Sources::both(b, t));
        return Err(interrupt);
    }
    let string = match protocol {
        Protocol::HttpProtobuf => magnus::rb_sys::protect(|| binary_to_ruby(&export.body)),
        Protocol::HttpJson => {
            // serde_json writes UTF-8 only; the check is a fast scan, kept as a guard.
            let text = match std::str::from_utf8(&export.body) {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(&export.body),
            };
            magnus::rb_sys::protect(|| utf8_to_ruby(&text))
        }
    };
    match string {
        Ok(v) => match RString::from_value(wrap(v)) {
            Some(s) => Ok(s),
            None => Err(native_error(ruby, "export_otlp built no String")),
        },
        Err(e) => {
            export.put_back(Sources::both(b, t));
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------
// push_otlp

/// A push's arguments over the settings: nil (and empty headers) leave the
/// setting in force.
fn push_overrides(
    ruby: &Ruby,
    endpoint: RValue,
    headers: RValue,
    timeout: RValue,
    protocol: RValue,
) -> Result<PushOverrides, Error> {
    let optional = |v: RValue| (!v.is_nil()).then_some(v);
    Ok(PushOverrides {
        endpoint: settings::endpoint_value(ruby, "endpoint", endpoint)?,
        headers: settings::headers_value(ruby, "headers", headers)?,
        timeout: optional(timeout)
            .map(|v| settings::seconds(ruby, "timeout", v, &settings::TIMEOUT))
            .transpose()?,
        protocol: optional(protocol)
            .map(|v| settings::protocol_value(ruby, "protocol", v))
            .transpose()?,
    })
}

/// How a push went, before it becomes a Hash.
enum Pushed {
    /// No transport could be built (a TLS file, the URL); nothing drained.
    NoTransport(String),
    Done(PushOutcome),
}

/// `{sent:, status:, error:, rejected:}`.
fn push_result(sent: usize, status: Option<u16>, error: Option<&str>, rejected: u64) -> RValue {
    let kv = [
        sym(|s| s.sent),
        count_to_ruby(sent),
        sym(|s| s.status),
        status.map_or_else(nil, |s| count_to_ruby(u64::from(s))),
        sym(|s| s.error),
        error.map_or_else(nil, utf8_to_ruby),
        sym(|s| s.rejected),
        count_to_ruby(rejected),
    ];
    wrap(hash_from_pairs(&kv))
}

/// `Native.push_otlp(endpoint, headers, timeout, protocol)` →
/// `{sent:, status:, error:, rejected:}`.
fn push_otlp(
    ruby: &Ruby,
    endpoint: RValue,
    headers: RValue,
    timeout: RValue,
    protocol: RValue,
) -> Result<RValue, Error> {
    let overrides = push_overrides(ruby, endpoint, headers, timeout, protocol)?;
    read_pending(ruby)?;
    in_force::ensure_environment(ruby)?;
    // A fork child's copies of what its parent finished are the parent's
    // exporter's to send.
    guarded(ruby, || {
        exporter().discard_inherited_before_push();
        Ok(())
    })?;
    let resource = resource(ruby);
    let (b, t) = (backend(), lifecycle_tracer());
    let cancel = Cancel::for_current_thread();
    // Ruby calls this (Thread#raise, #kill, Timeout, a signal) to interrupt
    // the push: the waiting thread asks Ruby at once whether an interrupt
    // that raises is pending, and if so the wait for the request ends.
    let unblock = || cancel.wake_waiter();
    let done = without_gvl(
        || {
            errors::maybe_injected_panic();
            let client = otlp_client();
            match client.transport(&overrides) {
                Ok(transport) => {
                    let sending = Sending::PushThread(&transport, client.push_sender());
                    let sources = Sources::both(b, t);
                    let settle = EXPLICIT_SETTLE;
                    Pushed::Done(push(sources, &resource, sending, &cancel, settle))
                }
                Err(e) => Pushed::NoTransport(e),
            }
        },
        Some(&unblock),
    );
    // `push` has already put undelivered records back, panics and
    // interrupts included.
    let (pushed, interrupt) = done.finished(ruby, "push_otlp")?;
    if let Some(interrupt) = interrupt {
        return Err(interrupt);
    }
    Ok(match pushed {
        Pushed::NoTransport(error) => push_result(0, None, Some(&error), 0),
        Pushed::Done(PushOutcome::Nothing) => push_result(0, None, None, 0),
        // What the collector refused for good is not counted as sent.
        Pushed::Done(PushOutcome::Sent {
            records,
            rejected_traces,
            status,
            partial,
            rejected_spans,
            ..
        }) => push_result(
            records.saturating_sub(rejected_traces),
            Some(status),
            partial.as_deref(),
            rejected_spans,
        ),
        Pushed::Done(PushOutcome::Failed {
            delivered,
            rejected_traces,
            status,
            error,
            rejected_spans,
            ..
        }) => push_result(
            delivered.saturating_sub(rejected_traces),
            status,
            Some(&error),
            rejected_spans,
        ),
    })
}

pub fn define(native: RModule) -> Result<(), Error> {
    native.define_module_function("export_otlp", function!(export_otlp, 3))?;
    native.define_module_function("push_otlp", function!(push_otlp, 4))?;
    Ok(())
}
