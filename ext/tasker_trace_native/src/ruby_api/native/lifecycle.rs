//! The lifecycle tracer from Ruby: module functions on
//! `TaskerTraceNative::Native` that `lib/tasker_trace_native/lifecycle.rb`
//! wraps.
//!
//! - `record_lifecycle_event(name, payload)` → true / false: one published
//!   event (read by [`crate::from_ruby::lifecycle_convert`], then one short
//!   lock); never raises for its input
//! - `record_lifecycle_event_connected(name, payload, parent, held)` → nil or
//!   the span change (see `span_change_to_ruby`): the same recording, for
//!   the OpenTelemetry context path (see
//!   `lib/tasker_trace_native/context_listener.rb`): the run it opens gets
//!   `parent` (`[trace_id, span_id, sampled]` or nil) and the answer names
//!   the span the event entered or ended (not the one the fiber `held` on
//!   top already); `count_context_restore`
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
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::rb_sys::AsRawValue;
use magnus::{function, Error, Integer, RHash, RModule, RString, Ruby, Value as RValue};
use rb_sys::{ruby_value_type as T, VALUE};
use tasker_trace_core::encode::waterfall::{self, Style};
use tasker_trace_core::input::lifecycle::repeat::RepeatKey;
use tasker_trace_core::input::lifecycle::values::ValueFilter;
use tasker_trace_core::input::lifecycle::SPAN_EVENT_NAMES;
use tasker_trace_core::input::lifecycle::{AttrKey, ParentSpan, KNOWN_EVENT_NAMES};
use tasker_trace_core::input::lifecycle::{EventKind, LifecycleEvent, ToState};
use tasker_trace_core::model::lifecycle::{Answer, SpanChange};
use tasker_trace_core::support::clock::{monotonic_now_ns, Stamp};

use crate::from_ruby::convert::string_slice;
use crate::from_ruby::lifecycle_convert::{self, Read};
use crate::from_ruby::lifecycle_read_plan;
use crate::from_ruby::lifecycle_repeat;
use crate::from_ruby::setting_checks::{boolean_argument, key_name};
use crate::helpers::errors::{self, argument_error, build_protected, guarded, shown};
use crate::helpers::pending;
use crate::helpers::recorder::{recorder_result, Ingested};
use crate::helpers::static_ids;
use crate::helpers::thread_token;
use crate::in_force;
use crate::process::{self, lifecycle_tracer, root_module};
use crate::to_ruby::lifecycle::{runs_to_ruby, span_change_to_ruby, span_handle, stats_to_ruby};
use crate::to_ruby::values::{array_of, int_to_ruby, nil, utf8_to_ruby, wrap};

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn record(ruby: &Ruby, name: VALUE, payload: VALUE, at: Stamp, key: Option<RepeatKey>) -> Ingested {
    read_then(ruby, name, payload, at, |event| {
        process::record(|| lifecycle_tracer().record_keyed(event, key));
    })
}

/// Reads one event, with the environment in force first (the first event
/// may start the exporter: the environment says whether), and hands it to
/// `store`.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn read_then(
    ruby: &Ruby,
    name: VALUE,
    payload: VALUE,
    at: Stamp,
    store: impl FnOnce(LifecycleEvent),
) -> Ingested {
    errors::maybe_injected_panic();
    if let Err(e) = in_force::ensure_environment(ruby) {
        return Ingested::from_error(ruby, e);
    }
    match lifecycle_convert::read_event(ruby, name, payload, at) {
        Ok(Read::Event(event)) => {
            store(event);
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
    record_lifecycle_event_at(ruby, name, payload, Stamp::now())
}

/// `record_lifecycle_event` with its clock reading given (the test hooks
/// replay recorded streams at their recorded times).
pub(crate) fn record_lifecycle_event_at(
    ruby: &Ruby,
    name: RValue,
    payload: RValue,
    at: Stamp,
) -> Result<bool, Error> {
    read_pending_then(ruby, |_| record_keyed_at(ruby, name, payload, at, None))
}

/// `record_lifecycle_event_at`, remembering the event's repeat key.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn record_keyed_at(
    ruby: &Ruby,
    name: RValue,
    payload: RValue,
    at: Stamp,
    key: Option<RepeatKey>,
) -> Result<bool, Error> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        record(ruby, name.as_raw(), payload.as_raw(), at, key)
    }));
    lifecycle_result(ruby, outcome, name)
}

