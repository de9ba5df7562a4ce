//! Events waiting to be read, on the plain path (no OpenTelemetry context
//! to answer for): `Native.listen` puts a step event's, or a
//! `task.start_requested`'s, name, payload, clock reading and thread at the
//! end of a Ruby Array that the Ruby layer owns and passes in
//! (`TaskerTraceNative::Lifecycle::PENDING`), and they are read, in order,
//! when any other event arrives (one that may end a run), when
//! [`READ_AT`] wait, and before anything reads or changes the tracer (see
//! `ruby_api::native::lifecycle::read_pending`).
//!
//! Why: a Tasker event arrives after milliseconds of other work, with every
//! cache cold, and reading it is mostly cache misses on code and tables
//! that the next event needs again. Step events and the run's opening
//! events (37 of an order run's 39) are read together, one after the
//! other, while those stay warm.
//!
//! While events wait, the tracer expires idle runs on the clock (an export,
//! the exporter's thread) no further than the oldest of them (see
//! `Tracer::hold_expiry`): a waiting event may be what keeps its run alive,
//! as it would have when it arrived.
//!
//! Nothing here keeps a Ruby value: the Array holds them, Ruby marks them.
//! [`process::pending_state`](crate::process::pending_state) says in which
//! fork generation they were put there (a child drops its parent's: the
//! parent reads its own) and whether a thread of this process is reading
//! them (its reading can run Ruby code, and so let other threads run:
//! they add to the end and leave the reading to it).

use std::sync::atomic::Ordering;

use magnus::Error;
use rb_sys::{ruby_value_type as T, VALUE};
use tasker_trace_core::support::fork::forks;

use crate::process::{lifecycle_tracer, pending_state};

/// Values an event takes in the Array.
const ENTRY: i64 = 4;
/// Waiting events are read when this many wait.
pub const READ_AT: i64 = 64;
/// Past this many waiting (a reader inside Ruby code, another thread
/// publishing fast), an event is read at once instead.
const MAX_WAITING: i64 = 1024;

/// Whether `pending` can hold waiting events: an Array that is not frozen.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn usable(pending: VALUE) -> bool {
    // SAFETY: RB_TYPE and rb_obj_frozen_p only inspect the VALUE's tag bits
    // and header.
    unsafe {
        rb_sys::RB_TYPE(pending) == T::RUBY_T_ARRAY
            && rb_sys::rb_obj_frozen_p(pending) != rb_sys::Qtrue as VALUE
    }
}

/// How many events wait in `pending` (an Array: see [`usable`]).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn waiting(pending: VALUE) -> i64 {
    // SAFETY: `pending` is an Array; its length is read from its header.
    unsafe { rb_sys::RARRAY_LEN(pending) as i64 / ENTRY }
}

/// Whether `pending` holds events to read: a usable Array (see [`usable`])
/// that is not empty.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn any_waiting(pending: VALUE) -> bool {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header; the
    // length is read from an Array's header.
    let filled =
        unsafe { rb_sys::RB_TYPE(pending) == T::RUBY_T_ARRAY && rb_sys::RARRAY_LEN(pending) > 0 };
    filled && usable(pending)
}

/// Whether events were put to wait since every waiting event was last read
/// (what lets the calls that read them first skip looking for the Array).
pub fn pushed() -> bool {
    pending_state().pushed.load(Ordering::Relaxed)
}

/// Whether a thread of this process is reading waiting events (see
/// [`read_all`]): it is inside Ruby code that a payload's conversion ran.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn reading() -> bool {
    pending_state().reading_in.load(Ordering::Relaxed) == forks() + 1
}

/// Puts an event at the end of `pending`: true, or false when it must be
/// read now (too many wait, or a thread token that is not a Fixnum).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn push(pending: VALUE, name: VALUE, payload: VALUE, mono_ns: u64, thread: u64) -> bool {
    forget_parents(pending);
    let (Some(mono), Some(thread)) = (fixnum(mono_ns), fixnum(thread)) else {
        return false;
    };
    let waited = waiting(pending);
    if waited >= MAX_WAITING {
        return false;
    }
    let entry = [name, payload, mono, thread];
    // SAFETY: `pending` is an unfrozen Array; the four VALUEs are live (the
    // two arguments the VM passed, two Fixnums) and copied in at once.
    unsafe { rb_sys::rb_ary_cat(pending, entry.as_ptr(), ENTRY as _) };
    pending_state().pushed.store(true, Ordering::Relaxed);
    if waited == 0 {
        lifecycle_tracer().hold_expiry(Some(mono_ns));
    }
    true
}

