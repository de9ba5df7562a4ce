//! OTLP `AnyValue`s and attribute lists, written straight from packed
//! payloads: the payload buffer is read once, in order, while serde_json
//! writes; no value tree is built.
//!
//! - Hash → `kvlistValue`, Array → `arrayValue`
//! - Integer → `intValue` (a decimal string); beyond 64 bits → `stringValue`
//! - Float → `doubleValue`; NaN and ±Infinity → `stringValue`
//! - Symbol → `stringValue`; nil → an empty AnyValue
//! - String → `stringValue`, or `bytesValue` (base64) when it is not UTF-8
//! - keys are unique in each list: the first of a key wins, the others are
//!   dropped and counted

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt::{self, Write as _};

use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::digits;
use crate::value::{
    Encoding, Item, Packed, PackedReader, Str, Value, DEPTH_LIMIT_MARKER, MAX_DEPTH,
};

/// Prefix of every span attribute taken from a payload.
pub const ATTRIBUTE_PREFIX: &str = "tasker.";

// ---------------------------------------------------------------------------
// Small writers.

/// Trace and span ids as lowercase hex (ids are at most 16 bytes).
pub(crate) struct Hex<'a>(pub &'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 32];
        let bytes = &self.0[..self.0.len().min(16)];
        for (i, b) in bytes.iter().enumerate() {
            buf[2 * i] = DIGITS[(b >> 4) as usize];
            buf[2 * i + 1] = DIGITS[(b & 15) as usize];
        }
        s.serialize_str(std::str::from_utf8(&buf[..bytes.len() * 2]).unwrap_or_default())
    }
}

/// A 64-bit integer as a JSON string of its decimal digits.
pub(crate) struct Decimal(pub i128);

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; digits::MAX_LEN];
        let magnitude = u64::try_from(self.0.unsigned_abs()).unwrap_or(u64::MAX);
        let len = digits::write_signed(&mut buf, self.0 < 0, magnitude);
        s.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or_default())
    }
}

/// Bytes as text, invalid UTF-8 sequences replaced by U+FFFD.
pub(crate) struct Lossy<'a>(pub &'a [u8]);

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

impl Serialize for Lossy<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_str(self),
        }
    }
}

/// `tasker.<key>`, written without building the string.
struct Prefixed<'a>(&'static str, &'a [u8]);

impl fmt::Display for Prefixed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        Lossy(self.1).fmt(f)
    }
}

impl Serialize for Prefixed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            return Lossy(self.1).serialize(s);
        }
        // Short keys (nearly all) are joined on the stack and written at once.
        let mut buf = [0u8; 96];
        let (prefix, key) = (self.0.as_bytes(), self.1);
        let len = prefix.len() + key.len();
        if len <= buf.len() {
            buf[..prefix.len()].copy_from_slice(prefix);
            buf[prefix.len()..len].copy_from_slice(key);
            if let Ok(text) = std::str::from_utf8(&buf[..len]) {
                return s.serialize_str(text);
            }
        }
        s.collect_str(self)
    }
}

struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
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

// ---------------------------------------------------------------------------
// Text renderings, where OTLP needs a string (non-string keys, messages).

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
            let _ = write!(out, "{i}");
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

// ---------------------------------------------------------------------------
// Reading packed payloads.

/// Looks a top-level field up by Symbol, else by String key (payloads with
/// indifferent access arrive with String keys). nil counts as absent.
pub fn field(payload: &Packed, name: &str) -> Option<Value> {
    let name = name.as_bytes();
    let mut r = payload.reader();
    let Some(Item::Hash(n)) = r.next() else {
        return None;
    };
    let mut by_string: Option<Value> = None;
    for _ in 0..n {
        let k = r.next()?;
        let (symbol, matches) = match k {
            Item::Sym(b, _) => (true, b == name),
            Item::SymId(_, s) => (true, s.bytes() == name),
            Item::Str(b, _) => (false, b == name),
            other => {
                r.skip_elements(&other);
                (false, false)
            }
        };
        let v = r.next()?;
        if matches && !matches!(v, Item::Nil) && (symbol || by_string.is_none()) {
            let value = r.read_value(v, 2);
            if symbol {
                return Some(value);
            }
            by_string = Some(value);
        } else {
            r.skip_elements(&v);
        }
    }
    by_string
}

