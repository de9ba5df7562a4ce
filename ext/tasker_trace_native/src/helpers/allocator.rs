//! The extension's global allocator: rb-sys's tracking allocator, which
//! reports every byte allocated or freed to Ruby's GC (so a growing store
//! triggers GC the way Ruby's own malloc'd memory does), plus a count of the
//! bytes live right now, which the test hooks read to show that nothing
//! leaks (`TestHooks.native_live_bytes`).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};

use rb_sys::tracking_allocator::TrackingAllocator;

pub struct CountingAllocator {
    inner: TrackingAllocator,
    live: AtomicIsize,
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator {
    inner: TrackingAllocator::new(),
    live: AtomicIsize::new(0),
};

/// Bytes allocated by this library and not yet freed.
pub fn live_bytes() -> isize {
    ALLOCATOR.live.load(Ordering::Relaxed)
}

// SAFETY: every method forwards to the tracking allocator with the caller's
// arguments unchanged and only adds an atomic counter update.
unsafe impl GlobalAlloc for CountingAllocator {
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            self.live
                .fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            self.live
                .fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as given.
        unsafe { self.inner.dealloc(ptr, layout) };
        self.live
            .fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.live.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}
