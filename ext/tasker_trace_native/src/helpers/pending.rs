//! Events waiting to be read, on the plain path (no OpenTelemetry context
//! to answer for), and on the connected path a step event published in a
//! thread whose thread span answers for its attempts (nothing to attach):
//! `Native.listen` puts a step event's, or (plain path) a
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
//! The Array's layout: how many events wait (a Fixnum), then each event's
//! four values. It keeps its length when the events are read (their slots
//! are set to nil, so nothing they held stays alive): Ruby shrinks an
//! Array's buffer when it is cleared, and regrowing it for every run's
//! events cost a reallocation and a copy four times a run.
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

use crate::helpers::errors;
use crate::process::{lifecycle_tracer, pending_state};

/// Values an event takes in the Array.
const ENTRY: i64 = 4;
/// Where the first event's values are (index 0 holds how many wait).
const FIRST: i64 = 1;
/// Waiting events are read when this many wait.
pub const READ_AT: i64 = 64;
/// Past this many waiting, an event is read at once instead, out of order.
/// Only a reader held inside Ruby code (a payload value's `to_s` waiting on
/// IO or a lock) while other threads publish lets more than [`READ_AT`]
/// wait; this bounds what they hold (the Array's slots and the payloads)
/// while keeping the order for as long as a stalled reader can be expected
/// to take: a busy process publishes a few thousand events a second.
const MAX_WAITING: i64 = 16_384;

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

/// How many events wait in `pending` (an Array: see [`usable`]): the count
/// at its start, when the Array holds that many.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn waiting(pending: VALUE) -> i64 {
    // SAFETY: `pending` is an Array; its length is read from its header and
    // index 0 is read only when it is within it.
    let (len, count) = unsafe {
        let len = rb_sys::RARRAY_LEN(pending) as i64;
        (len, (len > 0).then(|| rb_sys::rb_ary_entry(pending, 0)))
    };
    match count.and_then(word) {
        Some(n) if (n as i64) >= 0 && FIRST + (n as i64) * ENTRY <= len => n as i64,
        _ => 0,
    }
}

/// Whether `pending` holds events to read: a usable Array (see [`usable`])
/// that is not empty.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn any_waiting(pending: VALUE) -> bool {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header; the
    // length is read from an Array's header.
    let array = unsafe { rb_sys::RB_TYPE(pending) == T::RUBY_T_ARRAY };
    array && waiting(pending) > 0 && usable(pending)
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

/// Puts an event after the ones waiting in `pending`: how many wait then,
/// or `None` when it must be read now (too many wait, or a thread token
/// that is not a Fixnum).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn push(pending: VALUE, name: VALUE, payload: VALUE, mono_ns: u64, thread: u64) -> Option<i64> {
    forget_parents(pending);
    let (Some(mono), Some(thread)) = (fixnum(mono_ns), fixnum(thread)) else {
        return None;
    };
    let waited = waiting(pending);
    if waited >= MAX_WAITING {
        return None;
    }
    let at = FIRST + waited * ENTRY;
    // SAFETY: `pending` is an unfrozen Array; the VALUEs stored are live
    // (the two arguments the VM passed, Fixnums). rb_ary_store writes in
    // place below the length and grows the Array past it.
    unsafe {
        for (i, value) in [name, payload, mono, thread].into_iter().enumerate() {
            rb_sys::rb_ary_store(pending, (at + i as i64) as _, value);
        }
        rb_sys::rb_ary_store(pending, 0, rb_sys::LONG2FIX((waited + 1) as _));
    }
    pending_state().pushed.store(true, Ordering::Relaxed);
    if waited == 0 {
        lifecycle_tracer().hold_expiry(Some(mono_ns));
    }
    Some(waited + 1)
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
/// payload, mono_ns, thread)`, and removes it, then does the caller's own
/// work, `then`, and returns what it returns. Events added meanwhile (by
/// Ruby code the reading ran, or other threads) are read too. When a thread
/// of this process reads them already, only `then` runs: that reader reads
/// them.
///
/// An error from `read` (an exception that must propagate, or a non-local
/// exit, raised by Ruby code a payload's conversion ran: `read` has counted
/// the event) stops nothing: the events after it are read (each error of
/// theirs is `read`'s to count and is not raised), then `then` runs, told
/// `true` (what it returns is not used), and the first error is returned,
/// to be raised at once (see [`errors::raise_after`]). So an interrupt
/// loses neither the waiting events nor the caller's own.
pub fn read_all<T>(
    pending: VALUE,
    mut read: impl FnMut(VALUE, VALUE, u64, u64) -> Result<(), Error>,
    then: impl FnOnce(bool) -> Result<T, Error>,
) -> Result<T, Error> {
    if forget_parents(pending) || reading() {
        return then(false);
    }
    pending_state()
        .reading_in
        .store(forks() + 1, Ordering::Relaxed);
    let reading = Reading;
    let mut done: i64 = 0;
    match read_from(pending, &mut done, &mut read) {
        Ok(()) => {
            finish(pending, done);
            drop(reading);
            then(false)
        }
        Err(first) => Err(errors::raise_after(first, || {
            while read_from(pending, &mut done, &mut read).is_err() {
                errors::forget_exit();
            }
            finish(pending, done);
            drop(reading);
            if then(true).is_err() {
                errors::forget_exit();
            }
        })),
    }
}