/// The ERROR status message: the payload's `:error`, else `:error_message`.
pub fn error_message(payload: &Packed) -> Option<String> {
    let v = field(payload, "error")
        .filter(Value::is_truthy)
        .or_else(|| field(payload, "error_message").filter(Value::is_truthy))?;
    let mut s = String::new();
    render_text(&v, &mut s);
    Some(s)
}

// ---------------------------------------------------------------------------
// Keys.

#[derive(Clone)]
enum KeyText<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl KeyText<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            KeyText::Borrowed(b) => b,
            KeyText::Owned(v) => v,
        }
    }
}

/// A key item's text: Strings and Symbols by their name, anything else by its
/// rendering.
fn key_of<'a>(r: &mut PackedReader<'a>, item: Item<'a>) -> KeyText<'a> {
    match item {
        Item::Str(b, _) | Item::Sym(b, _) => KeyText::Borrowed(b),
        Item::SymId(_, name) => KeyText::Borrowed(name.bytes()),
        other => {
            let v = r.read_value(other, 2);
            let mut s = String::new();
            render_text(&v, &mut s);
            KeyText::Owned(s.into_bytes())
        }
    }
}

/// Lists longer than this get a hash set for the duplicate check.
const LINEAR_SCAN_LIMIT: usize = 24;

/// The keys written so far in one list.
#[derive(Default)]
struct SeenKeys<'a> {
    keys: Vec<KeyText<'a>>,
    index: Option<HashSet<Vec<u8>>>,
}

impl<'a> SeenKeys<'a> {
    fn contains(&self, key: &[u8]) -> bool {
        match &self.index {
            Some(index) => index.contains(key),
            None => self.keys.iter().any(|k| k.bytes() == key),
        }
    }

    /// Records `key`; false when it was already there.
    fn insert(&mut self, key: &KeyText<'a>) -> bool {
        if self.contains(key.bytes()) {
            return false;
        }
        match &mut self.index {
            Some(index) => {
                index.insert(key.bytes().to_vec());
            }
            None => {
                self.keys.push(key.clone());
                if self.keys.len() > LINEAR_SCAN_LIMIT {
                    self.index = Some(self.keys.drain(..).map(|k| k.bytes().to_vec()).collect());
                }
            }
        }
        true
    }
}

/// The top-level keys of a payload.
fn top_level_keys(payload: &Packed) -> SeenKeys<'_> {
    let mut seen = SeenKeys::default();
    let mut r = payload.reader();
    if let Some(Item::Hash(n)) = r.next() {
        for _ in 0..n {
            let Some(k) = r.next() else { break };
            let key = key_of(&mut r, k);
            seen.insert(&key);
            let Some(v) = r.next() else { break };
            r.skip_elements(&v);
        }
    }
    seen
}

// ---------------------------------------------------------------------------
// Streaming AnyValues.

fn single<S: Serializer, T: Serialize + ?Sized>(
    s: S,
    key: &'static str,
    v: &T,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry(key, v)?;
    m.end()
}

fn string_value<S: Serializer>(s: S, bytes: &[u8], encoding: Encoding) -> Result<S::Ok, S::Error> {
    match text_of(bytes, encoding) {
        Some(text) => single(s, "stringValue", text),
        None => single(s, "bytesValue", &Base64(bytes)),
    }
}

/// The next value of a reader as an AnyValue. `depth` counts the containers
/// above it (the payload Hash is 1).
struct Streamed<'r, 'a> {
    r: &'r RefCell<PackedReader<'a>>,
    depth: usize,
}

