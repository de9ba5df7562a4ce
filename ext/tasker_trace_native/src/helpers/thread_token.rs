//! The publishing Ruby thread, as a number: what the tracer keeps per
//! thread (its view of the thread's current span, the event it recorded
//! last) is keyed by it.

use std::sync::atomic::{AtomicU64, Ordering};

use rb_sys::VALUE;
use tasker_trace_core::support::fork::forks;

use crate::process::{thread_marks, ThreadMark, THREAD_MARK_SLOTS};

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

/// Which of a thread's marks (see `process::thread_marks`).
#[derive(Clone, Copy)]
enum Mark {
    /// It holds a thread span (see `span_held`).
    Span,
    /// It holds a run's root that needs no check (see `root_held`).
    Root,
}

/// Whether the Ruby thread `thread` (the calling one) said it holds a
/// thread span: its step events may then wait to be read (their attempt
/// needs no context). The mark names the Ruby thread, so another thread
/// that meets its slot never matches.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn span_held(thread: u64) -> bool {
    marked(Mark::Span, thread)
}

/// Marks (or unmarks) the calling Ruby thread `thread` as holding a thread
/// span.
pub fn set_span_held(thread: u64, held: bool) {
    mark(Mark::Span, thread, held);
}

/// Whether the Ruby thread `thread` (the calling one) holds a run's root
/// that needs no check when entered again: the detach guard is in place
/// and took none of the gem's contexts in this thread since the root was
/// entered. A run's second `task.start_requested` may then wait to be read.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn root_held(thread: u64) -> bool {
    marked(Mark::Root, thread)
}

/// Marks (or unmarks) the calling Ruby thread `thread` as holding a root
/// that needs no check (see `root_held`).
pub fn set_root_held(thread: u64, held: bool) {
    mark(Mark::Root, thread, held);
}

/// What a mark made now is stamped with: the epoch, and the fork
/// generation (a child forgets every mark: its parent's other threads are
/// gone, and a new thread may reuse one's slot; its forking thread marks
/// itself again at its next event read on arrival). Never 0.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
#[inline]
fn stamp() -> u64 {
    (forks() << 40) | (SPAN_EPOCH.load(Ordering::Relaxed) & ((1 << 40) - 1)) | 1 << 63
}

/// The slot of the thread `thread` in the marks' table.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
#[inline]
fn slot(thread: u64) -> &'static ThreadMark {
    let at =
        thread.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - THREAD_MARK_SLOTS.trailing_zeros());
    &thread_marks().slots[at as usize % THREAD_MARK_SLOTS]
}

fn stamp_of(slot: &ThreadMark, mark: Mark) -> &AtomicU64 {
    match mark {
        Mark::Span => &slot.span,
        Mark::Root => &slot.root,
    }
}

/// Whether the mark `mark` names the Ruby thread `thread`, made since what
/// threads hold was last forgotten.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
#[inline]
fn marked(mark: Mark, thread: u64) -> bool {
    let slot = slot(thread);
    slot.thread.load(Ordering::Relaxed) == thread
        && stamp_of(slot, mark).load(Ordering::Relaxed) == stamp()
}

/// Sets the mark `mark` to name `thread` now, or to name none. A thread
/// that takes over another's slot clears the other's marks.
fn mark(mark: Mark, thread: u64, held: bool) {
    let slot = slot(thread);
    if slot.thread.load(Ordering::Relaxed) != thread {
        if !held {
            return;
        }
        slot.span.store(0, Ordering::Relaxed);
        slot.root.store(0, Ordering::Relaxed);
        slot.thread.store(thread, Ordering::Relaxed);
    }
    let value = if held { stamp() } else { 0 };
    stamp_of(slot, mark).store(value, Ordering::Relaxed);
}

/// Forgets every thread's marks.
pub fn forget_spans_held() {
    SPAN_EPOCH.fetch_add(1, Ordering::Relaxed);
}
