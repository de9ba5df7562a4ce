//! The publishing Ruby thread, as a number: what the tracer keeps per
//! thread (its view of the thread's current span, the event it recorded
//! last) is keyed by it.

use rb_sys::VALUE;

/// The calling Ruby thread's Thread object, as a number. Not the OS
/// thread: Ruby runs a new Ruby thread on the native thread of one that
/// has exited (its thread cache), and with M:N threads one OS thread runs
/// many, so an OS thread's identity would let a new thread inherit what
/// was kept for another. A Thread object's slot is reused too, once the
/// object was collected: a new thread allocated there still meets the dead
/// one's view (rarely: a GC must come between, and the new thread's first
/// event must enter the span the dead one entered last). Reads the running
/// thread's own structures, which Ruby keeps hot.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn current() -> u64 {
    // SAFETY: called with the GVL held (from a Ruby method or listener
    // call); rb_thread_current only reads the running thread.
    let thread: VALUE = unsafe { rb_sys::rb_thread_current() };
    thread as u64
}