/// Reads the waiting events of `pending` from the `done`th on (see
/// [`read_all`]), counting in `done` those read, until none is left or
/// `read` fails: its error then.
fn read_from(
    pending: VALUE,
    done: &mut i64,
    read: &mut impl FnMut(VALUE, VALUE, u64, u64) -> Result<(), Error>,
) -> Result<(), Error> {
    while *done < waiting(pending) {
        let base = FIRST + *done * ENTRY;
        // SAFETY: the indexes are below the length `waiting` checked;
        // rb_ary_entry returns the element (the Array keeps it alive while
        // it is read).
        let at = |i: i64| unsafe { rb_sys::rb_ary_entry(pending, (base + i) as _) };
        let (name, payload, mono, thread) = (at(0), at(1), at(2), at(3));
        *done += 1;
        if let (Some(mono), Some(thread)) = (word(mono), word(thread)) {
            read(name, payload, mono, thread)?;
        }
    }
    Ok(())
}

/// Removes the first `done` events of `pending`, read (see [`read_all`]),
/// and holds the expiry of runs at the oldest left.
fn finish(pending: VALUE, done: i64) {
    // No Ruby code ran since the count was last read.
    let rest = remove_read(pending, done);
    if rest == 0 {
        pending_state().pushed.store(false, Ordering::Relaxed);
    }
    // Runs expire on the clock no further than the oldest event still
    // waiting (it may keep one alive).
    // SAFETY: `pending` is an Array; the entry read is within its length.
    let oldest = (rest > 0)
        .then(|| word(unsafe { rb_sys::rb_ary_entry(pending, (FIRST + 2) as _) }))
        .flatten();
    lifecycle_tracer().hold_expiry(oldest);
}

/// Removes the first `done` waiting events of `pending`: the ones after
/// them move to the front, the slots left are set to nil, and the count
/// says how many are left, which this returns. The Array keeps its length.
fn remove_read(pending: VALUE, done: i64) -> i64 {
    let waited = waiting(pending);
    let done = done.min(waited);
    let rest = waited - done;
    // SAFETY: `pending` is an unfrozen Array (see `usable`) holding
    // `waited` events (see `waiting`); every index is below its length, and
    // the values moved are the Array's own.
    unsafe {
        for i in 0..rest * ENTRY {
            let value = rb_sys::rb_ary_entry(pending, (FIRST + done * ENTRY + i) as _);
            rb_sys::rb_ary_store(pending, (FIRST + i) as _, value);
        }
        let nil = rb_sys::Qnil as VALUE;
        for i in rest * ENTRY..waited * ENTRY {
            rb_sys::rb_ary_store(pending, (FIRST + i) as _, nil);
        }
        if waited > 0 || rb_sys::RARRAY_LEN(pending) > 0 {
            rb_sys::rb_ary_store(pending, 0, rb_sys::LONG2FIX(rest as _));
        }
    }
    rest
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
