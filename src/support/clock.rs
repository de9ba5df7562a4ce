//! Time: the wall clock for timestamps, the monotonic clock for durations, UTC
//! ISO 8601 formatting, and unique `<seconds>.<fraction>` keys.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::value::{Encoding, Str};

/// A moment as both clocks saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Nanoseconds since the Unix epoch (UTC), from the wall clock.
    pub wall_ns: i64,
    /// Nanoseconds on the process's monotonic clock.
    pub mono_ns: u64,
}

impl Stamp {
    /// Both clocks at once, for the price of one reading: the monotonic clock
    /// is read, and the wall clock is that plus the offset between the two,
    /// read afresh every [`WALL_RESYNC_NS`]. Both clocks run at the same
    /// (NTP-disciplined) rate, so the offset only changes when the wall clock
    /// is stepped; such a step shows in timestamps within that interval.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn now() -> Stamp {
        let mono_ns = monotonic_now_ns();
        let synced = WALL_SYNCED_AT.load(Ordering::Relaxed);
        if synced != 0 && mono_ns.wrapping_sub(synced) < WALL_RESYNC_NS {
            let wall_ns = (mono_ns as i64).saturating_add(WALL_OFFSET.load(Ordering::Relaxed));
            return Stamp { wall_ns, mono_ns };
        }
        let wall_ns = wall_now_ns();
        WALL_OFFSET.store(wall_ns.saturating_sub(mono_ns as i64), Ordering::Relaxed);
        WALL_SYNCED_AT.store(mono_ns.max(1), Ordering::Relaxed);
        Stamp { wall_ns, mono_ns }
    }

    /// The stamp of a monotonic reading `mono_ns` taken earlier in this
    /// process (see [`monotonic_now_ns`]), its wall time from the offset
    /// between the clocks as [`Stamp::now`] last read it.
    pub fn at_mono(mono_ns: u64) -> Stamp {
        let now = Stamp::now();
        let wall_ns = now
            .wall_ns
            .saturating_sub(now.mono_ns.saturating_sub(mono_ns).min(i64::MAX as u64) as i64);
        Stamp { wall_ns, mono_ns }
    }

    /// Seconds from `self` to `later` on the monotonic clock, rounded to 6 decimals.
    pub fn seconds_until(&self, later: &Stamp) -> f64 {
        let ns = later.mono_ns.saturating_sub(self.mono_ns);
        round6(ns as f64 / 1e9)
    }
}

/// How often [`Stamp::now`] reads the wall clock itself (100 ms).
pub const WALL_RESYNC_NS: u64 = 100_000_000;
/// Wall-clock nanoseconds minus monotonic nanoseconds, at the last reading.
static WALL_OFFSET: AtomicI64 = AtomicI64::new(0);
/// Monotonic nanoseconds of the last wall-clock reading (0: never).
static WALL_SYNCED_AT: AtomicU64 = AtomicU64::new(0);

/// Rounds to 6 decimal places (microseconds), as Ruby's `Float#round(6)` does for
/// the magnitudes durations have.
pub fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

pub fn wall_now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn process_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds on the process's monotonic clock: from the CPU's counter
/// where the kernel keeps time with it (see [`super::tsc`]), else (and
/// every 100 ms) from the clock itself. Never goes back.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn monotonic_now_ns() -> u64 {
    if let Some(ns) = super::tsc::read() {
        return ns;
    }
    monotonic_from_clock()
}

