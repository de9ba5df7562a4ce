//! Interned Symbols and encoding indexes shared by conversion in both directions.
//!
//! Only IDs (plain integers the VM never moves or frees for static symbols)
//! and encoding indexes are kept; no Ruby object is stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rb_sys::{ID, VALUE};
use tasker_trace_core::value::Encoding;

struct Indexes {
    utf8: i32,
    usascii: i32,
    binary: i32,
}

static ENCODINGS: OnceLock<Indexes> = OnceLock::new();

/// Reads the VM's encoding indexes; called once at load.
pub fn init() {
    // SAFETY: these return constant indexes of built-in encodings.
    let idx = unsafe {
        Indexes {
            utf8: rb_sys::rb_utf8_encindex(),
            usascii: rb_sys::rb_usascii_encindex(),
            binary: rb_sys::rb_ascii8bit_encindex(),
        }
    };
    let _ = ENCODINGS.set(idx);
    let _ = SYMS.set(Syms::load());
}

fn indexes() -> &'static Indexes {
    ENCODINGS.get_or_init(|| Indexes {
        // The VM's fixed values for the built-in encodings.
        binary: 0,
        utf8: 1,
        usascii: 2,
    })
}

/// The VM's encoding index for a built-in label (`None` for `Other`).
pub fn builtin_index(e: Encoding) -> Option<i32> {
    let ix = indexes();
    match e {
        Encoding::Utf8 => Some(ix.utf8),
        Encoding::UsAscii => Some(ix.usascii),
        Encoding::Binary => Some(ix.binary),
        Encoding::Other(_) => None,
    }
}

pub fn encoding_from_index(idx: i32) -> Encoding {
    let ix = indexes();
    if idx == ix.utf8 {
        Encoding::Utf8
    } else if idx == ix.binary {
        Encoding::Binary
    } else if idx == ix.usascii {
        Encoding::UsAscii
    } else {
        Encoding::Other(idx)
    }
}

fn intern(name: &str) -> ID {
    // SAFETY: rb_intern2 copies the name and returns a static symbol's ID.
    unsafe { rb_sys::rb_intern2(name.as_ptr() as *const _, name.len() as _) }
}

macro_rules! symbol_table {
    ($($field:ident => $name:literal,)*) => {
        /// IDs of the static Symbols the binding uses as Hash keys.
        pub struct Syms {
            $(pub $field: ID,)*
        }

        impl Syms {
            fn load() -> Syms {
                Syms { $($field: intern($name),)* }
            }
        }
    };
}

symbol_table! {
    task_id => "task_id",
    workflow_step_id => "workflow_step_id",
    operation => "operation",
    start_time => "start_time",
    event_name => "event_name",
    payload => "payload",
    spans => "spans",
    end_time => "end_time",
    duration => "duration",
    status => "status",
    timestamp => "timestamp",
    type_ => "type",
    traces => "traces",
    metadata => "metadata",
    backend => "backend",
    instance_id => "instance_id",
    created_at => "created_at",
    exported_at => "exported_at",
    trace_count => "trace_count",
    active_traces => "active_traces",
    backend_uptime => "backend_uptime",
    events_handled => "events_handled",
    rejected_events => "rejected_events",
    orphaned_events => "orphaned_events",
    evicted_traces => "evicted_traces",
    dropped_spans => "dropped_spans",
    max_traces => "max_traces",
    max_spans_per_trace => "max_spans_per_trace",
    timestamp_precision => "timestamp_precision",
    service_name => "service_name",
    resource_attributes => "resource_attributes",
    sent => "sent",
    error => "error",
    rejected => "rejected",
    otlp_endpoint => "otlp_endpoint",
    otlp_headers => "otlp_headers",
    otlp_protocol => "otlp_protocol",
    otlp_compression => "otlp_compression",
    otlp_timeout => "otlp_timeout",
    otlp_certificate => "otlp_certificate",
    otlp_client_certificate => "otlp_client_certificate",
    otlp_client_key => "otlp_client_key",
    // The lifecycle tracer's runs, stats and settings.
    trace_id => "trace_id",
    span_id => "span_id",
    parent_span_id => "parent_span_id",
    name => "name",
    time => "time",
    attributes => "attributes",
    events => "events",
    links => "links",
    code => "code",
    message => "message",
    end => "end",
    open_runs => "open_runs",
    finished_runs => "finished_runs",
    expired_runs => "expired_runs",
    evicted_runs => "evicted_runs",
    dropped_finished_runs => "dropped_finished_runs",
    events_recorded => "events_recorded",
    events_repeated => "events_repeated",
    events_ignored => "events_ignored",
    events_orphaned => "events_orphaned",
    events_late => "events_late",
    events_dropped => "events_dropped",
    events_refused => "events_refused",
    sampled => "sampled",
    sampled_out => "sampled_out",
    context_restores => "context_restores",
    opentelemetry_context => "opentelemetry_context",
    auto => "auto",
    lifecycle_ttl => "lifecycle_ttl",
    lifecycle_max_open_runs => "lifecycle_max_open_runs",
    lifecycle_max_spans_per_run => "lifecycle_max_spans_per_run",
    lifecycle_max_finished_runs => "lifecycle_max_finished_runs",
    lifecycle_attributes => "lifecycle_attributes",
    attribute_prefix => "attribute_prefix",
    lifecycle_workflow_events => "lifecycle_workflow_events",
    // The background exporter: its settings, values, flush results, stats.
    exporter => "exporter",
    export_schedule_delay => "export_schedule_delay",
    export_max_batch_size => "export_max_batch_size",
    export_timeout => "export_timeout",
    none => "none",
    otlp => "otlp",
    failed => "failed",
    enabled => "enabled",
    running => "running",
    pid => "pid",
    exports => "exports",
    failed_exports => "failed_exports",
    rejected_traces => "rejected_traces",
    rejected_spans => "rejected_spans",
    exported_traces => "exported_traces",
    exported_spans => "exported_spans",
    retries => "retries",
    dropped_traces => "dropped_traces",
    queued => "queued",
    inherited_discarded => "inherited_discarded",
    last_error => "last_error",
    // The connected path's answer: attach a thread span.
    thread_span => "thread_span",
    last_error_at_ns => "last_error_at_ns",
    next_attempt_at_ns => "next_attempt_at_ns",
    tracer_app_waits => "tracer_app_waits",
    tracer_native_locks => "tracer_native_locks",
    store_app_waits => "store_app_waits",
    store_native_locks => "store_native_locks",
    warnings => "warnings",
    // Sampling and the console exporter.
    sample_ratio => "sample_ratio",
    sample_keep_errors => "sample_keep_errors",
    sample_keep_slower_than => "sample_keep_slower_than",
    sample_keep_retried => "sample_keep_retried",
    console_output => "console_output",
    console => "console",
    kept_error_spans => "kept_error_spans",
    kept_slow_spans => "kept_slow_spans",
    kept_retried_spans => "kept_retried_spans",
    // The span limits and the queue size: settings, and what the limits cut.
    attribute_value_length_limit => "attribute_value_length_limit",
    attribute_count_limit => "attribute_count_limit",
    span_attribute_count_limit => "span_attribute_count_limit",
    span_event_count_limit => "span_event_count_limit",
    span_link_count_limit => "span_link_count_limit",
    event_attribute_count_limit => "event_attribute_count_limit",
    link_attribute_count_limit => "link_attribute_count_limit",
    export_max_queue_size => "export_max_queue_size",
    limit_cuts => "limit_cuts",
    attribute_values => "attribute_values",
    span_attributes => "span_attributes",
    span_events => "span_events",
    span_links => "span_links",
    event_attributes => "event_attributes",
    link_attributes => "link_attributes",
}