/// What a lifecycle recording returns for how it ended (see
/// `recorder_result`). An event whose reading was cut short by an exception
/// that must propagate (an interrupt, a kill, a `throw` from a value's
/// `to_s`) is counted as refused, so that every event lands in one counter.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn lifecycle_result(
    ruby: &Ruby,
    outcome: std::thread::Result<Ingested>,
    name: RValue,
) -> Result<bool, Error> {
    recorder_result(ruby, outcome, name, "log_lifecycle_error", || {
        lifecycle_tracer().refuse()
    })
}

/// `[trace_id, span_id, sampled]` (binary Strings of 16 and 8 bytes, true
/// or false) as a parent; anything else (nil, other shapes, zero ids) is no
/// parent.
fn read_parent(parent: VALUE) -> Option<ParentSpan> {
    let ary = magnus::RArray::from_value(wrap(parent))?;
    if ary.len() != 3 {
        return None;
    }
    let bytes = |i: isize| -> Option<Vec<u8>> {
        let s = RString::from_value(ary.entry::<RValue>(i).ok()?)?;
        // SAFETY: the bytes are copied at once, before any Ruby code runs.
        Some(unsafe { s.as_slice() }.to_vec())
    };
    let trace_id: [u8; 16] = bytes(0)?.try_into().ok()?;
    let span_id: [u8; 8] = bytes(1)?.try_into().ok()?;
    let sampled = ary.entry::<RValue>(2).ok()?.as_raw() == rb_sys::Qtrue as VALUE;
    ParentSpan::new(trace_id, span_id, sampled)
}

/// A span's handle (see `span_handle`), as the Ruby layer passes it back.
fn read_handle(value: VALUE) -> Option<i64> {
    Integer::from_value(wrap(value)).and_then(|i| i.to_i64().ok())
}

struct Connected {
    parent: VALUE,
    held: VALUE,
    /// An exit raised by a waiting event's reading propagates after this
    /// recording: what the event did is not told (see `record_waited`).
    raising: bool,
}

fn record_connected(
    ruby: &Ruby,
    name: VALUE,
    payload: VALUE,
    args: Connected,
    at: Stamp,
    told: &mut Answer,
) -> Ingested {
    let Connected {
        parent,
        held,
        raising,
    } = args;
    errors::maybe_injected_panic();
    if let Err(e) = in_force::ensure_environment(ruby) {
        return Ingested::from_error(ruby, e);
    }
    let key = lifecycle_repeat::repeat_key(name, payload, thread_token::current());
    match lifecycle_convert::read_event(ruby, name, payload, at) {
        Ok(Read::Event(mut event)) => {
            if parent != rb_sys::Qnil as VALUE {
                event.parent = read_parent(parent);
            }
            let thread = thread_token::current();
            if raising {
                process::record(|| lifecycle_tracer().record_waited(event, key, thread));
                return Ingested::Stored;
            }
            let (_, made, answer) =
                process::record(|| lifecycle_tracer().record_listened(event, key, thread));
            // What the thread's view says, except that a root's change is
            // told whatever the view holds (the Ruby layer recorded it
            // itself). An attempt's is the view's alone: nothing is
            // attached for it (see `ThreadViews`).
            *told = match (made, answer) {
                (Some(SpanChange::Entered(r) | SpanChange::Ended(r)), answer)
                    if r.span_id != r.root_span_id =>
                {
                    answer
                }
                (Some(c), Answer::ForgetThenChange(_)) => Answer::ForgetThenChange(c),
                (Some(c), _) => Answer::Change(c),
                (None, Answer::Settle) => Answer::Settle,
                (None, _) => Answer::Nothing,
            };
            // A root entered here: this thread's step events are read when
            // they arrive again (it is told of runs that end elsewhere).
            if let Answer::Change(SpanChange::Entered(_))
            | Answer::ForgetThenChange(SpanChange::Entered(_)) = told
            {
                thread_token::set_span_held(thread, false);
            }
            note_root(thread, made);
            // The fiber holds this span on top already: nothing to say
            // (but the dropped runs).
            if let Answer::Change(SpanChange::Entered(r)) = told {
                if read_handle(held) == Some(span_handle(&r.span_id)) {
                    *told = Answer::Nothing;
                }
            }
            Ingested::Stored
        }
        Ok(Read::Refused) => Ingested::Refused,
        Err(e) => Ingested::from_error(ruby, e),
    }
}