impl Serialize for Streamed<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let item = self.r.borrow_mut().next();
        match item {
            // An AnyValue with no field set stands for null.
            None | Some(Item::Nil) => s.serialize_map(Some(0))?.end(),
            Some(Item::Bool(b)) => single(s, "boolValue", &b),
            Some(Item::Int(i)) => single(s, "intValue", &Decimal(i128::from(i))),
            Some(Item::BigInt(d)) => single(s, "stringValue", &Lossy(d)),
            Some(Item::Float(f)) if f.is_finite() => single(s, "doubleValue", &f),
            Some(Item::Float(f)) => single(
                s,
                "stringValue",
                if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                },
            ),
            Some(Item::Str(b, e)) => string_value(s, b, e),
            Some(Item::Sym(b, _)) => single(s, "stringValue", &Lossy(b)),
            Some(Item::SymId(_, name)) => single(s, "stringValue", &Lossy(name.bytes())),
            Some(container @ (Item::Array(_) | Item::Hash(_))) if self.depth >= MAX_DEPTH => {
                self.r.borrow_mut().skip_elements(&container);
                single(s, "stringValue", DEPTH_LIMIT_MARKER)
            }
            Some(Item::Array(n)) => single(
                s,
                "arrayValue",
                &Values(StreamedItems {
                    r: self.r,
                    n,
                    depth: self.depth + 1,
                }),
            ),
            Some(Item::Hash(n)) => single(
                s,
                "kvlistValue",
                &Values(StreamedPairs {
                    r: self.r,
                    n,
                    depth: self.depth + 1,
                }),
            ),
        }
    }
}

/// `{"values": …}`, the body of an ArrayValue or a KeyValueList.
struct Values<T>(T);

impl<T: Serialize> Serialize for Values<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        single(s, "values", &self.0)
    }
}

struct StreamedItems<'r, 'a> {
    r: &'r RefCell<PackedReader<'a>>,
    n: u32,
    depth: usize,
}

impl Serialize for StreamedItems<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.n as usize))?;
        for _ in 0..self.n {
            seq.serialize_element(&Streamed {
                r: self.r,
                depth: self.depth,
            })?;
        }
        seq.end()
    }
}

/// The pairs of a nested Hash as KeyValues (keys as they are, first wins).
struct StreamedPairs<'r, 'a> {
    r: &'r RefCell<PackedReader<'a>>,
    n: u32,
    depth: usize,
}

impl Serialize for StreamedPairs<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut seen = SeenKeys::default();
        for _ in 0..self.n {
            let key = {
                let mut r = self.r.borrow_mut();
                let Some(k) = r.next() else { break };
                key_of(&mut r, k)
            };
            if !seen.insert(&key) {
                let mut r = self.r.borrow_mut();
                if let Some(v) = r.next() {
                    r.skip_elements(&v);
                }
                continue;
            }
            seq.serialize_element(&Entry {
                prefix: "",
                key: key.bytes(),
                value: EntryValue::Streamed(Streamed {
                    r: self.r,
                    depth: self.depth,
                }),
            })?;
        }
        seq.end()
    }
}

enum EntryValue<'r, 'a> {
    Streamed(Streamed<'r, 'a>),
    Str(&'a Str),
}

/// One KeyValue: `{"key": prefix + key, "value": AnyValue}`.
struct Entry<'k, 'r, 'a> {
    prefix: &'static str,
    key: &'k [u8],
    value: EntryValue<'r, 'a>,
}

impl Serialize for Entry<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("KeyValue", 2)?;
        m.serialize_field("key", &Prefixed(self.prefix, self.key))?;
        match &self.value {
            EntryValue::Streamed(v) => m.serialize_field("value", v)?,
            EntryValue::Str(st) => m.serialize_field("value", &StrValue(st))?,
        }
        m.end()
    }
}