static SYMS: OnceLock<Syms> = OnceLock::new();

fn syms() -> &'static Syms {
    SYMS.get_or_init(Syms::load)
}

/// The Symbol of a table ID. Not rb-sys's `ID2SYM`, which only computes static
/// symbols: when a name already existed as a dynamic Symbol (`"traces".to_sym`,
/// `%i[]`, JSON `symbolize_names`) before the extension loaded, interning pinned
/// that Symbol and its ID maps back to it only through the VM's lookup. Either
/// way the Symbol lives as long as the process.
pub fn sym(pick: impl FnOnce(&Syms) -> ID) -> VALUE {
    let id = pick(syms());
    // SAFETY: `id` came from rb_intern2, so the VM has a Symbol for it.
    unsafe { rb_sys::rb_id2sym(id) }
}

/// The static Symbol a trace-key field is looked up by.
pub fn key_field_symbol(field: tasker_trace_core::input::backend::KeyField) -> VALUE {
    use tasker_trace_core::input::backend::KeyField;
    sym(|s| match field {
        KeyField::TaskId => s.task_id,
        KeyField::WorkflowStepId => s.workflow_step_id,
        KeyField::Operation => s.operation,
    })
}

/// Ruby IDs of the static Symbols that the core's numbered Symbol names stand
/// for, by number (0 while unknown). Static symbols are immortal and never
/// move, and an ID is a plain integer, so no Ruby object is kept; a name that
/// is a dynamic Symbol is never cached and is looked up each time.
fn numbered_symbol_ids() -> &'static [AtomicU64] {
    static IDS: OnceLock<Box<[AtomicU64]>> = OnceLock::new();
    IDS.get_or_init(|| {
        (0..tasker_trace_core::value::MAX_NUMBERED_SYMBOLS)
            .map(|_| AtomicU64::new(0))
            .collect()
    })
}

/// The Symbol for core Symbol number `n`, when it is known to be static.
pub fn numbered_symbol(n: u32) -> Option<VALUE> {
    let id = numbered_symbol_ids()
        .get(n as usize)?
        .load(Ordering::Relaxed);
    // SAFETY: `id` is the ID of a static Symbol, which the VM keeps forever.
    (id != 0).then(|| unsafe { rb_sys::rb_id2sym(id as ID) })
}

/// Remembers the Symbol found for core Symbol number `n` if it is static.
pub fn remember_numbered_symbol(n: u32, symbol: VALUE) {
    if !rb_sys::STATIC_SYM_P(symbol) {
        return;
    }
    // SAFETY: `symbol` is a static Symbol; taking its ID pins nothing.
    let id = unsafe { rb_sys::rb_sym2id(symbol) };
    if let Some(slot) = numbered_symbol_ids().get(n as usize) {
        slot.store(id as u64, Ordering::Relaxed);
    }
}
