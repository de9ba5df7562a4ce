//! Decimal digits written into a caller's buffer, so keys can be built on the
//! stack and allocated once at their exact size.

/// Writes `n` in decimal (with a leading `-` when negative) at the start of
/// `buf` and returns how many bytes it wrote. `buf` needs 20 bytes at most.
pub fn write_i64(buf: &mut [u8], n: i64) -> usize {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut m = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    let mut len = 0;
    if n < 0 {
        buf[0] = b'-';
        len = 1;
    }
    let tail = &digits[at..];
    buf[len..len + tail.len()].copy_from_slice(tail);
    len + tail.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: i64) -> String {
        let mut buf = [0u8; 20];
        let len = write_i64(&mut buf, n);
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }

    #[test]
    fn matches_to_string_at_the_edges() {
        for n in [0, 7, -7, 10, 99, -100, 1_795_607_947, i64::MAX, i64::MIN] {
            assert_eq!(s(n), n.to_string());
        }
    }
}