/// `Native.record_lifecycle_event_connected(name, payload, parent, held)` → nil,
/// 0 (settle: spans ended elsewhere or runs were dropped since the thread
/// was last told), or what the event did (`span_change_to_ruby`): entered a span (a run or
/// attempt opening or merging, the span current in the publishing thread
/// from now on) or ended one (an attempt, or a run with its attempts).
/// Records exactly as `record_lifecycle_event` does; a run it opens is the
/// child of `parent` (`[trace_id, span_id, sampled]`, the current
/// OpenTelemetry span, or nil). `held` is the handle of the span the
/// calling fiber holds on top (or nil): entering it again is not reported.
/// Never raises for its input.
fn record_lifecycle_event_connected(
    ruby: &Ruby,
    name: RValue,
    payload: RValue,
    parent: RValue,
    held: RValue,
) -> Result<RValue, Error> {
    read_pending_then(ruby, |raising| {
        let at = Stamp::now();
        let mut told = Answer::Nothing;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            record_connected(
                ruby,
                name.as_raw(),
                payload.as_raw(),
                Connected {
                    parent: parent.as_raw(),
                    held: held.as_raw(),
                    raising,
                },
                at,
                &mut told,
            )
        }));
        lifecycle_result(ruby, outcome, name)?;
        Ok(wrap(answer_to_ruby(told)))
    })
}

/// Whether the Ruby layer's detach guard is in place (see
/// `set_detach_guard`): without it, every current root entered again is
/// verified, and no root is marked as needing no check.
static GUARDED: AtomicBool = AtomicBool::new(false);

/// What an event recorded in `thread` did to its run roots: a root entered
/// there needs no check when entered again, while the detach guard is in
/// place and takes none of the gem's contexts in that thread (see
/// `thread_token::root_held`); a run ended there holds none.
fn note_root(thread: u64, made: Option<SpanChange>) {
    match made {
        Some(SpanChange::Entered(r)) if r.span_id == r.root_span_id => {
            thread_token::set_root_held(thread, GUARDED.load(Ordering::Relaxed));
        }
        Some(SpanChange::RunEnded(_)) => thread_token::set_root_held(thread, false),
        _ => {}
    }
}

/// `Native.set_detach_guard(guarded)`: whether the Ruby layer's detach
/// guard is in place (`ContextListener.refresh!`), so that it says when an
/// app's block takes a context of the gem's (`context_taken`) and a root
/// entered again is verified only then.
fn set_detach_guard(ruby: &Ruby, on: RValue) -> Result<bool, Error> {
    let on = on.to_bool();
    read_pending(ruby)?;
    GUARDED.store(on, Ordering::Relaxed);
    guarded(ruby, || {
        lifecycle_tracer().set_verify_always(!on);
        Ok(on)
    })
}

/// Which way `listen` goes (see `set_context_path`).
static CONTEXT_PATH: AtomicU8 = AtomicU8::new(PLAIN);
/// Recording only (no OpenTelemetry context).
const PLAIN: u8 = 0;
/// Recorded as `PLAIN`, and answered "settle" so that the Ruby layer
/// releases what a fiber still holds (the path was in use and is switched
/// off).
const RELEASING: u8 = 1;
/// Recorded here, with what the publishing thread must do about its
/// contexts; run-opening events go to the context path (for the parent).
const CONNECTED: u8 = 2;

