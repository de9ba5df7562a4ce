//! The publishing Ruby thread, as a number: what the tracer keeps per
//! thread (its view of the thread's current span, the event it recorded
//! last) is keyed by it.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::LocalKey;

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

/// Bumped whenever what threads hold is forgotten (the context path
/// switched, the tracer reset): a mark made before says nothing.
static SPAN_EPOCH: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The Ruby thread (token) on this native thread that holds a thread
    /// span (see `ContextListener`), and the epoch it was marked in.
    static SPAN_HELD: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Whether the Ruby thread `thread` (the calling one) said it holds a
/// thread span: its step events may then wait to be read (their attempt
/// needs no context). Read without a lock: the mark lives with the native
/// thread, and names the Ruby thread, so another Ruby thread run on it (the
/// thread cache, M:N threads) never matches.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn span_held(thread: u64) -> bool {
    marked(&SPAN_HELD, thread)
}

/// Marks (or unmarks) the calling Ruby thread `thread` as holding a thread
/// span.
pub fn set_span_held(thread: u64, held: bool) {
    mark(&SPAN_HELD, thread, held);
}

thread_local! {
    /// The Ruby thread (token) on this native thread whose current run root
    /// is attached with nothing to verify (see `root_held`), and the epoch
    /// it was marked in.
    static ROOT_HELD: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Whether the Ruby thread `thread` (the calling one) holds a run's root
/// that needs no check when entered again: the detach guard is in place
/// and took none of the gem's contexts in this thread since the root was
/// entered. A run's second `task.start_requested` may then wait to be read.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn root_held(thread: u64) -> bool {
    marked(&ROOT_HELD, thread)
}

/// Marks (or unmarks) the calling Ruby thread `thread` as holding a root
/// that needs no check (see `root_held`).
pub fn set_root_held(thread: u64, held: bool) {
    mark(&ROOT_HELD, thread, held);
}

/// Whether the mark `key` names the Ruby thread `thread`, made since what
/// threads hold was last forgotten.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
#[inline]
fn marked(key: &'static LocalKey<Cell<(u64, u64)>>, thread: u64) -> bool {
    let epoch = SPAN_EPOCH.load(Ordering::Relaxed);
    key.with(|held| held.get() == (thread, epoch))
}

/// Sets the mark `key` to name `thread` now, or to name none.
fn mark(key: &'static LocalKey<Cell<(u64, u64)>>, thread: u64, held: bool) {
    let mark = if held {
        (thread, SPAN_EPOCH.load(Ordering::Relaxed))
    } else {
        (0, 0)
    };
    key.with(|cell| cell.set(mark));
}

/// Forgets every thread's marks.
pub fn forget_spans_held() {
    SPAN_EPOCH.fetch_add(1, Ordering::Relaxed);
}
