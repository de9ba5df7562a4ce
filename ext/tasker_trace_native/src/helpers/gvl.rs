//! Running Rust with the GVL released, so other Ruby threads keep running
//! while this one encodes, waits on the network or waits on a lock.
//!
//! The work and its result must be `Send`: the compiler then refuses any Ruby
//! value (magnus values are `!Send`) in what runs without the GVL. Panics are
//! caught inside the GVL-free section, and no Ruby API is called there.

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::{Error, Ruby};
use tasker_trace_core::support::interrupt;

use crate::helpers::errors::{self, native_error};

/// What a call made without the GVL gave.
pub struct GvlFreeOutcome<R> {
    /// The work's result; `None` when it never ran (an interrupt was pending).
    result: Option<std::thread::Result<R>>,
    /// An exception or interrupt (Thread#raise, #kill, Timeout) that arrived
    /// around the call: raise it once cleanup is done.
    interrupt: Option<Error>,
}

struct Call<F, R> {
    work: Option<F>,
    result: Option<std::thread::Result<R>>,
    /// Set when the call can be interrupted: the core's waits poll it.
    poll: Option<fn() -> bool>,
}

unsafe extern "C" fn run_work<F: FnOnce() -> R, R>(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the `Call` that `without_gvl` keeps on its stack for
    // the whole blocking region; only this thread uses it meanwhile.
    let call = unsafe { &mut *(data as *mut Call<F, R>) };
    if let Some(work) = call.work.take() {
        let poll = call.poll;
        call.result = Some(catch_unwind(AssertUnwindSafe(|| match poll {
            Some(poll) => interrupt::with_poll(poll, work),
            None => work(),
        })));
    }
    std::ptr::null_mut()
}

thread_local! {
    /// The tag of an interrupt the poll took in (0: none): it is raised
    /// again once the GVL-free call has returned and cleaned up.
    static CAUGHT: Cell<c_int> = const { Cell::new(0) };
}

unsafe extern "C" fn check_ints(_: rb_sys::VALUE) -> rb_sys::VALUE {
    // SAFETY: runs with the GVL (inside rb_thread_call_with_gvl) under
    // rb_protect; this frame owns nothing, so a raise may jump over it.
    unsafe { rb_sys::rb_thread_check_ints() };
    rb_sys::Qnil as rb_sys::VALUE
}

unsafe extern "C" fn take_pending(_: *mut c_void) -> *mut c_void {
    let mut state: c_int = 0;
    // SAFETY: called by rb_thread_call_with_gvl on this Ruby thread, with
    // the GVL; rb_protect stops the raise of a pending interrupt here, so
    // that nothing jumps over the Rust frames below the GVL-free call. The
    // exception stays in `$!` (a GC root) until it is raised again.
    unsafe { rb_sys::rb_protect(Some(check_ints), rb_sys::Qnil as rb_sys::VALUE, &mut state) };
    state as isize as *mut c_void
}

/// The interrupt poll of a GVL-free call with an unblocking function: takes
/// the GVL back for a moment and runs the pending interrupts (a signal the
/// process sent itself sets one on the main thread without calling the
/// unblocking function). One that raises is caught, remembered, and raised
/// again after the call has returned; the waits then end as if unblocked.
/// Called by the core's waits with no native lock held.
fn interrupt_pending() -> bool {
    if CAUGHT.with(Cell::get) != 0 {
        return true;
    }
    // SAFETY: this runs on the Ruby thread that released the GVL in
    // `without_gvl` (the poll is thread-local to it); `take_pending`
    // touches no Rust state and never unwinds or jumps out.
    let state =
        unsafe { rb_sys::rb_thread_call_with_gvl(Some(take_pending), std::ptr::null_mut()) };
    let state = state as isize as c_int;
    CAUGHT.with(|c| c.set(state));
    state != 0
}

/// The interrupt the poll caught during the call just ended, raised again
/// (with the GVL) as an error.
fn caught_interrupt() -> Option<Error> {
    let state = CAUGHT.with(|c| c.replace(0));
    (state != 0)
        .then(|| {
            magnus::rb_sys::protect(|| {
                // SAFETY: with the GVL, inside magnus' rb_protect: jumps
                // straight back to it with the tag and `$!` the poll kept.
                unsafe { rb_sys::rb_jump_tag(state) }
            })
            .err()
        })
        .flatten()
}

unsafe extern "C" fn run_unblock<U: Fn()>(data: *mut c_void) {
    // SAFETY: `data` is the `U` that `without_gvl` borrows until the blocking
    // region has ended.
    let unblock = unsafe { &*(data as *const U) };
    // Ruby calls this through C: a panic must not unwind out of it.
    let _ = catch_unwind(AssertUnwindSafe(unblock));
}

/// Runs `work` with the GVL released. `work` must not touch Ruby; its panics
/// are caught inside. `unblock`, when given, is called (from another thread,
/// without the GVL) if Ruby interrupts this thread while `work` runs
/// (Thread#raise, #kill, signals): it must make `work` return soon, and must
/// itself not touch Ruby. With `unblock`, the core's waits inside `work`
/// also check every 50 ms for a pending interrupt and end as if unblocked
/// (see `tasker_trace_core::support::interrupt`).
pub fn without_gvl<F, R, U>(work: F, unblock: Option<&U>) -> GvlFreeOutcome<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
    U: Fn() + Sync,
{
    let mut call = Call {
        work: Some(work),
        result: None,
        poll: unblock
            .is_some()
            .then_some(interrupt_pending as fn() -> bool),
    };
    let data = &mut call as *mut Call<F, R> as *mut c_void;
    let (ubf, ubf_data): (rb_sys::rb_unblock_function_t, *mut c_void) = match unblock {
        Some(u) => (
            Some(run_unblock::<U> as unsafe extern "C" fn(*mut c_void)),
            u as *const U as *mut c_void,
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
            rb_sys::rb_thread_call_without_gvl(Some(run_work::<F, R>), data, ubf, ubf_data);
        }
        rb_sys::Qnil as rb_sys::VALUE
    });
    // An interrupt the poll caught came first: it is the one raised (one
    // raised again at the end of the call, rarer still, is then dropped).
    let interrupt = caught_interrupt().or(protected.err());
    GvlFreeOutcome {
        result: call.result.take(),
        interrupt,
    }
}

/// A stand-in for "no unblocking function", to name `U` when there is none.
pub const NO_UNBLOCK: Option<&fn()> = None;

impl<R> GvlFreeOutcome<R> {
    /// The work's value and any interrupt that arrived around it; a panic
    /// inside the work, or work that never ran, is an error (the interrupt,
    /// when there was one, else `TaskerTraceNative::Error`).
    pub fn finished(self, ruby: &Ruby, what: &str) -> Result<(R, Option<Error>), Error> {
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