/// `Native.set_context_path(engaged, enabled)`: the Ruby layer's decision
/// (see `ContextListener.refresh!`). A change makes every thread be told
/// everything again.
fn set_context_path(ruby: &Ruby, engaged: RValue, enabled: RValue) -> Result<bool, Error> {
    read_pending(ruby)?;
    let mode = if enabled.to_bool() {
        CONNECTED
    } else if engaged.to_bool() {
        RELEASING
    } else {
        PLAIN
    };
    if CONTEXT_PATH.swap(mode, Ordering::Relaxed) != mode {
        lifecycle_tracer().forget_threads();
        thread_token::forget_spans_held();
    }
    Ok(mode != PLAIN)
}

/// What `listen` did with an event.
enum Listened {
    /// Recorded, or counted as a repeat of the event before it: nil.
    Done,
    /// Recorded; this for the context path to act on: a change (see
    /// `span_change_to_ruby`) or 0 (settle).
    Answer(VALUE),
    /// For the context path to record: true.
    ToContextPath,
    /// An exception or a non-local exit to raise, once nothing is left to
    /// drop.
    Raise(Error),
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn listened(name: VALUE, payload: VALUE, pending: VALUE) -> Listened {
    let mode = CONTEXT_PATH.load(Ordering::Relaxed);
    let thread = thread_token::current();
    // While a thread of this process reads the waiting events (inside Ruby
    // code a payload's conversion runs), every event waits, so that none is
    // recorded before older ones. On the connected path, a step event
    // waits in a thread whose span answers for its attempts (nothing to
    // attach): the span reads what waits before it answers.
    let waits = match mode {
        PLAIN => may_wait(name) || pending::reading(),
        CONNECTED => {
            thread_token::span_held(thread) && is_step_event(name)
                || thread_token::root_held(thread) && is_root_entered_again(name, payload)
        }
        _ => false,
    };
    if waits && pending::usable(pending) {
        let at = monotonic_now_ns();
        if let Some(waiting) = pending::push(pending, name, payload, at, thread) {
            if waiting < pending::READ_AT {
                return Listened::Done;
            }
            return match read_all_pending(pending, |_| Ok(())) {
                Ok(()) => Listened::Done,
                Err(e) => Listened::Raise(e),
            };
        }
    }
    // Every other event is read after the ones waiting; when the reading
    // raises, it is recorded before the exit propagates.
    if pending::any_waiting(pending) {
        let own = |raising| Ok(listened_now(name, payload, mode, raising));
        return read_all_pending(pending, own).unwrap_or_else(Listened::Raise);
    }
    listened_now(name, payload, mode, false)
}

/// An event `listen` reads when it arrives (see `listened`), in `mode`.
/// `raising`: an exit raised by the waiting events' reading propagates
/// after it, so what the event did is not told (see `record_waited`), and
/// one that may open a run is recorded here, without a parent.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn listened_now(name: VALUE, payload: VALUE, mode: u8, raising: bool) -> Listened {
    let at = Stamp::now();
    let thread = thread_token::current();
    let key = lifecycle_repeat::repeat_key(name, payload, thread);
    if repeated(&key, at) {
        return Listened::Done;
    }
    // SAFETY: called by the VM with the GVL held, on a Ruby thread.
    let ruby = unsafe { Ruby::get_unchecked() };
    if mode == CONNECTED && raising {
        return match record_waited(&ruby, name, payload, at, key, thread) {
            Ok(()) => Listened::Done,
            Err(e) => Listened::Raise(e),
        };
    }
    if mode == CONNECTED {
        return listen_connected(&ruby, name, payload, at, key);
    }
    match record_keyed_at(&ruby, wrap(name), wrap(payload), at, key) {
        Err(e) => Listened::Raise(e),
        Ok(_) if mode == PLAIN => Listened::Done,
        // Releasing: the thread releases what it holds (the Ruby layer
        // does, per fiber).
        Ok(_) => Listened::Answer(SETTLE),
    }
}

