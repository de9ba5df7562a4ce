//! Decimal digits written into a caller's buffer, so keys can be built on the
//! stack and allocated once at their exact size.

/// The most bytes a number written here takes: a sign and 20 digits.
pub const MAX_LEN: usize = 21;

/// Writes `n` in decimal at the start of `buf` and returns how many bytes it
/// wrote. `buf` needs 20 bytes at most.
pub fn write_u64(buf: &mut [u8], mut n: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let tail = &digits[at..];
    buf[..tail.len()].copy_from_slice(tail);
    tail.len()
}

/// Writes `n` in decimal (with a leading `-` when negative) at the start of
/// `buf` and returns how many bytes it wrote. `buf` needs [`MAX_LEN`] bytes
/// at most.
pub fn write_i64(buf: &mut [u8], n: i64) -> usize {
    write_signed(buf, n < 0, n.unsigned_abs())
}

/// Writes a sign (when `negative`) and `magnitude` in decimal.
pub fn write_signed(buf: &mut [u8], negative: bool, magnitude: u64) -> usize {
    if negative {
        buf[0] = b'-';
        1 + write_u64(&mut buf[1..], magnitude)
    } else {
        write_u64(buf, magnitude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: i64) -> String {
        let mut buf = [0u8; MAX_LEN];
        let len = write_i64(&mut buf, n);
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }

    #[test]
    fn matches_to_string_at_the_edges() {
        for n in [0, 7, -7, 10, 99, -100, 1_795_607_947, i64::MAX, i64::MIN] {
            assert_eq!(s(n), n.to_string());
        }
        let mut buf = [0u8; MAX_LEN];
        let len = write_u64(&mut buf, u64::MAX);
        assert_eq!(&buf[..len], u64::MAX.to_string().as_bytes());
    }
}
