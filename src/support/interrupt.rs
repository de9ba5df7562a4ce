//! Noticing an interrupt while a caller's thread waits without its
//! runtime's lock. A host (the Ruby binding) sets a poll function for the
//! duration of a blocking call with [`with_poll`]; the core's waits on that
//! thread ([`poll_due`] in their loops) wake at least every [`POLL_EVERY`]
//! and call it. When it reports an interrupt pending, the wait ends as if
//! it had been cancelled. The host's own wake-up (Ruby's unblocking
//! function) still ends a wait at once when the host calls it; the poll
//! covers interrupts that reach the thread without it (a signal the
//! process sends itself).
//!
//! The poll is per thread: threads the core starts never have one.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The longest a waiting thread with a poll goes without calling it.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

thread_local! {
    static POLL: Cell<Option<fn() -> bool>> = const { Cell::new(None) };
}

/// Runs `f` with `poll` as this thread's interrupt poll.
pub fn with_poll<R>(poll: fn() -> bool, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<fn() -> bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            POLL.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(POLL.with(|p| p.replace(Some(poll))));
    f()
}

/// Whether this thread has a poll (its waits then wake every
/// [`POLL_EVERY`]).
pub fn has_poll() -> bool {
    POLL.with(Cell::get).is_some()
}

/// How long this thread may wait before it polls again, at most `until`.
pub fn wait_until(until: Instant) -> Instant {
    if has_poll() {
        until.min(Instant::now() + POLL_EVERY)
    } else {
        until
    }
}

/// Calls this thread's poll: true when an interrupt is pending. Call it
/// with no lock held (the host's poll may wait for the host's own lock).
pub fn poll_due() -> bool {
    POLL.with(Cell::get).is_some_and(|poll| poll())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yes() -> bool {
        true
    }

    #[test]
    fn a_poll_holds_only_inside_with_poll_and_only_on_its_thread() {
        assert!(!poll_due());
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(wait_until(far), far);
        with_poll(yes, || {
            assert!(poll_due());
            assert!(wait_until(far) < far);
            std::thread::spawn(|| assert!(!poll_due())).join().unwrap();
        });
        assert!(!has_poll());
    }
}
