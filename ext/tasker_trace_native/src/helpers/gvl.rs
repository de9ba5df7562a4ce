//! Running Rust with the GVL released, so other Ruby threads keep running
//! while this one encodes, waits on the network or waits on a lock.
//!
//! The work and its result must be `Send`: the compiler then refuses any Ruby
//! value (magnus values are `!Send`) in what runs without the GVL. Panics are
//! caught inside the GVL-free section, and no Ruby API is called there.

use std::ffi::c_void;
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

unsafe extern "C" fn check_pending(_: *mut c_void) -> *mut c_void {
    // SAFETY: called by rb_thread_call_with_gvl on a Ruby thread holding the
    // GVL; neither call raises or allocates a Ruby object.
    let pending = unsafe { rb_sys::rb_thread_interrupted(rb_sys::rb_thread_current()) } != 0;
    usize::from(pending) as *mut c_void
}

/// The interrupt poll of a GVL-free call with an unblocking function: takes
/// the GVL back for a moment and asks whether an interrupt is pending for
/// this thread (a signal the process sent itself sets one on the main
/// thread without calling the unblocking function). Called by the core's
/// waits with no native lock held.
fn interrupt_pending() -> bool {
    // SAFETY: this runs on the Ruby thread that released the GVL in
    // `without_gvl` (the poll is thread-local to it); `check_pending`
    // touches no Rust state and cannot unwind.
    unsafe {
        rb_sys::rb_thread_call_with_gvl(Some(check_pending), std::ptr::null_mut()) as usize != 0
    }
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
    GvlFreeOutcome {
        result: call.result.take(),
        interrupt: protected.err(),
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
