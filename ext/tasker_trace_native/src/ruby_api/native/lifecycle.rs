//! The lifecycle tracer from Ruby: module functions on
//! `TaskerTraceNative::Native` that `lib/tasker_trace_native/lifecycle.rb`
//! wraps.
//!
//! - `record_lifecycle_event(name, payload)` → true / false: one published
//!   event (read by [`crate::from_ruby::lifecycle_convert`], then one short
//!   lock); never raises for its input
//! - `lifecycle_stats` → Hash, `lifecycle_runs(include_open)` → Array of
//!   Hashes (see [`crate::to_ruby::lifecycle`]), `lifecycle_reset!`
//! - `set_lifecycle_filters({name => filtered})`, `lifecycle_filtered_keys`:
//!   the filtering the Ruby layer decided, per payload key name
//! - `set_lifecycle_value_filters(strings, asks)`: the String and Symbol
//!   filters for keys nested in Hash values, and whether Regexp or Proc
//!   filters are in force too (see [`crate::lifecycle_values`])
//! - `LIFECYCLE_PAYLOAD_KEYS`, `LIFECYCLE_EVENT_NAMES`: the payload keys
//!   always read and the event names known by name

use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::rb_sys::AsRawValue;
use magnus::{function, Error, RHash, RModule, RString, Ruby, Value as RValue};
use rb_sys::VALUE;
use tasker_trace_core::input::lifecycle::values::ValueFilter;
use tasker_trace_core::input::lifecycle::SPAN_EVENT_NAMES;
use tasker_trace_core::input::lifecycle::{AttrKey, KNOWN_EVENT_NAMES};
use tasker_trace_core::support::clock::Stamp;

use crate::from_ruby::lifecycle_convert::{self, Read};
use crate::from_ruby::lifecycle_read_plan;
use crate::from_ruby::setting_checks::{boolean_argument, key_name};
use crate::helpers::errors::{self, argument_error, build_protected, guarded, shown};
use crate::helpers::recorder::{recorder_result, Ingested};
use crate::process::{self, lifecycle_tracer};
use crate::to_ruby::lifecycle::{runs_to_ruby, stats_to_ruby};
use crate::to_ruby::values::{array_of, nil, utf8_to_ruby, wrap};

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn record(ruby: &Ruby, name: VALUE, payload: VALUE, at: Stamp) -> Ingested {
    errors::maybe_injected_panic();
    match lifecycle_convert::read_event(ruby, name, payload, at) {
        Ok(Read::Event(event)) => {
            process::record(|| lifecycle_tracer().record(event));
            Ingested::Stored
        }
        Ok(Read::Refused) => Ingested::Refused,
        Err(e) => Ingested::from_error(ruby, e),
    }
}

/// `Native.record_lifecycle_event(name, payload)` → true when the tracer
/// took the event (whatever it made of it: see `lifecycle_stats`), false
/// when it was refused (a payload that is not a Hash, a name that is not a
/// String or Symbol) or on an internal failure (logged). Only non-local
/// exits and exceptions that must propagate, raised by payload objects' own
/// `to_s`/`iso8601`, leave it.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn record_lifecycle_event(ruby: &Ruby, name: RValue, payload: RValue) -> Result<bool, Error> {
    let at = Stamp::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        record(ruby, name.as_raw(), payload.as_raw(), at)
    }));
    recorder_result(ruby, outcome, name, "log_lifecycle_error", || {
        lifecycle_tracer().refuse()
    })
}

/// `Native.lifecycle_stats` → counters and sizes (idle runs past the TTL are
/// expired first, so `open_runs` counts live ones).
fn lifecycle_stats(ruby: &Ruby) -> Result<RValue, Error> {
    guarded(ruby, || {
        let t = lifecycle_tracer();
        t.expire_now();
        Ok(wrap(stats_to_ruby(&t.stats())))
    })
}

/// `Native.lifecycle_runs(include_open)` → the runs waiting for export (and
/// the open ones), as plain Hashes; removes nothing.
fn lifecycle_runs(ruby: &Ruby, include_open: RValue) -> Result<RValue, Error> {
    let include_open = boolean_argument(ruby, "include_open", include_open)?;
    guarded(ruby, || {
        let t = lifecycle_tracer();
        t.expire_now();
        let runs = t.snapshot(include_open);
        let prefix = t.attribute_prefix();
        // The runs and the prefix are owned here, outside the protected build.
        build_protected(ruby, || runs_to_ruby(&runs, &prefix)).map(wrap)
    })
}

/// `Native.set_default_attribute_prefix(name)`: the prefix's name when the
/// `attribute_prefix` setting is nil (the Ruby layer passes Tasker's
/// telemetry service name); `name` is checked as the setting is.
fn set_default_attribute_prefix(ruby: &Ruby, name: RValue) -> Result<bool, Error> {
    let Some(name) = crate::from_ruby::setting_checks::check_attribute_prefix(ruby, name)? else {
        return Ok(false);
    };
    guarded(ruby, || {
        lifecycle_tracer().set_attribute_prefix(
            lifecycle_tracer().configured_prefix().as_deref(),
            Some(&name),
        );
        Ok(true)
    })
}

/// `Native.attribute_prefix` → the prefix in force, `"<name>."`.
fn attribute_prefix_in_force(ruby: &Ruby) -> Result<RValue, Error> {
    guarded(ruby, || {
        Ok(wrap(utf8_to_ruby(&lifecycle_tracer().attribute_prefix())))
    })
}

