//! The connected path's questions about the calling thread (see
//! `TaskerTraceNative::ContextListener` and `OpenTelemetrySpan`):
//! `current_attempt`, `thread_span_held`, `context_taken`.

use magnus::rb_sys::AsRawValue;
use magnus::{function, value::ReprValue, Error, RModule, RString, Ruby, Value as RValue};

use crate::helpers::errors::guarded;
use crate::helpers::thread_token;
use crate::process::lifecycle_tracer;
use crate::ruby_api::native::lifecycle::read_pending;
use crate::to_ruby::lifecycle::span_handle;
use crate::to_ruby::values::{array_of, binary_to_ruby, bool_to_ruby, int_to_ruby, nil, wrap};

/// `Native.current_attempt(root, owner = nil)` → the step attempt current
/// in the calling thread (in `owner`, a Thread, when given), as a frozen
/// `[trace_id, span_id, sampled, handle]` (binary ids), or nil when none
/// is; with `root` (a run's root span id, 8 binary bytes), only an attempt
/// of that run. What a thread span, and a run's root span asked in a
/// thread running one of its steps, answer; with `owner`, what a context
/// of the gem's carried into another thread is pinned to there (see
/// `ContextDetachGuard#attach`).
fn current_attempt(ruby: &Ruby, args: &[RValue]) -> Result<RValue, Error> {
    let (root, owner) = match args {
        [root] => (*root, None),
        [root, owner] => (*root, Some(*owner)),
        _ => {
            return Err(Error::new(
                ruby.exception_arg_error(),
                format!(
                    "wrong number of arguments (given {}, expected 1..2)",
                    args.len()
                ),
            ))
        }
    };
    let root = RString::from_value(root).and_then(|s| {
        // SAFETY: the bytes are copied at once, before any Ruby code runs.
        <[u8; 8]>::try_from(unsafe { s.as_slice() }).ok()
    });
    // A Thread's token is its VALUE, as `thread_token::current` makes it.
    let owner = owner
        .filter(|o| o.is_kind_of(ruby.class_thread()))
        .map(|o| o.as_raw());
    // Step events that waited say which attempt is current.
    read_pending(ruby)?;
    let thread = owner.unwrap_or_else(thread_token::current);
    guarded(ruby, || {
        let Some(a) = lifecycle_tracer().attempt_in(thread, root) else {
            return Ok(wrap(nil()));
        };
        let items = [
            binary_to_ruby(&a.trace_id),
            binary_to_ruby(&a.span_id),
            bool_to_ruby(a.sampled),
            int_to_ruby(span_handle(&a.span_id)),
        ];
        let ary = array_of(items.into_iter(), |v| v);
        // SAFETY: freezes the Array just made (nothing else holds it yet).
        Ok(wrap(unsafe { rb_sys::rb_obj_freeze(ary) }))
    })
}

/// `Native.thread_span_held(held)`: the calling thread now holds a thread
/// span (true: attached, or its current span answers for its attempts), or
/// no longer does (false: an app's block took it, or it was released). Its
/// next attempt is answered `:thread_span` when it holds none; while it
/// holds one, its step events wait to be read with the others (see
/// `Native.listen`).
fn thread_span_held(ruby: &Ruby, held: RValue) -> Result<bool, Error> {
    let held = held.as_raw() == rb_sys::Qtrue as rb_sys::VALUE;
    let thread = thread_token::current();
    guarded(ruby, || {
        let queues = lifecycle_tracer().set_thread_span(thread, held);
        thread_token::set_span_held(thread, queues);
        Ok(held)
    })
}

/// `Native.context_taken`: the detach guard saw an app's block take a
/// context of the gem's in the calling thread (see
/// `ContextListener.taken_above`): the root current there is verified when
/// entered again (a run's second `task.start_requested` is then read when
/// it arrives).
fn context_taken(ruby: &Ruby) -> Result<bool, Error> {
    let thread = thread_token::current();
    thread_token::set_root_held(thread, false);
    guarded(ruby, || {
        lifecycle_tracer().context_taken(thread);
        Ok(true)
    })
}

pub fn define(native: RModule) -> Result<(), Error> {
    native.define_module_function("context_taken", function!(context_taken, 0))?;
    native.define_module_function("current_attempt", function!(current_attempt, -1))?;
    native.define_module_function("thread_span_held", function!(thread_span_held, 1))?;
    Ok(())
}
