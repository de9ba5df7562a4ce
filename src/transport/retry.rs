//! When to try again: the statuses worth retrying, exponential backoff with
//! jitter, `Retry-After` (seconds or an HTTP-date), and [`Cancel`], which
//! lets another thread end a push's waiting at once, mid-request included.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::interrupt;

/// Statuses that mean "try again later"; every other one ends the push.
pub const RETRYABLE_STATUSES: [u16; 4] = [429, 502, 503, 504];

/// First backoff delay; it doubles each attempt up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Lets another thread stop a push: the wait for a request on the wire (on
/// the push thread, see [`PushSender`](super::PushSender)) and a pending
/// backoff wait end at once, and no further attempt starts.
///
/// A `Cancel` is made on the thread that waits; [`cancel`](Cancel::cancel)
/// wakes that thread and the thread sending for it.
#[derive(Debug)]
pub struct Cancel {
    shared: Arc<CancelShared>,
}

#[derive(Debug)]
struct CancelShared {
    cancelled: AtomicBool,
    waiter: Thread,
    /// The worker thread of the request in flight, if any.
    worker: Mutex<Option<Thread>>,
}

impl Cancel {
    /// A token for the current thread, which is the one that will wait.
    pub fn for_current_thread() -> Cancel {
        Cancel {
            shared: Arc::new(CancelShared {
                cancelled: AtomicBool::new(false),
                waiter: std::thread::current(),
                worker: Mutex::new(None),
            }),
        }
    }

    /// Cancels; callable from any thread, never blocks (it may run in
    /// Ruby's unblocking function).
    pub fn cancel(&self) {
        let s = &self.shared;
        s.cancelled.store(true, Ordering::SeqCst);
        s.waiter.unpark();
        // `try_lock`: never wait here. When the slot is busy, the worker is
        // registering itself and checks the flag (set above) before it
        // sleeps, so no wake-up is lost.
        if let Ok(worker) = s.worker.try_lock() {
            if let Some(t) = worker.as_ref() {
                t.unpark();
            }
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// The same token, to hand to a worker thread.
    pub(super) fn share(&self) -> Cancel {
        Cancel {
            shared: self.shared.clone(),
        }
    }

    /// Called on a worker thread: [`cancel`](Cancel::cancel) wakes it too.
    pub(super) fn register_worker(&self) {
        *self
            .shared
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::thread::current());
    }

    /// Wakes the waiting thread: a worker's result is ready, or (what the
    /// host's unblocking function calls, from any thread, never blocking)
    /// it is to ask its interrupt poll (see [`interrupt`]) whether to
    /// cancel. The host also wakes a thread with nothing to act on (a
    /// signal whose handler raises nothing); the poll then says no, and the
    /// push goes on.
    pub fn wake_waiter(&self) {
        self.shared.waiter.unpark();
    }

    /// Sleeps until `until` or cancellation; true when cancelled.
    pub(super) fn sleep_until(&self, until: Instant) -> bool {
        loop {
            if self.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            let wake = interrupt::wait_until(until);
            std::thread::park_timeout(wake.saturating_duration_since(now));
            if interrupt::poll_due() {
                self.cancel();
            }
        }
    }
}

/// The delay before attempt `attempt + 1` (attempt counts from 1): doubling
/// from [`INITIAL_BACKOFF`], capped at [`MAX_BACKOFF`], scaled by `jitter` in
/// `[0.5, 1.0]` so that many processes do not retry in step.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let base = INITIAL_BACKOFF.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
    base.mul_f64(jitter.clamp(0.5, 1.0))
}

/// The delay before attempt `attempt + 1` after a retryable status: what
/// `Retry-After` asks, but never less than [`backoff`] (a collector that
/// answers `Retry-After: 0` to every request is not retried in a tight
/// loop).
pub fn retry_wait(retry_after: Option<Duration>, attempt: u32, jitter: f64) -> Duration {
    let own = backoff(attempt, jitter);
    retry_after.map_or(own, |asked| asked.max(own))
}

/// A `Retry-After` value: delay-seconds, or an HTTP-date (IMF-fixdate)
/// compared with `now`. `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(v)?;
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(Duration::from_secs(
        u64::try_from(at - now_secs).unwrap_or(0),
    ))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` to seconds since the epoch.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let mut parts = s.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u32 = parts.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month_name = parts.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))? as u32
        + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let sec: i64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A small random number in `[0.5, 1.0]` for jitter; quality does not matter.
pub fn jitter() -> f64 {
    let mut seed = [0u8; 8];
    if getrandom::getrandom(&mut seed).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        seed = (u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    let z = u64::from_le_bytes(seed);
    0.5 + (z % 1_000_001) as f64 / 2_000_000.0
}
