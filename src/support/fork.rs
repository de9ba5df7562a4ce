//! Fork safety for every native lock.
//!
//! Ruby's `fork` needs only the GVL, while native locks are taken by threads
//! that run without it (an export encoding, a push draining, a background
//! exporter). A child forked while such a thread held a lock would inherit
//! it locked, with no thread left to unlock it: its first event would wait
//! forever. So every process-wide lock is a [`ForkSafeMutex`] registered
//! here, and a `pthread_atfork` handler takes all of them before `fork` (in
//! registration order) and releases them after it, in the parent and in the
//! child. No other thread is then inside any of them while the address space
//! is copied, and the child starts with every lock free and every structure
//! whole.
//!
//! Rules that keep this deadlock-free:
//! - no thread ever holds two registered locks at once (so the order in which
//!   the handler takes them cannot conflict with anyone's);
//! - no Ruby code runs while a registered lock is held (the forking thread
//!   holds the GVL, so a holder must never wait for the GVL).
//!
//! The locks are `std::sync::Mutex`es: their whole state is one word in the
//! mutex itself, and releasing one in the child wakes waiters with a plain
//! system call, with no process-wide wait queue that another thread could
//! have been holding at the moment of the fork.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock, TryLockError};

/// A mutex that a fork never copies while another thread holds it, once
/// registered with [`ForkSafeMutex::register`]. Poisoning is ignored: a
/// panic inside a critical section is caught at the boundary and the data
/// stays usable.
#[derive(Debug, Default)]
pub struct ForkSafeMutex<T> {
    inner: Mutex<T>,
    counts: LockCounts,
}

/// What a lock saw while [`count_lock_waits`] was on (for tests and
/// benchmarks; off, nothing is counted).
#[derive(Debug, Default)]
struct LockCounts {
    /// Acquisitions by the app's threads (any thread not started by the
    /// core) that found the lock held and had to wait.
    app_waits: AtomicU64,
    /// Acquisitions by the core's own threads (the exporter, the push
    /// thread).
    native_locks: AtomicU64,
}

/// A lock's counts: see [`count_lock_waits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockWaits {
    pub app_waits: u64,
    pub native_locks: u64,
}

static COUNTING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set on the threads the core starts ([`crate::support::thread`]).
    static NATIVE: Cell<bool> = const { Cell::new(false) };
}

/// Turns counting on or off for every [`ForkSafeMutex`]: an app thread then
/// tries each lock first and counts a wait when it is held; the core's own
/// threads count their acquisitions. Off (the default), `lock` costs one
/// relaxed load more than a plain mutex.
pub fn count_lock_waits(on: bool) {
    COUNTING.store(on, Ordering::Relaxed);
}

/// Marks the calling thread as one the core started.
pub(crate) fn mark_native_thread() {
    NATIVE.with(|n| n.set(true));
}

impl<T> ForkSafeMutex<T> {
    pub const fn new(value: T) -> Self {
        ForkSafeMutex {
            inner: Mutex::new(value),
            counts: LockCounts {
                app_waits: AtomicU64::new(0),
                native_locks: AtomicU64::new(0),
            },
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        if COUNTING.load(Ordering::Relaxed) {
            return self.lock_counted();
        }
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cold]
    fn lock_counted(&self) -> MutexGuard<'_, T> {
        if NATIVE.with(Cell::get) {
            self.counts.native_locks.fetch_add(1, Ordering::Relaxed);
        } else {
            match self.inner.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    self.counts.app_waits.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What this lock counted so far (cumulative, see [`count_lock_waits`]).
    pub fn lock_waits(&self) -> LockWaits {
        LockWaits {
            app_waits: self.counts.app_waits.load(Ordering::Relaxed),
            native_locks: self.counts.native_locks.load(Ordering::Relaxed),
        }
    }
}

impl<T: Send + 'static> ForkSafeMutex<T> {
    /// Makes this process-wide lock fork-safe. Registering twice is harmless.
    /// Returns false when the registry is full (then the lock is not held over
    /// fork; the registry is sized far beyond the crate's own locks).
    pub fn register(&'static self) -> bool {
        register(self)
    }
}

/// A lock the fork handler can hold over a fork.
trait HeldOverFork: Sync {
    /// Takes the lock; the guard is dropped after the fork.
    fn hold(&'static self) -> Box<dyn Any>;
    fn address(&self) -> usize;
}

impl<T: Send + 'static> HeldOverFork for ForkSafeMutex<T> {
    fn hold(&'static self) -> Box<dyn Any> {
        Box::new(self.lock())
    }