/// Whether `name` is a String naming what the plain path leaves waiting
/// (see `pending`): a step event (`step.…`), or `task.start_requested`,
/// which opens a run and never ends one. Events that may end a run (and its
/// late copies, which bring its counts) are read when they arrive, so that
/// a finished run is ready for export without waiting for another event.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn is_step_event(name: VALUE) -> bool {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header; the
    // String's bytes are read at once.
    unsafe { rb_sys::RB_TYPE(name) == T::RUBY_T_STRING && string_slice(name).starts_with(b"step.") }
}

/// Whether `name` and `payload` are a `task.start_requested` that opens no
/// run (no `to_state` of in_progress): in a thread whose root needs no
/// check (see `thread_token::root_held`), the initializer's copy that
/// follows the state machine's, which changes nothing for the thread. The
/// state machine's copy of another run reads the current span now.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn is_root_entered_again(name: VALUE, payload: VALUE) -> bool {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header; the
    // String's bytes are read at once.
    let start = unsafe {
        rb_sys::RB_TYPE(name) == T::RUBY_T_STRING && string_slice(name) == b"task.start_requested"
    };
    start && !lifecycle_convert::opens_run(name, payload)
}

fn may_wait(name: VALUE) -> bool {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header; the
    // String's bytes are read at once.
    unsafe {
        rb_sys::RB_TYPE(name) == T::RUBY_T_STRING && {
            let bytes = string_slice(name);
            bytes.starts_with(b"step.") || bytes == b"task.start_requested"
        }
    }
}

/// Reads the events waiting in `pending`, in order, as `listen` would have
/// read each when it arrived (at its clock reading, in its thread), then
/// does the caller's own work, `then` (see `pending::read_all`: it is told
/// whether an exit raised by the reading propagates after it).
fn read_all_pending<T>(
    pending: VALUE,
    then: impl FnOnce(bool) -> Result<T, Error>,
) -> Result<T, Error> {
    // SAFETY: called with the GVL held, on a Ruby thread.
    let ruby = unsafe { Ruby::get_unchecked() };
    let connected = CONTEXT_PATH.load(Ordering::Relaxed) == CONNECTED;
    let read = |name, payload, mono_ns, thread| {
        let at = Stamp::at_mono(mono_ns);
        let key = lifecycle_repeat::repeat_key(name, payload, thread);
        if repeated(&key, at) {
            return Ok(());
        }
        if connected {
            return record_waited(&ruby, name, payload, at, key, thread);
        }
        record_keyed_at(&ruby, wrap(name), wrap(payload), at, key).map(|_| ())
    };
    pending::read_all(pending, read, then)
}

/// An event that waited on the connected path (a step event whose thread's
/// span answered for its attempts when it arrived, or a run's second
/// `task.start_requested` in a thread whose root needed no check):
/// recorded as `listen` would have recorded it, in its thread, so that the
/// thread's view knows its current attempt. What the view answers is not
/// acted on: what the thread held was right when the event arrived; if an
/// app's block took its thread span since, its next event read when it
/// arrives is answered `:thread_span`, and a thread answered more than
/// nothing here is told everything again at that event (see
/// `Tracer::record_waited`).
fn record_waited(
    ruby: &Ruby,
    name: VALUE,
    payload: VALUE,
    at: Stamp,
    key: Option<RepeatKey>,
    thread: u64,
) -> Result<(), Error> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        read_then(ruby, name, payload, at, |event| {
            process::record(|| lifecycle_tracer().record_waited(event, key, thread));
        })
    }));
    lifecycle_result(ruby, outcome, wrap(name)).map(|_| ())
}

