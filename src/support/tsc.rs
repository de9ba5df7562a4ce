//! The monotonic clock read from the CPU's time-stamp counter where the
//! kernel itself keeps time with it.
//!
//! An event arrives after a millisecond or more of other work, so reading
//! the clock through the vDSO costs its code page and its data page, cold:
//! about as much as the rest of a repeated event. The counter is one
//! instruction and touches nothing but the calibration below (one cache
//! line). It is used only on x86-64 when the kernel's clocksource is `tsc`
//! (the kernel checked that it is invariant and synchronized across CPUs;
//! without sysfs, as in a chroot, when the CPU flags it invariant);
//! otherwise, and until calibrated, [`read`] answers `None` and the
//! monotonic clock is read as before.
//!
//! Calibration: an anchor (counter, nanoseconds) and the nanoseconds per
//! tick (32.32 fixed point), measured against the monotonic clock over at
//! least [`CALIBRATE_NS`] and re-anchored every [`REANCHOR_NS`] (so the
//! kernel's rate adjustments are followed within that interval). The
//! counter is read before and after the clock, and a pair whose readings
//! lie more than [`MAX_BRACKET_TICKS`] apart (the thread was preempted
//! between them, as on a busy machine) neither anchors nor calibrates:
//! it would skew the rate by as long as the thread waited. A new anchor is
//! never behind what the old one gives at that moment, so in a thread
//! readings never go back; across threads they agree within the
//! calibration error (nanoseconds to microseconds).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Shortest interval a calibration is measured over.
pub const CALIBRATE_NS: u64 = 10_000_000;
/// How long an anchor is used before the clock is read again.
pub const REANCHOR_NS: u64 = 100_000_000;
/// Most counter ticks between the two counter readings around a clock
/// reading for the three to anchor or calibrate (a few microseconds; the
/// clock's own reading takes well under one).
pub const MAX_BRACKET_TICKS: u64 = 20_000;

/// The anchor, under a sequence lock (odd while being written).
struct Anchor {
    seq: AtomicU64,
    tsc: AtomicU64,
    ns: AtomicU64,
    /// Nanoseconds per tick, 32.32 fixed point; 0 until calibrated.
    mult: AtomicU64,
    /// Ticks the anchor is used for (REANCHOR_NS worth).
    span: AtomicU64,
}

static ANCHOR: Anchor = Anchor::new();

/// 0: not decided yet; 1: usable; 2: not usable.
static USABLE: AtomicU8 = AtomicU8::new(0);

/// Whether the counter is in use (decided at the first reading).
pub fn usable() -> bool {
    USABLE.load(Ordering::Relaxed) == 1
}

/// The monotonic nanoseconds now from the counter, or `None` (read the
/// clock: not usable, not calibrated yet, or the anchor is due).
#[inline]
pub fn read() -> Option<u64> {
    if USABLE.load(Ordering::Relaxed) != 1 {
        return None;
    }
    ANCHOR.read_at(counter()?)
}

/// Reads the clock (`read_clock`, monotonic nanoseconds) between two
/// counter readings: re-anchors, or calibrates, when due; decides once
/// whether the counter is usable. Returns the reading to use (at least
/// what the old anchor gives now).
pub fn anchor(read_clock: impl FnOnce() -> u64) -> u64 {
    match USABLE.load(Ordering::Relaxed) {
        0 => decide(),
        2 => return read_clock(),
        _ => {}
    }
    let Some(before) = counter() else {
        return read_clock();
    };
    let ns = read_clock();
    let Some(after) = counter() else {
        return ns;
    };
    ANCHOR.update(before, ns, after)
}

impl Anchor {
    const fn new() -> Anchor {
        Anchor {
            seq: AtomicU64::new(0),
            tsc: AtomicU64::new(0),
            ns: AtomicU64::new(0),
            mult: AtomicU64::new(0),
            span: AtomicU64::new(0),
        }
    }

    /// The nanoseconds the anchor gives for the counter reading `tsc`, or
    /// `None` (not calibrated, being written, or past its span).
    #[inline]
    fn read_at(&self, tsc: u64) -> Option<u64> {
        let s1 = self.seq.load(Ordering::Acquire);
        let (base_tsc, base_ns, mult, span) = (
            self.tsc.load(Ordering::Relaxed),
            self.ns.load(Ordering::Relaxed),
            self.mult.load(Ordering::Relaxed),
            self.span.load(Ordering::Relaxed),
        );
        if s1 & 1 == 1 || self.seq.load(Ordering::Acquire) != s1 || mult == 0 {
            return None;
        }
        let ticks = tsc.checked_sub(base_tsc)?;
        if ticks >= span {
            return None;
        }
        Some(extrapolate(base_ns, ticks, mult))
    }