struct StrValue<'a>(&'a Str);

impl Serialize for StrValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        string_value(s, self.0.bytes(), self.0.encoding())
    }
}

// ---------------------------------------------------------------------------
// Attribute lists.

/// A span's (or event's) attributes: `tasker.trace_key` when given, then the
/// payloads' top-level keys as `tasker.<key>`. With two payloads (a child
/// span's `.before_` and `.after_`), a key in both takes the second's value.
/// Keys are unique; duplicates are dropped and counted in `dropped`, which is
/// complete once the list has been written.
pub(crate) struct PayloadAttributes<'a> {
    pub prefix: &'static str,
    pub trace_key: Option<&'a Str>,
    pub first: Option<&'a Packed>,
    pub second: Option<&'a Packed>,
    pub dropped: Cell<u32>,
}

impl<'a> PayloadAttributes<'a> {
    pub fn span(trace_key: Option<&'a Str>, payload: &'a Packed) -> Self {
        PayloadAttributes {
            prefix: ATTRIBUTE_PREFIX,
            trace_key,
            first: Some(payload),
            second: None,
            dropped: Cell::new(0),
        }
    }

    pub fn merged(first: &'a Packed, second: &'a Packed) -> Self {
        PayloadAttributes {
            prefix: ATTRIBUTE_PREFIX,
            trace_key: None,
            first: Some(first),
            second: Some(second),
            dropped: Cell::new(0),
        }
    }

    /// Keys as they are (resource attributes).
    pub fn plain(payload: &'a Packed) -> Self {
        PayloadAttributes {
            prefix: "",
            trace_key: None,
            first: Some(payload),
            second: None,
            dropped: Cell::new(0),
        }
    }

    fn drop_one(&self) {
        self.dropped.set(self.dropped.get().saturating_add(1));
    }
}