#[cold]
fn monotonic_from_clock() -> u64 {
    super::tsc::anchor(|| u64::try_from(process_epoch().elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// Days since 1970-01-01 to a (year, month, day) civil date (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn push_2(out: &mut String, n: u32) {
    out.push((b'0' + (n / 10) as u8) as char);
    out.push((b'0' + (n % 10) as u8) as char);
}

/// Appends `wall_ns` as `YYYY-MM-DDTHH:MM:SS[.fffffffff]Z` with `precision`
/// fractional digits (0–9, clamped), truncating like Ruby's `Time#iso8601(n)`.
pub fn format_iso8601(out: &mut String, wall_ns: i64, precision: u8) {
    let secs = wall_ns.div_euclid(1_000_000_000);
    let nanos = wall_ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        let y = y as u32;
        push_2(out, y / 100);
        push_2(out, y % 100);
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{y:04}");
    }
    out.push('-');
    push_2(out, m);
    out.push('-');
    push_2(out, d);
    out.push('T');
    push_2(out, sod / 3600);
    out.push(':');
    push_2(out, (sod / 60) % 60);
    out.push(':');
    push_2(out, sod % 60);
    let precision = precision.min(9) as u32;
    if precision > 0 {
        out.push('.');
        let mut digits = [b'0'; 9];
        let mut n = nanos;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        for &b in &digits[..precision as usize] {
            out.push(b as char);
        }
    }
    out.push('Z');
}

/// `format_iso8601` into a new String.
pub fn iso8601(wall_ns: i64, precision: u8) -> String {
    let mut s = String::with_capacity(30);
    format_iso8601(&mut s, wall_ns, precision);
    s
}

/// Room for any timestamp `TimestampFormatter::format_into` writes.
pub const STAMP_BUF: usize = 48;

/// Room for the date and time part (`YYYY-MM-DDTHH:MM:SS`, any i64 year).
const PREFIX_BUF: usize = 36;

/// Formats many timestamps, reusing the date and time part while consecutive
/// stamps fall in the same second (exports format thousands of them). It owns
/// no heap memory (no destructor), so it may live in frames that a Ruby
/// exception can unwind past.
#[derive(Clone, Copy)]
pub struct TimestampFormatter {
    precision: u8,
    cached_second: Option<i64>,
    prefix: [u8; PREFIX_BUF],
    prefix_len: usize,
}

impl Default for TimestampFormatter {
    fn default() -> Self {
        Self::new(0)
    }
}

impl TimestampFormatter {
    pub fn new(precision: u8) -> Self {
        TimestampFormatter {
            precision: precision.min(9),
            cached_second: None,
            prefix: [0; PREFIX_BUF],
            prefix_len: 0,
        }
    }

    pub fn format(&mut self, wall_ns: i64) -> String {
        let mut buf = [0u8; STAMP_BUF];
        self.format_into(wall_ns, &mut buf).to_string()
    }

    /// Formats into `buf` and returns the text: no allocation, for callers
    /// that copy the text elsewhere at once.
    pub fn format_into<'b>(&mut self, wall_ns: i64, buf: &'b mut [u8; STAMP_BUF]) -> &'b str {
        let second = wall_ns.div_euclid(1_000_000_000);
        if self.cached_second != Some(second) {
            let mut text = String::with_capacity(PREFIX_BUF);
            format_iso8601(&mut text, second.saturating_mul(1_000_000_000), 0);
            text.pop(); // the 'Z'
            let len = text.len().min(PREFIX_BUF);
            self.prefix[..len].copy_from_slice(&text.as_bytes()[..len]);
            self.prefix_len = len;
            self.cached_second = Some(second);
        }
        let prefix = &self.prefix[..self.prefix_len];
        // A year past 9999 makes the prefix longer; the buffer has room for
        // any i64 year, the fraction and the 'Z'.
        let mut len = prefix.len().min(STAMP_BUF - 11);
        buf[..len].copy_from_slice(&prefix[..len]);
        if self.precision > 0 {
            let mut nanos = wall_ns.rem_euclid(1_000_000_000) as u32;
            let mut digits = [b'0'; 9];
            for slot in digits.iter_mut().rev() {
                *slot = b'0' + (nanos % 10) as u8;
                nanos /= 10;
            }
            buf[len] = b'.';
            len += 1;
            let p = self.precision as usize;
            buf[len..len + p].copy_from_slice(&digits[..p]);
            len += p;
        }
        buf[len] = b'Z';
        len += 1;
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&buf[..len]).unwrap_or("")
    }
}

/// Hands out wall-clock nanosecond instants that are strictly increasing across
/// all threads, so keys built from them never collide even within one clock tick.
#[derive(Debug)]
pub struct UniqueInstants {
    last_ns: AtomicI64,
}

impl Default for UniqueInstants {
    fn default() -> Self {
        UniqueInstants {
            last_ns: AtomicI64::new(i64::MIN),
        }
    }
}

impl UniqueInstants {
    /// The later of `now_ns` and one nanosecond past the last instant handed out.
    pub fn next(&self, now_ns: i64) -> i64 {
        let mut last = self.last_ns.load(Ordering::Relaxed);
        loop {
            let candidate = if now_ns > last {
                now_ns
            } else {
                last.saturating_add(1)
            };
            match self.last_ns.compare_exchange_weak(
                last,
                candidate,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return candidate,
                Err(seen) => last = seen,
            }
        }
    }

