//! Lifecycle runs and stats as new Ruby objects (`lifecycle_runs`,
//! `lifecycle_stats`), built from copies taken out of the tracer, with no
//! lock held. Fixed-shape Hashes come from key/value arrays on the stack;
//! Arrays and attribute Hashes are filled element by element, each element
//! on this stack frame until it is stored.
//!
//! A run: `{trace_id: "<32 hex>", task_id: 42 | "abc", end: "completed",
//! spans: [span, ...]}`, the root span first. A span: `{span_id: "<16 hex>",
//! parent_span_id: nil | "<16 hex>", name:, start_time: <Unix ns>,
//! end_time: <Unix ns> | nil, duration: <Float seconds> | nil, status:
//! {code: "OK" | "ERROR" | "UNSET", message: nil | String}, attributes:
//! {"tasker.task_id" => 42, ...}, events: [{name:, time: <Unix ns>,
//! attributes: {...}}], links: [{trace_id:, span_id:}]}`. Times are the
//! OTLP export's own numbers. A structured attribute value is a Hash with
//! String keys or an Array, as deep as it was kept.

use rb_sys::VALUE;
use tasker_trace_core::encode::run_spans::RunClock;
use tasker_trace_core::input::lifecycle::{Attr, AttrValue, Id};
use tasker_trace_core::model::lifecycle::{
    LifecycleStats, Run, Span, SpanChange, SpanEvent, StatusCode,
};

use crate::helpers::static_ids::sym;
use crate::to_ruby::values::{
    array_of, binary_to_ruby, bool_to_ruby, count_to_ruby, float_to_ruby, hash_from_pairs,
    hash_set, int_to_ruby, new_hash, nil, utf8_to_ruby,
};