/// Whether the event `key` was read from (at `at`) repeats the one recorded
/// just before it in its thread: then it is counted, and nothing more
/// happens (see `lifecycle_repeat`).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn repeated(key: &Option<RepeatKey>, at: Stamp) -> bool {
    key.as_ref()
        .is_some_and(|key| lifecycle_tracer().repeated(key, at))
}

/// `Native.read_waiting_events` → true: reads the events waiting in
/// `Lifecycle::PENDING` (what `ForkHook` does before a fork).
fn read_waiting_events(ruby: &Ruby) -> Result<bool, Error> {
    read_pending(ruby)?;
    Ok(true)
}

/// Reads the events waiting in `TaskerTraceNative::Lifecycle::PENDING`
/// (see `pending`): what every call that reads or changes the lifecycle
/// tracer does first. Nothing when the Ruby layer is not loaded. An exit
/// raised by the reading propagates after every waiting event is read.
pub(crate) fn read_pending(ruby: &Ruby) -> Result<(), Error> {
    read_pending_then(ruby, |_| Ok(()))
}

/// [`read_pending`], then the caller's own work, `then`, whose result is
/// returned: told `true` when an exit raised by the reading propagates
/// after it (what it returns is then not used), so that an event recorded
/// there is recorded all the same (see `pending::read_all`).
pub(crate) fn read_pending_then<T>(
    ruby: &Ruby,
    then: impl FnOnce(bool) -> Result<T, Error>,
) -> Result<T, Error> {
    if !pending::pushed() {
        return then(false);
    }
    let Ok(pending) = root_module(ruby)
        .and_then(|m| m.const_get::<_, RModule>("Lifecycle"))
        .and_then(|l| l.const_get::<_, RValue>("PENDING"))
    else {
        return then(false);
    };
    let pending = pending.as_raw();
    if !pending::any_waiting(pending) {
        return then(false);
    }
    read_all_pending(pending, then)
}

/// The connected path's recording, in this thread.
struct Answered {
    answer: Answer,
    /// The event may open a run: the context path records it with the
    /// current span as its parent.
    opening: bool,
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn listen_connected(
    ruby: &Ruby,
    name: VALUE,
    payload: VALUE,
    at: Stamp,
    key: Option<RepeatKey>,
) -> Listened {
    // The run's parent is read in Ruby: the context path records it (and
    // reads it, once).
    if lifecycle_convert::opens_run(name, payload) {
        return Listened::ToContextPath;
    }
    let mut answered = Answered {
        answer: Answer::Nothing,
        opening: false,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        record_answered(ruby, name, payload, at, key, &mut answered)
    }));
    if answered.opening {
        return Listened::ToContextPath;
    }
    // A step event read when it arrived in a thread whose span answers
    // for it, and that holds no root: the next ones wait.
    if answered.answer == Answer::Nothing && is_step_event(name) {
        let thread = thread_token::current();
        if lifecycle_tracer().thread_queues(thread) {
            thread_token::set_span_held(thread, true);
        }
    }
    if let Answer::Change(c) | Answer::ForgetThenChange(c) = answered.answer {
        note_root(thread_token::current(), Some(c));
    }
    let recorded = lifecycle_result(ruby, outcome, wrap(name));
    match (recorded, answered.answer) {
        (Err(e), _) => Listened::Raise(e),
        (Ok(_), Answer::Nothing) => Listened::Done,
        (Ok(_), answer) => Listened::Answer(answer_to_ruby(answer)),
    }
}

/// What the Ruby layer is told (see `listen`): nil, 0 (settle), false
/// (verify), `:thread_span` (attach this thread's span), or the change
/// (`span_change_to_ruby`).
fn answer_to_ruby(answer: Answer) -> VALUE {
    match answer {
        Answer::Nothing => rb_sys::Qnil as VALUE,
        Answer::Settle => SETTLE,
        Answer::Verify => rb_sys::Qfalse as VALUE,
        Answer::ThreadSpan => static_ids::sym(|s| s.thread_span),
        Answer::Change(change) => span_change_to_ruby(&change, false),
        Answer::ForgetThenChange(change) => span_change_to_ruby(&change, true),
    }
}