    /// [`UniqueInstants::key`] as a UTF-8 [`Str`], written on the stack and
    /// allocated once.
    pub fn key_str(&self, prefix: &str, now_ns: i64) -> Str {
        let ns = self.next(now_ns);
        let mut buf = [0u8; 64];
        let p = prefix.as_bytes();
        let mut len = p.len().min(32);
        buf[..len].copy_from_slice(&p[..len]);
        let secs = ns.div_euclid(1_000_000_000);
        len += crate::support::digits::write_i64(&mut buf[len..], secs);
        buf[len] = b'.';
        len += 1;
        let mut frac = ns.rem_euclid(1_000_000_000) as u32;
        for i in (0..9).rev() {
            buf[len + i] = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        len += 9;
        Str::new(&buf[..len], Encoding::Utf8)
    }

    /// `<prefix><seconds>.<nanoseconds>`, for example `generic_1764071947.123456789`.
    pub fn key(&self, prefix: &str, now_ns: i64) -> String {
        let ns = self.next(now_ns);
        format!(
            "{prefix}{}.{:09}",
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_at_an_earlier_reading_keeps_it_and_the_wall_time_then() {
        let earlier = Stamp::now();
        let again = Stamp::at_mono(earlier.mono_ns);
        assert_eq!(again.mono_ns, earlier.mono_ns);
        // The offset between the clocks moves only by a resync's own error
        // (a thread preempted between its two readings): far below 1 s.
        assert!(
            (again.wall_ns - earlier.wall_ns).abs() < 1_000_000_000,
            "{again:?} {earlier:?}"
        );
        let later = Stamp::now();
        assert!(Stamp::at_mono(later.mono_ns).wall_ns >= again.wall_ns);
    }

    #[test]
    fn readings_follow_the_clock_and_never_go_back_in_a_thread() {
        use crate::support::tsc;
        let mut last = 0;
        let mut from_counter = 0;
        let start = monotonic_now_ns();
        // Deadline loop: at least 300 ms of readings, whatever the load.
        while monotonic_now_ns() - start < 300_000_000 {
            let before = monotonic_now_ns();
            let now = monotonic_now_ns();
            let after = monotonic_now_ns();
            assert!(now >= last, "went back: {now} after {last}");
            // Within a millisecond of the readings around it (the
            // calibration error over an anchor is microseconds at most).
            assert!(
                now + 1_000_000 >= before && now <= after + 1_000_000,
                "{before} {now} {after}"
            );
            last = now;
            if tsc::read().is_some() {
                from_counter += 1;
            }
        }
        if tsc::usable() {
            assert!(from_counter > 0, "the counter was never used");
        }
    }

    #[test]
    fn formats_like_ruby_iso8601() {
        // 2026-11-25T11:59:07Z
        let ns = 1_795_607_947_i64 * 1_000_000_000 + 123_456_789;
        assert_eq!(iso8601(ns, 0), "2026-11-25T11:59:07Z");
        assert_eq!(iso8601(ns, 3), "2026-11-25T11:59:07.123Z");
        assert_eq!(iso8601(ns, 9), "2026-11-25T11:59:07.123456789Z");
        assert_eq!(iso8601(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(-1, 3), "1969-12-31T23:59:59.999Z");
        // leap day
        assert_eq!(
            iso8601(1_709_164_800 * 1_000_000_000, 0),
            "2024-02-29T00:00:00Z"
        );
    }

    #[test]
    fn cached_formatter_matches_plain_formatting() {
        let base = 1_795_607_947_i64 * 1_000_000_000;
        for precision in [0u8, 1, 6, 9] {
            let mut f = TimestampFormatter::new(precision);
            for offset in [0_i64, 5, 999_999_999, 1_000_000_000, 86_400_000_000_000] {
                assert_eq!(f.format(base + offset), iso8601(base + offset, precision));
            }
        }
    }

    #[test]
    fn unique_instants_never_repeat_within_a_tick() {
        let u = UniqueInstants::default();
        let a = u.next(100);
        let b = u.next(100);
        let c = u.next(50);
        assert!(a < b && b < c);
        assert_eq!(u.next(1_000), 1_000);
        assert_eq!(u.key("generic_", 2_000_000_001), "generic_2.000000001");
        assert_eq!(u.key("generic_", 2_000_000_001), "generic_2.000000002");
        assert_eq!(
            u.key_str("trace_", 5_000_000_000).bytes(),
            b"trace_5.000000000"
        );
        assert_eq!(
            UniqueInstants::default()
                .key_str("generic_", -1_500_000_000)
                .bytes(),
            b"generic_-2.500000000"
        );
        let now = 1_795_607_947_123_456_789;
        let plain = UniqueInstants::default();
        let fast = UniqueInstants::default();
        assert_eq!(
            plain.key("generic_", now).as_bytes(),
            fast.key_str("generic_", now).bytes()
        );
    }

    #[test]
    fn unique_instants_are_unique_across_threads() {
        let u = std::sync::Arc::new(UniqueInstants::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let u = u.clone();
                std::thread::spawn(move || (0..10_000).map(|_| u.next(7)).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<i64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        let before = all.len();
        all.dedup();
        assert_eq!(all.len(), before);
    }

    #[test]
    fn stamps_follow_both_clocks() {
        let before = wall_now_ns();
        let a = Stamp::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = Stamp::now();
        let after = wall_now_ns();
        // Within a millisecond of the wall clock read around them.
        assert!(a.wall_ns >= before - 1_000_000 && a.wall_ns <= after + 1_000_000);
        assert!(b.wall_ns >= before - 1_000_000 && b.wall_ns <= after + 1_000_000);
        assert!(b.mono_ns > a.mono_ns && b.wall_ns > a.wall_ns);
    }

    #[test]
    fn durations_round_to_microseconds() {
        let a = Stamp {
            wall_ns: 0,
            mono_ns: 1_000,
        };
        let b = Stamp {
            wall_ns: 0,
            mono_ns: 1_500_001_600,
        };
        assert_eq!(a.seconds_until(&b), 1.500001);
        assert_eq!(b.seconds_until(&a), 0.0);
        assert_eq!(round6(1.23456789), 1.234568);
    }
}