impl Serialize for PayloadAttributes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut seen = SeenKeys::default();
        if let Some(k) = self.trace_key {
            let key = KeyText::Borrowed(b"trace_key");
            seen.insert(&key);
            seq.serialize_element(&Entry {
                prefix: self.prefix,
                key: key.bytes(),
                value: EntryValue::Str(k),
            })?;
        }
        let replaced = match (self.first, self.second) {
            (Some(_), Some(second)) => Some(top_level_keys(second)),
            _ => None,
        };
        for (n, payload) in [self.first, self.second].into_iter().enumerate() {
            let Some(payload) = payload else { continue };
            let r = RefCell::new(payload.reader());
            let Some(Item::Hash(count)) = r.borrow_mut().next() else {
                continue;
            };
            for _ in 0..count {
                let key = {
                    let mut rr = r.borrow_mut();
                    let Some(k) = rr.next() else { break };
                    key_of(&mut rr, k)
                };
                let replaced_later = n == 0
                    && replaced
                        .as_ref()
                        .is_some_and(|later| later.contains(key.bytes()));
                if replaced_later || !seen.insert(&key) {
                    self.drop_one();
                    let mut rr = r.borrow_mut();
                    if let Some(v) = rr.next() {
                        rr.skip_elements(&v);
                    }
                    continue;
                }
                seq.serialize_element(&Entry {
                    prefix: self.prefix,
                    key: key.bytes(),
                    value: EntryValue::Streamed(Streamed { r: &r, depth: 1 }),
                })?;
            }
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn hex_and_decimal_writers() {
        assert_eq!(json(&Hex(&[0x00, 0xab, 0x0f])), "\"00ab0f\"");
        assert_eq!(json(&Hex(&[0xff; 16])).len(), 34);
        assert_eq!(json(&Decimal(0)), "\"0\"");
        assert_eq!(
            json(&Decimal(i128::from(i64::MIN))),
            "\"-9223372036854775808\""
        );
        assert_eq!(
            json(&Decimal(i128::from(u64::MAX))),
            "\"18446744073709551615\""
        );
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
        render_text(
            &Value::Array(vec![Value::Nil, Value::string("a"), Value::symbol("b")]),
            &mut s,
        );
        assert_eq!(s, "2.0|-Infinity||[nil, \"a\", :b]");
    }

    #[test]
    fn fields_by_symbol_then_string_key() {
        let p = Packed::from_value(&Value::Hash(vec![
            (Value::string("error"), Value::string("by string")),
            (Value::Array(vec![Value::Int(1)]), Value::Hash(vec![])),
            (Value::symbol("error"), Value::string("by symbol")),
        ]));
        assert_eq!(field(&p, "error"), Some(Value::string("by symbol")));
        let p = Packed::from_value(&Value::Hash(vec![
            (Value::symbol("error"), Value::Nil),
            (Value::string("error"), Value::string("by string")),
        ]));
        assert_eq!(field(&p, "error"), Some(Value::string("by string")));
        assert_eq!(field(&p, "missing"), None);
        assert_eq!(field(&Packed::from_value(&Value::Int(1)), "error"), None);
    }

    #[test]
    fn error_messages_come_from_error_then_error_message() {
        let p = |pairs| Packed::from_value(&Value::Hash(pairs));
        assert_eq!(
            error_message(&p(vec![
                (Value::symbol("error_message"), Value::string("second")),
                (Value::symbol("error"), Value::string("first")),
            ]))
            .as_deref(),
            Some("first")
        );
        assert_eq!(
            error_message(&p(vec![
                (Value::symbol("error"), Value::Bool(false)),
                (
                    Value::string("error_message"),
                    Value::string("by string key")
                ),
            ]))
            .as_deref(),
            Some("by string key")
        );
        assert_eq!(
            error_message(&p(vec![(
                Value::symbol("error"),
                Value::Hash(vec![(Value::symbol("code"), Value::Int(5))]),
            )]))
            .as_deref(),
            Some("{:code=>5}")
        );
        assert_eq!(error_message(&p(vec![])), None);
    }

    #[test]
    fn attributes_stream_with_unique_keys() {
        let before = Packed::from_value(&Value::Hash(vec![
            (Value::symbol("a"), Value::Int(1)),
            (
                Value::symbol("b"),
                Value::Array(vec![Value::Nil, Value::Bool(true)]),
            ),
            (Value::string("a"), Value::Int(9)),
        ]));
        let after = Packed::from_value(&Value::Hash(vec![
            (Value::symbol("b"), Value::Float(0.5)),
            (
                Value::symbol("c"),
                Value::Hash(vec![(Value::Int(1), Value::Nil)]),
            ),
        ]));
        let attrs = PayloadAttributes::merged(&before, &after);
        assert_eq!(
            json(&attrs),
            concat!(
                r#"[{"key":"tasker.a","value":{"intValue":"1"}},"#,
                r#"{"key":"tasker.b","value":{"doubleValue":0.5}},"#,
                r#"{"key":"tasker.c","value":{"kvlistValue":{"values":[{"key":"1","value":{}}]}}}]"#
            )
        );
        // "b" from before (replaced) and the second "a" were dropped.
        assert_eq!(attrs.dropped.get(), 2);
    }

    #[test]
    fn many_keys_switch_to_a_hash_index() {
        let mut pairs: Vec<(Value, Value)> = (0..100)
            .map(|i| (Value::string(&format!("k{i}")), Value::Int(i)))
            .collect();
        pairs.push((Value::string("k50"), Value::Int(-1)));
        let p = Packed::from_value(&Value::Hash(pairs));
        let attrs = PayloadAttributes::span(None, &p);
        let out: serde_json::Value = serde_json::from_str(&json(&attrs)).unwrap();
        assert_eq!(out.as_array().unwrap().len(), 100);
        assert_eq!(attrs.dropped.get(), 1);
    }
}