/// What `listen` answers when spans ended elsewhere: the Integer 0.
const SETTLE: VALUE = 1;

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn record_answered(
    ruby: &Ruby,
    name: VALUE,
    payload: VALUE,
    at: Stamp,
    key: Option<RepeatKey>,
    answered: &mut Answered,
) -> Ingested {
    read_then(ruby, name, payload, at, |event| {
        if event.kind() == EventKind::TaskStartRequested && event.to_state == ToState::InProgress {
            answered.opening = true;
            return;
        }
        let thread = thread_token::current();
        answered.answer =
            process::record(|| lifecycle_tracer().record_listened(event, key, thread)).2;
    })
}

/// `Native.listen(name, payload, pending)`: what `Lifecycle::LISTENER`
/// calls for every published event, defined without a wrapper (the one
/// native call an event costs at least). On the plain path a step event or
/// a `task.start_requested` is put in `pending` (`Lifecycle::PENDING`) →
/// nil, and read with the others waiting there before any other event (see
/// `pending`). A step event that
/// repeats the one recorded
/// just before it in the same thread (see `lifecycle_repeat`) is counted
/// and nothing more → nil. Otherwise the event is recorded as
/// `record_lifecycle_event` records it → nil; with the context path in use,
/// with what the publishing thread must do: nil (nothing), 0 (settle: spans
/// ended elsewhere), false (verify: the current span was entered again)
/// or a change as `record_lifecycle_event_connected` returns it; a
/// run-opening event (which needs the current span) → true:
/// the context path records it. Never raises for its input.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
unsafe extern "C" fn listen(_module: VALUE, name: VALUE, payload: VALUE, pending: VALUE) -> VALUE {
    let outcome = catch_unwind(AssertUnwindSafe(|| listened(name, payload, pending)));
    match outcome {
        Ok(Listened::Done) => rb_sys::Qnil as VALUE,
        Ok(Listened::Answer(answer)) => answer,
        Ok(Listened::ToContextPath) => rb_sys::Qtrue as VALUE,
        Ok(Listened::Raise(e)) => errors::raise_from_raw(e),
        // A panic before recording: the context path or the wrapped
        // recorder records it (and counts and logs a failure of its own).
        Err(_) => rb_sys::Qtrue as VALUE,
    }
}

/// `Native.dropped_span_handles(seen)` → nil when no open run was dropped
/// (expired or evicted) after the first `seen` ever dropped; else an Array:
/// how many ever were, then the handles of those runs' roots (the newest
/// 1,024 at most). The connected path lets go of their contexts.
fn dropped_span_handles(ruby: &Ruby, seen: RValue) -> Result<RValue, Error> {
    let seen = Integer::from_value(seen)
        .and_then(|i| i.to_u64().ok())
        .unwrap_or(0);
    guarded(ruby, || {
        let (total, roots) = lifecycle_tracer().dropped_roots_since(seen);
        if total == seen {
            return Ok(wrap(nil()));
        }
        let count = std::iter::once(i64::try_from(total).unwrap_or(i64::MAX));
        let handles = roots.iter().map(span_handle);
        let all: Vec<i64> = count.chain(handles).collect();
        Ok(wrap(array_of(all.into_iter(), int_to_ruby)))
    })
}

/// `Native.count_context_restore`: the Ruby layer restored an app's
/// context above one of its own (counted in `lifecycle_stats`).
fn count_context_restore(ruby: &Ruby) -> Result<bool, Error> {
    guarded(ruby, || {
        lifecycle_tracer().count_context_restore();
        Ok(true)
    })
}

/// `Native.lifecycle_stats` → counters and sizes (idle runs past the TTL are
/// expired first, so `open_runs` counts live ones).
fn lifecycle_stats(ruby: &Ruby) -> Result<RValue, Error> {
    read_pending(ruby)?;
    guarded(ruby, || {
        let t = lifecycle_tracer();
        t.expire_now();
        Ok(wrap(stats_to_ruby(&t.stats())))
    })
}

