//! Byte strings with their encoding label: what payload Strings, Symbol
//! names, event names and trace keys are stored as.

use std::sync::Arc;

/// The encoding of a string's bytes, as the host runtime labelled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Utf8,
    UsAscii,
    /// Raw bytes (Ruby's ASCII-8BIT).
    Binary,
    /// Any other encoding, by the host runtime's own encoding index. The core
    /// treats it as opaque; the binding maps it back.
    Other(i32),
}

/// A byte string with its encoding label. Bytes are kept exactly, valid or not.
///
/// One shared allocation holds the encoding label and then the bytes, so a
/// `Str` is a single pointer pair (16 bytes) and a clone (an event name stored
/// in many records) costs a reference count, not a copy.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Str {
    /// The label (one code byte, then an `i32` for `Encoding::Other`), then
    /// the bytes.
    data: Arc<[u8]>,
}

const LABEL_UTF8: u8 = 0;
const LABEL_US_ASCII: u8 = 1;
const LABEL_BINARY: u8 = 2;
const LABEL_OTHER: u8 = 3;

impl Str {
    /// A string of these bytes (a `Vec<u8>`, `&[u8]` or `Box<[u8]>`), copied
    /// once into the shared allocation.
    pub fn new<B>(bytes: B, encoding: Encoding) -> Self
    where
        B: AsRef<[u8]> + Into<Arc<[u8]>>,
    {
        let mut label = [0u8; 5];
        let label: &[u8] = match encoding {
            Encoding::Utf8 => &[LABEL_UTF8],
            Encoding::UsAscii => &[LABEL_US_ASCII],
            Encoding::Binary => &[LABEL_BINARY],
            Encoding::Other(idx) => {
                label[0] = LABEL_OTHER;
                label[1..].copy_from_slice(&idx.to_le_bytes());
                &label
            }
        };
        let bytes = bytes.as_ref();
        let len = label.len() + bytes.len();
        // Short strings (names, keys) are assembled on the stack and copied
        // once into an allocation of the right size.
        let data: Arc<[u8]> = if len <= 64 {
            let mut buf = [0u8; 64];
            buf[..label.len()].copy_from_slice(label);
            buf[label.len()..len].copy_from_slice(bytes);
            Arc::from(&buf[..len])
        } else {
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(label);
            v.extend_from_slice(bytes);
            Arc::from(v)
        };
        Str { data }
    }

    /// A UTF-8 string.
    pub fn utf8(s: &str) -> Self {
        Str::new(s.as_bytes(), Encoding::Utf8)
    }

    fn label_len(&self) -> usize {
        if self.data.first() == Some(&LABEL_OTHER) {
            5
        } else {
            1
        }
    }

    pub fn bytes(&self) -> &[u8] {
        self.data.get(self.label_len()..).unwrap_or(&[])
    }

    pub fn encoding(&self) -> Encoding {
        match self.data.first() {
            Some(&LABEL_US_ASCII) => Encoding::UsAscii,
            Some(&LABEL_BINARY) => Encoding::Binary,
            Some(&LABEL_OTHER) => {
                let mut idx = [0u8; 4];
                if let Some(b) = self.data.get(1..5) {
                    idx.copy_from_slice(b);
                }
                Encoding::Other(i32::from_le_bytes(idx))
            }
            _ => Encoding::Utf8,
        }
    }

    /// The text, when the bytes are valid UTF-8 and labelled UTF-8 or US-ASCII.
    pub fn as_utf8(&self) -> Option<&str> {
        match self.encoding() {
            Encoding::Utf8 | Encoding::UsAscii => std::str::from_utf8(self.bytes()).ok(),
            _ => None,
        }
    }

    /// The text with invalid sequences replaced, for messages and names.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// Approximate heap bytes owned by this string.
    pub fn heap_size(&self) -> usize {
        self.data.len()
    }
}

impl std::fmt::Debug for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Str")
            .field("bytes", &String::from_utf8_lossy(self.bytes()))
            .field("encoding", &self.encoding())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_is_two_words_and_compares_by_bytes_and_encoding() {
        assert_eq!(std::mem::size_of::<Str>(), 16);
        let other = Str::new(&b"abc"[..], Encoding::Other(-7));
        assert_eq!(other.bytes(), b"abc");
        assert_eq!(other.encoding(), Encoding::Other(-7));
        assert_eq!(Str::new(&b""[..], Encoding::Other(300)).bytes(), b"");
        assert_ne!(Str::new(&b"abc"[..], Encoding::Binary), Str::utf8("abc"));
        assert_eq!(Str::new(b"abc".to_vec(), Encoding::Utf8), Str::utf8("abc"));
        assert_eq!(Str::utf8("").bytes(), b"");
        let long = "x".repeat(100);
        let s = Str::new(long.as_bytes(), Encoding::Other(9));
        assert_eq!(
            (s.bytes(), s.encoding()),
            (long.as_bytes(), Encoding::Other(9))
        );
    }

    #[test]
    fn str_keeps_bytes_and_encoding() {
        let s = Str::new(vec![0xff, 0xfe], Encoding::Binary);
        assert_eq!(s.bytes(), &[0xff, 0xfe]);
        assert_eq!(s.encoding(), Encoding::Binary);
        assert_eq!(s.as_utf8(), None);
        let bad = Str::new(vec![0xff], Encoding::Utf8);
        assert_eq!(bad.as_utf8(), None);
        assert_eq!(Str::utf8("ok").as_utf8(), Some("ok"));
    }
}