/// Lowercase hex of an id, as a new String.
fn hex_to_ruby(bytes: &[u8]) -> VALUE {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    let n = bytes.len().min(16);
    for (i, b) in bytes[..n].iter().enumerate() {
        buf[2 * i] = DIGITS[usize::from(b >> 4)];
        buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    // Hex digits are ASCII.
    utf8_to_ruby(std::str::from_utf8(&buf[..2 * n]).unwrap_or_default())
}

fn nanos_to_ruby(ns: u64) -> VALUE {
    int_to_ruby(i64::try_from(ns).unwrap_or(i64::MAX))
}

fn value_to_ruby(v: &AttrValue) -> VALUE {
    match v {
        AttrValue::Int(n) => int_to_ruby(*n),
        AttrValue::Float(x) => float_to_ruby(*x),
        AttrValue::Bool(b) => bool_to_ruby(*b),
        AttrValue::Str(t) => utf8_to_ruby(t),
        AttrValue::Array(items) => array_of(items.iter(), value_to_ruby),
        AttrValue::Map(pairs) => {
            let hash = new_hash(pairs.len());
            for (k, v) in pairs.iter() {
                let key = utf8_to_ruby(k);
                let value = value_to_ruby(v);
                hash_set(hash, key, value);
            }
            hash
        }
    }
}

fn id_to_ruby(id: &Id) -> VALUE {
    match id {
        Id::Int(n) => int_to_ruby(*n),
        Id::Text(s) | Id::Tagged(s) => utf8_to_ruby(s),
    }
}

/// `{"<prefix><key>" => value, ...}`, filled entry by entry (a key met
/// again is left out: the first wins, as in the export). The key is
/// assembled in the new String itself: this runs inside `build_protected`
/// and owns nothing with a destructor.
fn attributes_to_ruby(attrs: &[Attr], prefix: &str) -> VALUE {
    let hash = new_hash(attrs.len());
    for (i, (k, v)) in attrs.iter().enumerate() {
        let name = k.as_str();
        if attrs[..i].iter().any(|(seen, _)| seen.as_str() == name) {
            continue;
        }
        let key = utf8_to_ruby(prefix);
        // SAFETY: appends `name`'s bytes to the String just made (UTF-8
        // onto UTF-8).
        unsafe { rb_sys::rb_str_cat(key, name.as_ptr() as *const _, name.len() as _) };
        let value = value_to_ruby(v);
        hash_set(hash, key, value);
    }
    hash
}

fn event_to_ruby(e: &SpanEvent, clock: &RunClock, prefix: &str) -> VALUE {
    let kv = [
        sym(|s| s.name),
        utf8_to_ruby(e.name.as_str()),
        sym(|s| s.time),
        nanos_to_ruby(clock.nanos(e.at)),
        sym(|s| s.attributes),
        attributes_to_ruby(&e.attributes, prefix),
    ];
    hash_from_pairs(&kv)
}

fn status_to_ruby(span: &Span) -> VALUE {
    let code = match span.status.code {
        StatusCode::Unset => "UNSET",
        StatusCode::Ok => "OK",
        StatusCode::Error => "ERROR",
    };
    let kv = [
        sym(|s| s.code),
        utf8_to_ruby(code),
        sym(|s| s.message),
        span.status
            .message
            .as_ref()
            .map_or_else(nil, |m| utf8_to_ruby(m)),
    ];
    hash_from_pairs(&kv)
}

fn span_to_ruby(span: &Span, clock: &RunClock, prefix: &str) -> VALUE {
    let (start, end) = clock.span_times(span);
    let events = array_of(span.events.iter(), |e| event_to_ruby(e, clock, prefix));
    let links = array_of(span.links.iter(), |l| {
        let kv = [
            sym(|s| s.trace_id),
            hex_to_ruby(&l.trace_id),
            sym(|s| s.span_id),
            hex_to_ruby(&l.span_id),
        ];
        hash_from_pairs(&kv)
    });
    let kv = [
        sym(|s| s.span_id),
        hex_to_ruby(&span.span_id),
        sym(|s| s.parent_span_id),
        span.parent_span_id.map_or_else(nil, |p| hex_to_ruby(&p)),
        sym(|s| s.name),
        utf8_to_ruby(span.name),
        sym(|s| s.start_time),
        nanos_to_ruby(start),
        sym(|s| s.end_time),
        end.map_or_else(nil, nanos_to_ruby),
        sym(|s| s.duration),
        end.map_or_else(nil, |e| float_to_ruby(e.saturating_sub(start) as f64 / 1e9)),
        sym(|s| s.status),
        status_to_ruby(span),
        sym(|s| s.attributes),
        attributes_to_ruby(&span.attributes, prefix),
        sym(|s| s.events),
        events,
        sym(|s| s.links),
        links,
    ];
    hash_from_pairs(&kv)
}

fn run_to_ruby(run: &Run, prefix: &str) -> VALUE {
    let clock = RunClock::new(run);
    let spans = array_of(run.spans.iter(), |span| span_to_ruby(span, &clock, prefix));
    let kv = [
        sym(|s| s.trace_id),
        hex_to_ruby(&run.trace_id),
        sym(|s| s.task_id),
        run.task_id.as_ref().map_or_else(nil, id_to_ruby),
        sym(|s| s.end),
        utf8_to_ruby(run.end.as_str()),
        sym(|s| s.sampled),
        bool_to_ruby(run.sampled),
        sym(|s| s.spans),
        spans,
    ];
    hash_from_pairs(&kv)
}

/// The runs as an Array of Hashes, in the tracer's order.
pub fn runs_to_ruby(runs: &[Run], prefix: &str) -> VALUE {
    array_of(runs.iter(), |run| run_to_ruby(run, prefix))
}

/// `lifecycle_stats`.
pub fn stats_to_ruby(s: &LifecycleStats) -> VALUE {
    let kv = [
        sym(|s| s.open_runs),
        count_to_ruby(s.open_runs),
        sym(|s| s.finished_runs),
        count_to_ruby(s.finished_runs),
        sym(|s| s.expired_runs),
        count_to_ruby(s.runs_expired),
        sym(|s| s.evicted_runs),
        count_to_ruby(s.runs_evicted),
        sym(|s| s.dropped_finished_runs),
        count_to_ruby(s.finished_runs_dropped),
        sym(|s| s.dropped_spans),
        count_to_ruby(s.spans_dropped),
        sym(|s| s.events_recorded),
        count_to_ruby(s.events_recorded),
        sym(|s| s.events_repeated),
        count_to_ruby(s.events_repeated),
        sym(|s| s.events_ignored),
        count_to_ruby(s.events_ignored),
        sym(|s| s.events_orphaned),
        count_to_ruby(s.events_orphaned),
        sym(|s| s.events_late),
        count_to_ruby(s.events_late),
        sym(|s| s.events_dropped),
        count_to_ruby(s.events_dropped),
        sym(|s| s.events_refused),
        count_to_ruby(s.events_refused),
        sym(|s| s.sampled_out),
        count_to_ruby(s.sampled_out),
        sym(|s| s.context_restores),
        count_to_ruby(s.context_restores),
    ];
    hash_from_pairs(&kv)
}

/// What the connected path hands the Ruby listener (see
/// `Native.record_lifecycle_event_connected`), made so that the common
/// answers allocate nothing:
/// - a span entered: a frozen `[trace_id, span_id, sampled, handle,
///   root_handle]`, ids as binary Strings (the OpenTelemetry API's form),
///   with a sixth element, `true`, when `forget`: the thread lets go of
///   runs dropped since it was last told before it enters the span;
/// - an attempt ended: its handle, a positive Integer;
/// - a run ended (with its attempts): minus its root's handle;
/// - either end when `forget`: that Integer alone in an Array (the thread
///   lets go of the dropped runs first).
///
/// See `span_handle`.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn span_change_to_ruby(change: &SpanChange, forget: bool) -> VALUE {
    match change {
        SpanChange::Entered(r) => {
            let items = [
                binary_to_ruby(&r.trace_id),
                binary_to_ruby(&r.span_id),
                bool_to_ruby(r.sampled),
                int_to_ruby(span_handle(&r.span_id)),
                int_to_ruby(span_handle(&r.root_span_id)),
            ];
            let ary = array_of(items.into_iter(), |v| v);
            if forget {
                // SAFETY: appends to the Array just made (nothing else holds it yet).
                unsafe { rb_sys::rb_ary_push(ary, bool_to_ruby(true)) };
            }
            // SAFETY: freezes the Array just made (nothing else holds it yet).
            unsafe { rb_sys::rb_obj_freeze(ary) }
        }
        SpanChange::Ended(r) => ended_to_ruby(span_handle(&r.span_id), forget),
        SpanChange::RunEnded(r) => ended_to_ruby(-span_handle(&r.root_span_id), forget),
    }
}

fn ended_to_ruby(handle: i64, forget: bool) -> VALUE {
    if forget {
        array_of(std::iter::once(handle), int_to_ruby)
    } else {
        int_to_ruby(handle)
    }
}

/// A span's handle in the Ruby layer: its id's top 61 bits plus one, so a
/// positive Integer that is always a Fixnum (nothing allocated, compared
/// without reading memory). Span ids are random, so two open spans share
/// a handle as rarely as two runs share a trace id.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn span_handle(span_id: &[u8; 8]) -> i64 {
    (u64::from_be_bytes(*span_id) >> 3) as i64 + 1
}