    /// The clock read `ns` between the counter readings `before` and
    /// `after`: anchors (and calibrates, once the anchor is old enough)
    /// at their midpoint when they are close enough (see
    /// [`MAX_BRACKET_TICKS`]). Returns the reading to use.
    fn update(&self, before: u64, ns: u64, after: u64) -> u64 {
        let Some(bracket) = after.checked_sub(before) else {
            return ns;
        };
        let tight = bracket <= MAX_BRACKET_TICKS;
        let tsc = before + bracket / 2;
        let s = self.seq.load(Ordering::Acquire);
        if s & 1 == 1
            || self
                .seq
                .compare_exchange(s, s + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            // Another thread re-anchors: the clock's reading stands.
            return ns;
        }
        let (base_tsc, base_ns, mult) = (
            self.tsc.load(Ordering::Relaxed),
            self.ns.load(Ordering::Relaxed),
            self.mult.load(Ordering::Relaxed),
        );
        let mut out = ns;
        let elapsed_ns = ns.saturating_sub(base_ns);
        let ticks = tsc.saturating_sub(base_tsc);
        if base_tsc != 0 && ticks != 0 && mult != 0 {
            // What the old anchor says now: never go back from it.
            out = out.max(extrapolate(base_ns, ticks, mult));
        }
        if !tight {
            // Preempted between the readings: the pair says nothing exact.
        } else if base_tsc == 0 || ticks == 0 {
            self.tsc.store(tsc, Ordering::Relaxed);
            self.ns.store(out, Ordering::Relaxed);
        } else if elapsed_ns >= CALIBRATE_NS {
            let measured = ((u128::from(elapsed_ns) << 32) / u128::from(ticks)) as u64;
            let span = (u128::from(REANCHOR_NS) << 32) / u128::from(measured.max(1));
            self.mult.store(measured, Ordering::Relaxed);
            self.span
                .store(span.min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
            self.tsc.store(tsc, Ordering::Relaxed);
            self.ns.store(out, Ordering::Relaxed);
        }
        self.seq.store(s + 2, Ordering::Release);
        out
    }
}

/// The nanoseconds `ticks` after an anchor at `base_ns`, at `mult`
/// nanoseconds a tick (32.32 fixed point).
#[inline]
fn extrapolate(base_ns: u64, ticks: u64, mult: u64) -> u64 {
    base_ns + ((u128::from(ticks) * u128::from(mult)) >> 32) as u64
}

#[cold]
fn decide() {
    let usable = cfg!(target_arch = "x86_64") && kernel_keeps_time_with_tsc();
    USABLE.store(if usable { 1 } else { 2 }, Ordering::Relaxed);
}

/// The kernel's current clocksource is `tsc`; where sysfs is not mounted (a
/// chroot), the CPU says its counter is invariant (`constant_tsc` and
/// `nonstop_tsc`).
fn kernel_keeps_time_with_tsc() -> bool {
    const SOURCE: &str = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
    if let Ok(source) = std::fs::read_to_string(SOURCE) {
        return source.trim() == "tsc";
    }
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let flags = info.lines().find(|l| l.starts_with("flags"))?.to_owned();
            let has = |f: &str| flags.split_whitespace().any(|w| w == f);
            Some(has("constant_tsc") && has("nonstop_tsc"))
        })
        .unwrap_or(false)
}

#[inline]
fn counter() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC is available on every x86-64 CPU and has no
        // preconditions; it reads a counter and touches no memory.
        Some(unsafe { core::arch::x86_64::_rdtsc() })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 ns a tick: the counter reading and the clock agree.
    const MULT_1: u64 = 1 << 32;

    /// The anchor's counter reading, nanoseconds and rate.
    fn state(a: &Anchor) -> (u64, u64, u64) {
        (
            a.tsc.load(Ordering::Relaxed),
            a.ns.load(Ordering::Relaxed),
            a.mult.load(Ordering::Relaxed),
        )
    }

    /// 20 ms in nanoseconds (and ticks, at 1 ns a tick).
    const LATER: u64 = 20_000_000;

    /// An anchor calibrated at 1 ns a tick from two tight pairs, the second
    /// at counter reading 1_000 + LATER (clock 5_000 + LATER).
    fn calibrated() -> Anchor {
        let a = Anchor::new();
        a.update(1_000, 5_000, 1_000);
        a.update(1_000 + LATER, 5_000 + LATER, 1_000 + LATER);
        a
    }

    #[test]
    fn a_tight_pair_anchors_then_calibrates() {
        let a = Anchor::new();
        assert_eq!(a.update(1_000, 5_000, 1_100), 5_000);
        assert_eq!(a.read_at(2_000), None, "not calibrated yet");
        // 20 ms later, at exactly one tick a nanosecond.
        assert_eq!(
            a.update(1_050 + LATER - 50, 5_000 + LATER, 1_050 + LATER + 50),
            5_000 + LATER
        );
        assert_eq!(a.mult.load(Ordering::Relaxed), MULT_1);
        assert_eq!(
            a.read_at(1_050 + LATER + 1_000),
            Some(5_000 + LATER + 1_000)
        );
    }

    #[test]
    fn a_pair_split_by_a_preemption_neither_anchors_nor_calibrates() {
        let a = calibrated();
        let before = state(&a);
        assert_eq!(before.2, MULT_1);
        // The thread waited 3 ms between the clock and the second counter
        // reading: taken as a pair, the rate would be 7.5% off.
        let (t, ns) = (1_000 + 2 * LATER, 5_000 + 2 * LATER);
        let out = a.update(t, ns, t + 3_000_000);
        assert!(out >= ns);
        assert_eq!(state(&a), before, "the anchor and the rate stay");
        // The first anchor is not taken from such a pair either.
        let fresh = Anchor::new();
        fresh.update(1_000, 5_000, 1_000 + MAX_BRACKET_TICKS + 1);
        assert_eq!(fresh.tsc.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn never_behind_what_the_old_anchor_gives() {
        let a = calibrated();
        // The clock reads 1 µs behind what the anchor extrapolates (at the
        // pair's midpoint), with the pair tight or not: the reading given
        // is the anchor's.
        let t = 1_000 + 2 * LATER;
        let wide = t + MAX_BRACKET_TICKS + 1;
        let at_mid = a.read_at(t + (wide - t) / 2);
        assert_eq!(at_mid, Some(5_000 + 2 * LATER + (wide - t) / 2));
        let extrapolated = at_mid.unwrap_or_default();
        assert_eq!(a.update(t, extrapolated - 1_000, wide), extrapolated);
        let at_t = extrapolated - (wide - t) / 2;
        assert_eq!(a.update(t, at_t - 1_000, t), at_t);
    }
}