/// `Native.lifecycle_reset!`: forgets every run, zeroes the counters.
fn lifecycle_reset(ruby: &Ruby) -> Result<RValue, Error> {
    guarded(ruby, || {
        lifecycle_tracer().reset();
        Ok(wrap(nil()))
    })
}

const FILTERS_EXPECTED: &str =
    "a Hash of payload key names (Strings or Symbols) to true (filtered) or false";

/// `Native.set_lifecycle_filters({"error_message" => false, "card" => true})`:
/// replaces the filter decisions, per payload key name. A key in
/// `lifecycle_attributes` without a decision is filtered.
fn set_lifecycle_filters(ruby: &Ruby, decisions: RValue) -> Result<bool, Error> {
    let bad = |v: RValue| -> Error {
        match shown(ruby, v) {
            Ok(got) => argument_error(
                ruby,
                format!("lifecycle filters must be {FILTERS_EXPECTED} (got {got})"),
            ),
            Err(interrupt) => interrupt,
        }
    };
    let Some(hash) = RHash::from_value(decisions) else {
        return Err(bad(decisions));
    };
    let mut out = Vec::with_capacity(hash.len());
    let mut wrong: Option<RValue> = None;
    hash.foreach(|k: RValue, v: RValue| {
        let filtered = match v.as_raw() {
            x if x == rb_sys::Qtrue as VALUE => true,
            x if x == rb_sys::Qfalse as VALUE => false,
            _ => {
                wrong = Some(decisions);
                return Ok(ForEach::Stop);
            }
        };
        match key_name(k) {
            Some(name) => out.push((name, filtered)),
            None => {
                wrong = Some(decisions);
                return Ok(ForEach::Stop);
            }
        }
        Ok(ForEach::Continue)
    })?;
    if let Some(v) = wrong {
        return Err(bad(v));
    }
    guarded(ruby, || {
        lifecycle_read_plan::set_decisions(out);
        Ok(true)
    })
}

const VALUE_FILTERS_EXPECTED: &str = "an Array of filter Strings and true or false";

/// `Native.set_lifecycle_value_filters(["password", "order.customer.card"],
/// asks)`: the String and Symbol filters (as Strings) for keys nested in
/// Hash values; `asks` true when Regexp or Proc filters are in force too.
fn set_lifecycle_value_filters(ruby: &Ruby, strings: RValue, asks: RValue) -> Result<bool, Error> {
    let bad = |v: RValue| -> Error {
        match shown(ruby, v) {
            Ok(got) => argument_error(
                ruby,
                format!("lifecycle value filters must be {VALUE_FILTERS_EXPECTED} (got {got})"),
            ),
            Err(interrupt) => interrupt,
        }
    };
    let asks = boolean_argument(ruby, "asks", asks)?;
    let Some(list) = magnus::RArray::from_value(strings) else {
        return Err(bad(strings));
    };
    let mut names = Vec::with_capacity(list.len());
    for item in list.into_iter() {
        let Some(s) = RString::from_value(item) else {
            return Err(bad(strings));
        };
        // SAFETY: the bytes are copied at once, before any Ruby code runs.
        names.push(String::from_utf8_lossy(unsafe { s.as_slice() }).into_owned());
    }
    guarded(ruby, || {
        lifecycle_read_plan::set_value_filter(ValueFilter::new(names, asks));
        Ok(true)
    })
}

/// `Native.lifecycle_filtered_keys` → the payload key names whose values
/// are exported as `"[FILTERED]"` now.
fn lifecycle_filtered_keys(ruby: &Ruby) -> Result<RValue, Error> {
    guarded(ruby, || {
        let names = lifecycle_convert::current_plan().filtered_names();
        Ok(wrap(array_of(names.iter(), |n| utf8_to_ruby(n))))
    })
}

fn frozen_names(ruby: &Ruby, names: &[&str]) -> Result<RValue, Error> {
    let ary = ruby.ary_new_capa(names.len());
    for name in names {
        let s = ruby.str_new(name);
        s.freeze();
        ary.push(s)?;
    }
    ary.freeze();
    Ok(ary.as_value())
}

pub fn define(native: RModule) -> Result<(), Error> {
    let ruby = Ruby::get_with(native);
    native.const_set(
        "LIFECYCLE_PAYLOAD_KEYS",
        frozen_names(&ruby, &AttrKey::PAYLOAD_KEYS)?,
    )?;
    native.const_set(
        "LIFECYCLE_EVENT_NAMES",
        frozen_names(&ruby, &KNOWN_EVENT_NAMES)?,
    )?;
    native.const_set(
        "LIFECYCLE_SPAN_EVENT_NAMES",
        frozen_names(&ruby, &SPAN_EVENT_NAMES)?,
    )?;
    native.define_module_function(
        "record_lifecycle_event",
        function!(record_lifecycle_event, 2),
    )?;
    native.define_module_function("lifecycle_stats", function!(lifecycle_stats, 0))?;
    native.define_module_function("lifecycle_runs", function!(lifecycle_runs, 1))?;
    native.define_module_function("lifecycle_reset!", function!(lifecycle_reset, 0))?;
    native.define_module_function(
        "set_default_attribute_prefix",
        function!(set_default_attribute_prefix, 1),
    )?;
    native.define_module_function("attribute_prefix", function!(attribute_prefix_in_force, 0))?;
    native.define_module_function("set_lifecycle_filters", function!(set_lifecycle_filters, 1))?;
    native.define_module_function(
        "set_lifecycle_value_filters",
        function!(set_lifecycle_value_filters, 2),
    )?;
    native.define_module_function(
        "lifecycle_filtered_keys",
        function!(lifecycle_filtered_keys, 0),
    )?;
    Ok(())
}
