//! Random OTLP trace and span ids.
//!
//! A fast generator seeded from the operating system. It reseeds itself in a
//! forked child, so forked workers never hand out the same ids as their
//! parent or each other.

/// Non-zero random trace ids (16 bytes) and span ids (8 bytes).
pub struct IdGenerator {
    state: u64,
    pid: u32,
    forks: u64,
}

/// The fork count ([`crate::support::fork::forks`]), or `None` when no fork handler
/// could be installed (then the process id is compared instead).
fn forks() -> Option<u64> {
    crate::support::fork::handlers_installed().then(crate::support::fork::forks)
}

fn os_seed() -> u64 {
    let mut buf = [0u8; 8];
    if getrandom::getrandom(&mut buf).is_err() {
        // No OS randomness: fall back to time and address entropy.
        let t = crate::support::clock::wall_now_ns() as u64;
        let addr = &buf as *const _ as u64;
        return t ^ addr.rotate_left(32) ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(buf)
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator {
    pub fn new() -> Self {
        IdGenerator {
            state: os_seed(),
            pid: std::process::id(),
            forks: forks().unwrap_or(0),
        }
    }

    /// splitmix64: passes BigCrush, one add and a few multiplies per draw.
    /// A generator whose ids follow from `seed` alone (tests and the
    /// test hooks: two processes given the same seed make the same ids).
    pub fn seeded(seed: u64) -> Self {
        IdGenerator {
            state: seed,
            ..IdGenerator::new()
        }
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn next_u64(&mut self) -> u64 {
        let forked = match forks() {
            Some(n) if n != self.forks => {
                self.forks = n;
                true
            }
            Some(_) => false,
            None => std::process::id() != self.pid,
        };
        if forked {
            self.pid = std::process::id();
            self.state ^= os_seed();
        }
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn non_zero(&mut self) -> u64 {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v;
            }
        }
    }

    pub fn trace_id(&mut self) -> [u8; 16] {
        let hi = self.non_zero();
        let lo = self.next_u64();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&hi.to_be_bytes());
        id[8..].copy_from_slice(&lo.to_be_bytes());
        id
    }

    pub fn span_id(&mut self) -> [u8; 8] {
        self.non_zero().to_be_bytes()
    }

    pub fn trace_and_span(&mut self) -> ([u8; 16], [u8; 8]) {
        (self.trace_id(), self.span_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_non_zero_and_vary() {
        let mut g = IdGenerator::new();
        let a = g.trace_id();
        let b = g.trace_id();
        assert_ne!(a, [0; 16]);
        assert_ne!(a, b);
        assert_ne!(g.span_id(), [0; 8]);
    }

    #[cfg(unix)]
    #[test]
    fn the_fork_hook_is_installed() {
        let _ = IdGenerator::new();
        assert!(forks().is_some());
    }

    #[test]
    fn two_generators_differ() {
        assert_ne!(IdGenerator::new().trace_id(), IdGenerator::new().trace_id());
    }
}