    fn address(&self) -> usize {
        self as *const Self as usize
    }
}

const MAX_LOCKS: usize = 64;

struct Registry {
    locks: [OnceLock<&'static dyn HeldOverFork>; MAX_LOCKS],
    len: AtomicUsize,
}

static REGISTRY: Registry = Registry {
    locks: [const { OnceLock::new() }; MAX_LOCKS],
    len: AtomicUsize::new(0),
};

/// Forks seen in this process's lineage: bumped in the child of every fork.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// The monotonic clock ([`crate::support::clock::monotonic_now_ns`]) read in the child
/// of the latest fork, as the child's first act: everything stamped before it
/// happened in an ancestor.
static FORKED_AT_NS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The guards the prepare handler took, on the forking thread (which is
    /// also the child's only thread).
    static HELD: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

static INSTALL: Once = Once::new();

fn register(lock: &'static dyn HeldOverFork) -> bool {
    install_handlers();
    let len = REGISTRY.len.load(Ordering::Acquire).min(MAX_LOCKS);
    if REGISTRY.locks[..len]
        .iter()
        .filter_map(OnceLock::get)
        .any(|l| l.address() == lock.address())
    {
        return true;
    }
    let slot = REGISTRY.len.fetch_add(1, Ordering::AcqRel);
    match REGISTRY.locks.get(slot) {
        Some(cell) => cell.set(lock).is_ok(),
        None => false,
    }
}

/// How many forks this process descends through (0 in the original process):
/// a cheap way for a structure to notice that it now lives in a child.
pub fn forks() -> u64 {
    install_handlers();
    FORKS.load(Ordering::Acquire)
}

/// Counters a fork child inherited: totals kept for the life of the
/// process image (its ancestors' counts included), of which a child
/// reports its own. The first [`own`](Self::own) in a process takes the
/// totals it is given as its ancestors' (callers make it early: the
/// exporter's start, else the first look at the statistics).
#[derive(Debug)]
pub struct Inherited<const N: usize> {
    /// The fork generation + 1 the totals were taken in; 0: never.
    taken_in: AtomicU64,
    totals: [AtomicU64; N],
}

impl<const N: usize> Default for Inherited<N> {
    fn default() -> Self {
        Inherited::new()
    }
}

impl<const N: usize> Inherited<N> {
    pub const fn new() -> Inherited<N> {
        Inherited {
            taken_in: AtomicU64::new(0),
            totals: [const { AtomicU64::new(0) }; N],
        }
    }

    /// This process's part of `totals` (the counts since the first process
    /// began). In the original process, `totals` themselves.
    pub fn own(&self, totals: [u64; N]) -> [u64; N] {
        let generation = forks();
        if generation == 0 {
            return totals;
        }
        if self.taken_in.load(Ordering::Acquire) != generation + 1 {
            for (kept, total) in self.totals.iter().zip(totals) {
                kept.store(total, Ordering::Relaxed);
            }
            self.taken_in.store(generation + 1, Ordering::Release);
        }
        std::array::from_fn(|i| totals[i].saturating_sub(self.totals[i].load(Ordering::Relaxed)))
    }
}

/// When this process was forked, on the monotonic clock the records are
/// stamped with; `None` in the original process. A stamp at or before it
/// was taken in an ancestor (the forking thread cannot be inside an event
/// while it forks, and no other thread survives the fork).
pub fn forked_at_ns() -> Option<u64> {
    (forks() > 0).then(|| FORKED_AT_NS.load(Ordering::Acquire))
}

/// Whether the handlers are in place (false only where `pthread_atfork`
/// failed or does not exist).
pub fn handlers_installed() -> bool {
    install_handlers();
    INSTALLED.load(Ordering::Acquire) == 1
}

static INSTALLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn before_fork() {
    let len = REGISTRY.len.load(Ordering::Acquire).min(MAX_LOCKS);
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        for lock in REGISTRY.locks[..len].iter().filter_map(OnceLock::get) {
            held.push(lock.hold());
        }
    });
}

fn release_all() {
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        while let Some(guard) = held.pop() {
            drop(guard);
        }
    });
}

