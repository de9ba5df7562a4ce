//! The extension's global allocator: the system allocator, with every byte
//! allocated or freed reported to Ruby's GC (so a growing store triggers GC
//! the way Ruby's own malloc'd memory does), plus a count of the bytes live
//! right now, which the test hooks read to show that nothing leaks
//! (`TestHooks.native_live_bytes`).
//!
//! The GC is told in steps of at least [`REPORT_BYTES`], not at every
//! allocation: reporting is a call into the VM that reads and writes its
//! heap's counters, and an event allocates and frees a few small values, so
//! per allocation it was a good part of what an event cost with cold caches.
//! What is not yet reported is always under that step.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use rb_sys::tracking_allocator::TrackingAllocator;

/// The GC is told once this many bytes were allocated or freed, net, since
/// it was last told.
pub const REPORT_BYTES: usize = 32 * 1024;

pub struct CountingAllocator {
    live: AtomicIsize,
    unreported: AtomicIsize,
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator {
    live: AtomicIsize::new(0),
    unreported: AtomicIsize::new(0),
};

/// Bytes allocated by this library and not yet freed.
pub fn live_bytes() -> isize {
    ALLOCATOR.live.load(Ordering::Relaxed)
}

impl CountingAllocator {
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    #[inline]
    fn note(&self, delta: isize) {
        self.live.fetch_add(delta, Ordering::Relaxed);
        let pending = self
            .unreported
            .fetch_add(delta, Ordering::Relaxed)
            .wrapping_add(delta);
        if pending.unsigned_abs() >= REPORT_BYTES {
            self.report();
        }
    }

    /// Tells the GC what is pending (rb-sys' call, which does nothing
    /// before the VM has started; it runs no Ruby code and starts no GC).
    #[cold]
    fn report(&self) {
        let taken = self.unreported.swap(0, Ordering::Relaxed);
        if taken != 0 {
            TrackingAllocator::adjust_memory_usage(taken);
        }
    }
}

// SAFETY: every method forwards to the system allocator with the caller's
// arguments unchanged and only adds atomic counter updates (and, past a
// step, a report to the GC that allocates nothing).
unsafe impl GlobalAlloc for CountingAllocator {
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.note(layout.size() as isize);
        }
        p
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) };
        self.note(-(layout.size() as isize));
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.note(new_size as isize - layout.size() as isize);
        }
        p
    }
}
