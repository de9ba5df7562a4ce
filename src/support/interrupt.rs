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
    /// How long this thread's last poll took (the host's lock may be slow
    /// to get back while its other threads are busy).
    static LAST_POLL: Cell<Duration> = const { Cell::new(Duration::ZERO) };
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

/// How long this thread may wait before it polls again, at most `until`:
/// [`POLL_EVERY`], or four times what its last poll took when that was
/// slow, so that polling never takes most of a wait.
pub fn wait_until(until: Instant) -> Instant {
    if has_poll() {
        let every = POLL_EVERY.max(LAST_POLL.with(Cell::get).saturating_mul(4));
        until.min(Instant::now() + every)
    } else {
        until
    }
}

/// Calls this thread's poll: true when an interrupt is pending. Call it
/// with no lock held (the host's poll may wait for the host's own lock).
pub fn poll_due() -> bool {
    let started = Instant::now();
    let due = POLL.with(Cell::get).is_some_and(|poll| poll());
    LAST_POLL.with(|last| last.set(started.elapsed()));
    due
}

/// Whether a poll now would likely end before `deadline`, going by what
/// the last one took: near its deadline, a wait ends at the deadline rather
/// than poll past it.
pub fn poll_fits(deadline: Instant) -> bool {
    has_poll() && deadline.saturating_duration_since(Instant::now()) > LAST_POLL.with(Cell::get)
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

    fn slow() -> bool {
        std::thread::sleep(Duration::from_millis(40));
        false
    }

    #[test]
    fn a_slow_poll_spaces_the_next_ones_and_is_not_started_near_the_deadline() {
        std::thread::spawn(|| {
            with_poll(slow, || {
                assert!(!poll_due());
                let far = Instant::now() + Duration::from_secs(60);
                // At least four times the 40 ms the poll took.
                assert!(wait_until(far) >= Instant::now() + Duration::from_millis(150));
                assert!(poll_fits(far));
                assert!(!poll_fits(Instant::now() + Duration::from_millis(10)));
            });
        })
        .join()
        .unwrap();
    }
}