extern "C" fn after_fork_in_parent() {
    release_all();
}

extern "C" fn after_fork_in_child() {
    // A clock read (clock_gettime): nothing here waits or allocates once the
    // clock's epoch is set, which the parent did with its first stamp.
    FORKED_AT_NS.store(crate::support::clock::monotonic_now_ns(), Ordering::Release);
    FORKS.fetch_add(1, Ordering::AcqRel);
    release_all();
}

#[cfg(unix)]
fn install_handlers() {
    INSTALL.call_once(|| {
        extern "C" {
            fn pthread_atfork(
                prepare: Option<extern "C" fn()>,
                parent: Option<extern "C" fn()>,
                child: Option<extern "C" fn()>,
            ) -> std::os::raw::c_int;
        }
        // SAFETY: registers three handlers that only take and release this
        // module's mutexes and bump an atomic counter; they call no foreign
        // runtime and start no thread.
        let ok = unsafe {
            pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        } == 0;
        INSTALLED.store(usize::from(ok), Ordering::Release);
    });
}

#[cfg(not(unix))]
fn install_handlers() {
    INSTALL.call_once(|| {});
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Counting sees an app thread that waits for a held lock, and not one
    /// that finds it free; the core's threads count their acquisitions.
    #[test]
    fn counting_sees_app_waits_and_native_locks() {
        static LOCK: ForkSafeMutex<u8> = ForkSafeMutex::new(0);
        count_lock_waits(true);
        drop(LOCK.lock());
        assert_eq!(LOCK.lock_waits(), LockWaits::default());
        let held = LOCK.lock();
        let waiter = std::thread::spawn(|| drop(LOCK.lock()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while LOCK.lock_waits().app_waits == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(held);
        waiter.join().unwrap();
        assert_eq!(LOCK.lock_waits().app_waits, 1);
        std::thread::spawn(|| {
            mark_native_thread();
            drop(LOCK.lock());
        })
        .join()
        .unwrap();
        assert_eq!(
            LOCK.lock_waits(),
            LockWaits {
                app_waits: 1,
                native_locks: 1
            }
        );
    }

    extern "C" {
        fn fork() -> i32;
        fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
        fn _exit(code: i32) -> !;
        fn kill(pid: i32, signal: i32) -> i32;
    }

    static SHARED: ForkSafeMutex<u64> = ForkSafeMutex::new(0);

    /// A child forked while other threads hammer the lock can always take it:
    /// hundreds of forks, each child with a deadline.
    #[test]
    fn a_child_never_inherits_a_held_lock() {
        assert!(SHARED.register());
        assert!(SHARED.register(), "registering twice is harmless");
        assert!(handlers_installed());
        let stop = Arc::new(AtomicBool::new(false));
        let hammers: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let mut n = SHARED.lock();
                        *n += 1;
                        // Hold it a little, as a drain or an encode would.
                        for _ in 0..200 {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        let forks_before = forks();
        for _ in 0..300 {
            // SAFETY: the child only takes a lock, writes an integer and
            // leaves with _exit, running no destructor or atexit handler.
            let pid = unsafe { fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let took = Instant::now();
                *SHARED.lock() += 1;
                let code = if forks() == forks_before + 1 && took.elapsed() < Duration::from_secs(5)
                {
                    0
                } else {
                    3
                };
                // SAFETY: leaves the child at once.
                unsafe { _exit(code) };
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut status = 0;
            loop {
                // SAFETY: waits for the child just forked, without blocking (WNOHANG = 1).
                let r = unsafe { waitpid(pid, &mut status, 1) };
                if r == pid {
                    break;
                }
                if Instant::now() >= deadline {
                    // SAFETY: ends the hung child (SIGKILL = 9) so it holds
                    // no pipe of the test runner open.
                    unsafe { kill(pid, 9) };
                    panic!("child {pid} hung on an inherited lock");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(status, 0, "child exited with status {status}");
        }
        stop.store(true, Ordering::Relaxed);
        for h in hammers {
            h.join().unwrap();
        }
        assert_eq!(forks(), forks_before, "the parent's fork count never moves");
    }
}