/// `Native.lifecycle_runs(include_open)` → the runs waiting for export (and
/// the open ones), as plain Hashes; removes nothing.
fn lifecycle_runs(ruby: &Ruby, include_open: RValue) -> Result<RValue, Error> {
    read_pending(ruby)?;
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

/// 32 hexadecimal digits as a trace id.
fn trace_id_from_hex(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        id[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(id)
}

/// `Native.lifecycle_waterfall(trace_id, color)` → the run with that trace
/// id (waiting for export, or open) drawn as the console exporter draws it,
/// or nil when no such run is held.
fn lifecycle_waterfall(ruby: &Ruby, trace_id: RValue, color: RValue) -> Result<RValue, Error> {
    read_pending(ruby)?;
    let color = boolean_argument(ruby, "color", color)?;
    let id = RString::from_value(trace_id)
        .and_then(|s| s.to_string().ok())
        .and_then(|s| trace_id_from_hex(&s))
        .ok_or_else(|| {
            argument_error(
                ruby,
                "trace_id must be a String of 32 hexadecimal digits".to_string(),
            )
        })?;
    guarded(ruby, || {
        let run = lifecycle_tracer()
            .snapshot(true)
            .into_iter()
            .find(|r| r.trace_id == id);
        Ok(wrap(run.map_or_else(nil, |r| {
            let style = Style {
                color,
                ..Style::default()
            };
            utf8_to_ruby(&waterfall::draw(&r, style))
        })))
    })
}

/// `Native.sampler` → the head sampler in force, as OpenTelemetry SDKs
/// describe theirs (`ParentBased{root=TraceIdRatioBased{0.100000}}`);
/// before this process's first use, as the environment would make it now
/// (as `TaskerTraceNative.config` shows the settings).
fn sampler(ruby: &Ruby) -> Result<RValue, Error> {
    guarded(ruby, || {
        let sampling = in_force::current().sampling;
        Ok(wrap(utf8_to_ruby(&sampling.description())))
    })
}

/// `Native.set_default_attribute_prefix(name)`: the prefix's name when the
/// `attribute_prefix` setting is nil (the Ruby layer passes Tasker's
/// telemetry service name); `name` is checked as the setting is.
fn set_default_attribute_prefix(ruby: &Ruby, name: RValue) -> Result<bool, Error> {
    read_pending(ruby)?;
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
    read_pending(ruby)?;
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
    read_pending(ruby)?;
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
    read_pending(ruby)?;
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
    native.define_module_function("set_context_path", function!(set_context_path, 2))?;
    native.define_module_function("set_detach_guard", function!(set_detach_guard, 1))?;
    native.define_module_function("read_waiting_events", function!(read_waiting_events, 0))?;
    // SAFETY: `listen` takes the module and three VALUEs (arity 3), as the
    // VM calls a C function of that arity, and never unwinds.
    unsafe {
        let f: unsafe extern "C" fn(VALUE, VALUE, VALUE, VALUE) -> VALUE = listen;
        rb_sys::rb_define_module_function(
            native.as_raw(),
            c"listen".as_ptr(),
            Some(std::mem::transmute::<
                unsafe extern "C" fn(VALUE, VALUE, VALUE, VALUE) -> VALUE,
                unsafe extern "C" fn() -> VALUE,
            >(f)),
            3,
        );
    }
    native.define_module_function(
        "record_lifecycle_event_connected",
        function!(record_lifecycle_event_connected, 4),
    )?;
    native.define_module_function("count_context_restore", function!(count_context_restore, 0))?;
    native.define_module_function("dropped_span_handles", function!(dropped_span_handles, 1))?;
    native.define_module_function("lifecycle_stats", function!(lifecycle_stats, 0))?;
    native.define_module_function("lifecycle_waterfall", function!(lifecycle_waterfall, 2))?;
    native.define_module_function("sampler", function!(sampler, 0))?;
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