/// Empties `pending` when its events were put there before this process
/// was forked (a copy of the parent's, which the parent reads): true then.
fn forget_parents(pending: VALUE) -> bool {
    let state = pending_state();
    let generation = forks();
    if state.pushed_in.load(Ordering::Relaxed) == generation {
        return false;
    }
    // SAFETY: `pending` is an unfrozen Array (see `usable`).
    unsafe { rb_sys::rb_ary_clear(pending) };
    state.pushed_in.store(generation, Ordering::Relaxed);
    state.pushed.store(false, Ordering::Relaxed);
    lifecycle_tracer().hold_expiry(None);
    true
}

/// Reads every waiting event of `pending`, oldest first, with `read(name,
/// payload, mono_ns, thread)`, and removes it. Events added meanwhile (by
/// Ruby code the reading ran, or other threads) are read too. When a thread
/// of this process reads them already, returns at once: that reader reads
/// them. An error from `read` stops the reading: the events not read yet
/// stay, and the error is returned.
pub fn read_all(
    pending: VALUE,
    mut read: impl FnMut(VALUE, VALUE, u64, u64) -> Result<(), Error>,
) -> Result<(), Error> {
    if forget_parents(pending) || reading() {
        return Ok(());
    }
    let state = pending_state();
    state.reading_in.store(forks() + 1, Ordering::Relaxed);
    let _reading = Reading;
    let mut done: i64 = 0;
    let result = loop {
        // SAFETY: `pending` is an Array; only its length is read.
        if done + ENTRY > unsafe { rb_sys::RARRAY_LEN(pending) as i64 } {
            break Ok(());
        }
        // SAFETY: the indexes are below the length just read; rb_ary_entry
        // returns the element (the Array keeps it alive while it is read).
        let at = |i: i64| unsafe { rb_sys::rb_ary_entry(pending, (done + i) as _) };
        let (name, payload, mono, thread) = (at(0), at(1), at(2), at(3));
        done += ENTRY;
        if let (Some(mono), Some(thread)) = (word(mono), word(thread)) {
            if let Err(e) = read(name, payload, mono, thread) {
                break Err(e);
            }
        }
    };
    // No Ruby code ran since the length was last read.
    // SAFETY: `pending` is an unfrozen Array; the slice kept is within it.
    unsafe {
        let len = rb_sys::RARRAY_LEN(pending) as i64;
        if result.is_ok() || done >= len {
            rb_sys::rb_ary_clear(pending);
            state.pushed.store(false, Ordering::Relaxed);
        } else {
            let rest = rb_sys::rb_ary_subseq(pending, done as _, (len - done) as _);
            rb_sys::rb_ary_replace(pending, rest);
        }
    }
    // Runs expire on the clock no further than the oldest event still
    // waiting (it may keep one alive).
    // SAFETY: `pending` is an Array; the entry read is within its length.
    let oldest = (waiting(pending) > 0)
        .then(|| word(unsafe { rb_sys::rb_ary_entry(pending, 2) }))
        .flatten();
    lifecycle_tracer().hold_expiry(oldest);
    result
}

/// This process's reading, over when dropped (a panic included).
struct Reading;

impl Drop for Reading {
    fn drop(&mut self) {
        pending_state().reading_in.store(0, Ordering::Relaxed);
    }
}

/// `n` as a Fixnum, when it is one.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn fixnum(n: u64) -> Option<VALUE> {
    let n = std::os::raw::c_long::try_from(n).ok()?;
    // SAFETY: LONG2FIX only shifts and tags a value FIXABLE said fits.
    rb_sys::FIXABLE(n).then(|| unsafe { rb_sys::LONG2FIX(n) })
}

/// A Fixnum put there by [`push`], back.
fn word(v: VALUE) -> Option<u64> {
    // SAFETY: FIXNUM_P only inspects the tag bits; FIX2LONG reads them.
    (rb_sys::FIXNUM_P(v)).then(|| unsafe { rb_sys::FIX2LONG(v) } as u64)
}
