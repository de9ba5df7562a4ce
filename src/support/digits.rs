//! Decimal digits written into a caller's buffer, so keys and encoded numbers
//! can be built on the stack and allocated (or copied) once at their exact
//! size. The crate's one decimal writer.

/// Writes `n` in decimal at the start of `buf` and returns how many bytes it
/// wrote. `buf` needs 20 bytes at most.
pub fn write_u64(buf: &mut [u8], n: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut m = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    let tail = &digits[at..];
    buf[..tail.len()].copy_from_slice(tail);
    tail.len()
}

/// Writes `n` in decimal (with a leading `-` when negative) at the start of
/// `buf` and returns how many bytes it wrote. `buf` needs 20 bytes at most.
pub fn write_i64(buf: &mut [u8], n: i64) -> usize {
    if n < 0 {
        buf[0] = b'-';
        1 + write_u64(&mut buf[1..], n.unsigned_abs())
    } else {
        write_u64(buf, n.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: i64) -> String {
        let mut buf = [0u8; 20];
        let len = write_i64(&mut buf, n);
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }

    fn u(n: u64) -> String {
        let mut buf = [0u8; 20];
        let len = write_u64(&mut buf, n);
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }

    #[test]
    fn matches_to_string_at_the_edges() {
        for n in [0, 7, -7, 10, 99, -100, 1_795_607_947, i64::MAX, i64::MIN] {
            assert_eq!(s(n), n.to_string());
        }
        for n in [0, 9, 10, u64::from(u32::MAX), i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(u(n), n.to_string());
        }
    }
}
