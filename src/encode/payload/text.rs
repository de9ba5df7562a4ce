//! Text: bytes as valid UTF-8 (lossy), a string's text by its encoding,
//! and text renderings where OTLP needs a string (non-string keys,
//! messages).

use std::fmt::{self, Write as _};

use crate::value::{Encoding, Str, Value};

/// Bytes as text, invalid UTF-8 sequences replaced by U+FFFD.
pub(crate) struct Lossy<'a>(pub &'a [u8]);

impl Lossy<'_> {
    /// The text's length in bytes once made valid.
    pub fn len(&self) -> usize {
        self.0
            .utf8_chunks()
            .map(|c| {
                c.valid().len()
                    + if c.invalid().is_empty() {
                        0
                    } else {
                        char::REPLACEMENT_CHARACTER.len_utf8()
                    }
            })
            .sum()
    }

    /// The text itself when the bytes are valid UTF-8 already.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.0).ok()
    }

    /// Appends the valid text to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for chunk in self.0.utf8_chunks() {
            out.extend_from_slice(chunk.valid().as_bytes());
            if !chunk.invalid().is_empty() {
                let mut b = [0u8; 4];
                out.extend_from_slice(char::REPLACEMENT_CHARACTER.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_char(char::REPLACEMENT_CHARACTER)?;
            }
        }
        Ok(())
    }
}

/// A string's text when it can travel as a `stringValue`: its bytes are UTF-8
/// and it is labelled UTF-8, US-ASCII or binary, or it is plain ASCII (without
/// NUL, which marks wide encodings such as UTF-16) in another encoding.
/// Anything else travels as `bytesValue`.
pub fn text_of(bytes: &[u8], encoding: Encoding) -> Option<&str> {
    match encoding {
        Encoding::Utf8 | Encoding::UsAscii | Encoding::Binary => std::str::from_utf8(bytes).ok(),
        Encoding::Other(_) => {
            if bytes.is_ascii() && !bytes.contains(&0) {
                std::str::from_utf8(bytes).ok()
            } else {
                None
            }
        }
    }
}

/// [`text_of`] for a [`Str`].
pub fn str_text(s: &Str) -> Option<&str> {
    text_of(s.bytes(), s.encoding())
}

/// Appends a value's text as Ruby's `to_s` gives it for scalars; containers
/// get a compact `inspect`-like rendering, bounded in depth.
pub fn render_text(v: &Value, out: &mut String) {
    render(v, out, 0, false);
}

fn render(v: &Value, out: &mut String, depth: usize, quoted: bool) {
    match v {
        Value::Nil => {
            if quoted {
                out.push_str("nil");
            }
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let mut buf = [0u8; 20];
            let n = crate::support::digits::write_i64(&mut buf, *i);
            out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or_default());
        }
        Value::BigInt(d) => out.push_str(d),
        Value::Float(f) => render_float(*f, out),
        Value::Str(s) => {
            if quoted {
                let _ = write!(out, "{:?}", s.to_string_lossy());
            } else {
                let _ = write!(out, "{}", Lossy(s.bytes()));
            }
        }
        Value::Sym(s) => {
            if quoted {
                out.push(':');
            }
            let _ = write!(out, "{}", Lossy(s.bytes()));
        }
        Value::Array(items) => {
            if depth >= 8 {
                out.push_str("[...]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(item, out, depth + 1, true);
            }
            out.push(']');
        }
        Value::Hash(pairs) => {
            if depth >= 8 {
                out.push_str("{...}");
                return;
            }
            out.push('{');
            for (i, (k, val)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(k, out, depth + 1, true);
                out.push_str("=>");
                render(val, out, depth + 1, true);
            }
            out.push('}');
        }
    }
}

fn render_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f == f.trunc() && f.abs() < 1e16 {
        let _ = write!(out, "{f:.1}");
    } else {
        let _ = write!(out, "{f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_text_replaces_invalid_sequences() {
        let bytes = b"caf\xe9 \xff\xfe ok";
        let mut out = Vec::new();
        Lossy(bytes).write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, String::from_utf8_lossy(bytes));
        assert_eq!(Lossy(bytes).len(), text.len());
        assert_eq!(Lossy(bytes).to_string(), text);
        assert_eq!(Lossy(b"plain").as_str(), Some("plain"));
        assert_eq!(Lossy(bytes).as_str(), None);
    }
    #[test]
    fn text_of_strings_follows_the_encoding_rules() {
        assert_eq!(str_text(&Str::utf8("héllo")), Some("héllo"));
        assert_eq!(
            str_text(&Str::new(&b"abc"[..], Encoding::Binary)),
            Some("abc")
        );
        assert_eq!(str_text(&Str::new(vec![0xff], Encoding::Binary)), None);
        assert_eq!(str_text(&Str::new(vec![0xe9], Encoding::Other(5))), None);
        assert_eq!(
            str_text(&Str::new(&b"ab"[..], Encoding::Other(5))),
            Some("ab")
        );
        assert_eq!(str_text(&Str::new(&b"a\0"[..], Encoding::Other(5))), None);
    }
    #[test]
    fn render_text_is_ruby_like() {
        let mut s = String::new();
        render_text(&Value::Float(2.0), &mut s);
        s.push('|');
        render_text(&Value::Float(f64::NEG_INFINITY), &mut s);
        s.push('|');
        render_text(&Value::Nil, &mut s);
        s.push('|');
        render_text(&Value::Int(i64::MIN), &mut s);
        s.push('|');
        render_text(
            &Value::Array(vec![Value::Nil, Value::string("a"), Value::symbol("b")]),
            &mut s,
        );
        assert_eq!(s, "2.0|-Infinity||-9223372036854775808|[nil, \"a\", :b]");
    }
}
