//! Reading packed payloads as OTLP values, the same way for every wire
//! format. The payload buffer is read once, in order, while an encoder
//! writes; no value tree is built. This module decides WHAT a value becomes;
//! `json` and `protobuf` only decide how to write it.
//!
//! - Hash → `kvlistValue`, Array → `arrayValue`
//! - Integer → `intValue`; beyond 64 bits → `stringValue` (its digits)
//! - Float → `doubleValue`; NaN and ±Infinity → `stringValue`
//! - Symbol → `stringValue`; nil → an AnyValue with nothing set
//! - String → `stringValue`, or `bytesValue` when it is not UTF-8
//! - containers [`MAX_DEPTH`] deep → the `stringValue` [`DEPTH_LIMIT_MARKER`]
//! - keys are unique in each list: the first of a key wins, the others are
//!   dropped (and counted in attribute lists)
//! - text that must be a string (names, keys, symbols) is made valid UTF-8,
//!   invalid sequences replaced by U+FFFD

use std::collections::HashSet;
use std::fmt::{self, Write as _};

use crate::value::{
    Encoding, Item, Packed, PackedReader, Str, Value, DEPTH_LIMIT_MARKER, MAX_DEPTH,
};

/// Prefix of every span attribute taken from a payload.
pub const ATTRIBUTE_PREFIX: &str = "tasker.";

// ---------------------------------------------------------------------------
// Text.

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

// ---------------------------------------------------------------------------
// Looking fields up.

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

/// A key's text (made valid UTF-8 when written).
#[derive(Clone)]
pub(crate) enum KeyText<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl KeyText<'_> {
    pub fn bytes(&self) -> &[u8] {
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
pub(crate) struct SeenKeys<'a> {
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
// Values.

/// One OTLP `AnyValue`, as a payload value (or an owned attribute) becomes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AnyItem<'a> {
    /// nil: an AnyValue with no field set.
    Empty,
    Bool(bool),
    Int(i64),
    /// Always finite.
    Double(f64),
    /// `stringValue`; the bytes are made valid UTF-8 when written.
    Text(&'a [u8]),
    Bytes(&'a [u8]),
    /// An `arrayValue` of this many values; they follow, read one by one.
    Array(u32),
    /// A `kvlistValue` of this many pairs; read them with
    /// [`ValueReader::unique_key`] and [`ValueReader::value`].
    KvList(u32),
}

/// A double as OTLP carries it: finite as `doubleValue`, the others by name
/// (JSON has no NaN or Infinity).
pub(crate) fn double_item(f: f64) -> AnyItem<'static> {
    if f.is_finite() {
        AnyItem::Double(f)
    } else if f.is_nan() {
        AnyItem::Text(b"NaN")
    } else if f > 0.0 {
        AnyItem::Text(b"Infinity")
    } else {
        AnyItem::Text(b"-Infinity")
    }
}

/// Reads values from a packed payload as [`AnyItem`]s.
pub(crate) struct ValueReader<'a> {
    r: PackedReader<'a>,
}

impl<'a> ValueReader<'a> {
    pub fn new(payload: &'a Packed) -> Self {
        ValueReader {
            r: payload.reader(),
        }
    }

    /// The next value. `depth` counts the containers above it (a payload's
    /// top-level Hash is 1); a container at [`MAX_DEPTH`] is skipped and
    /// stands as the depth-limit marker. A container's elements follow it.
    pub fn value(&mut self, depth: usize) -> AnyItem<'a> {
        match self.r.next() {
            None | Some(Item::Nil) => AnyItem::Empty,
            Some(Item::Bool(b)) => AnyItem::Bool(b),
            Some(Item::Int(i)) => AnyItem::Int(i),
            Some(Item::BigInt(d)) => AnyItem::Text(d),
            Some(Item::Float(f)) => double_item(f),
            Some(Item::Str(b, e)) => match text_of(b, e) {
                Some(_) => AnyItem::Text(b),
                None => AnyItem::Bytes(b),
            },
            Some(Item::Sym(b, _)) => AnyItem::Text(b),
            Some(Item::SymId(_, name)) => AnyItem::Text(name.bytes()),
            Some(container @ (Item::Array(_) | Item::Hash(_))) if depth >= MAX_DEPTH => {
                self.r.skip_elements(&container);
                AnyItem::Text(DEPTH_LIMIT_MARKER.as_bytes())
            }
            Some(Item::Array(n)) => AnyItem::Array(n),
            Some(Item::Hash(n)) => AnyItem::KvList(n),
        }
    }

    /// The next key of a list with `left` pairs still to read that is not in
    /// `seen`; pairs with a key already seen are skipped (and counted in
    /// `dropped`). The key's value is next. `None` when the list is done.
    pub fn unique_key(
        &mut self,
        left: &mut u32,
        seen: &mut SeenKeys<'a>,
        dropped: &mut u32,
    ) -> Option<KeyText<'a>> {
        while *left > 0 {
            *left -= 1;
            let k = self.r.next()?;
            let key = key_of(&mut self.r, k);
            if seen.insert(&key) {
                return Some(key);
            }
            *dropped = dropped.saturating_add(1);
            self.skip_value();
        }
        None
    }

    /// Skips the next value and what follows it.
    fn skip_value(&mut self) {
        if let Some(v) = self.r.next() {
            self.r.skip_elements(&v);
        }
    }
}

// ---------------------------------------------------------------------------
// Attribute lists.

/// A span's (or event's, or the resource's) attributes from payloads:
/// `<prefix>trace_key` when given, then the payloads' top-level keys as
/// `<prefix><key>`. With two payloads (a child span's `.before_` and
/// `.after_`), a key in both takes the second's value. Keys are unique;
/// duplicates are dropped and counted.
#[derive(Clone, Copy)]
pub struct PayloadAttributes<'a> {
    pub(crate) prefix: &'static str,
    pub(crate) trace_key: Option<&'a Str>,
    pub(crate) first: Option<&'a Packed>,
    pub(crate) second: Option<&'a Packed>,
}

impl<'a> PayloadAttributes<'a> {
    pub(crate) fn span(trace_key: Option<&'a Str>, payload: &'a Packed) -> Self {
        PayloadAttributes {
            prefix: ATTRIBUTE_PREFIX,
            trace_key,
            first: Some(payload),
            second: None,
        }
    }

    pub(crate) fn merged(first: &'a Packed, second: &'a Packed) -> Self {
        PayloadAttributes {
            prefix: ATTRIBUTE_PREFIX,
            trace_key: None,
            first: Some(first),
            second: Some(second),
        }
    }

    /// Keys as they are (resource attributes).
    pub(crate) fn plain(payload: &'a Packed) -> Self {
        PayloadAttributes {
            prefix: "",
            trace_key: None,
            first: Some(payload),
            second: None,
        }
    }

    /// A reader of the entries, in order.
    pub(crate) fn entries(&self) -> AttributeEntries<'a> {
        AttributeEntries {
            attrs: *self,
            replaced: match (self.first, self.second) {
                (Some(_), Some(second)) => Some(top_level_keys(second)),
                _ => None,
            },
            seen: SeenKeys::default(),
            part: 0,
            reader: None,
            left: 0,
            dropped: 0,
        }
    }
}

/// Where an attribute's value comes from.
pub(crate) enum EntryValue<'a> {
    /// The trace key.
    Str(&'a Str),
    /// The next value of [`AttributeEntries::reader`].
    Next,
}

/// One attribute list being read: [`next_key`](Self::next_key) gives each
/// unique key; when its value is [`EntryValue::Next`], the caller reads it
/// (exactly one value, with what follows it) from [`reader`](Self::reader)
/// before asking for the next key.
pub(crate) struct AttributeEntries<'a> {
    attrs: PayloadAttributes<'a>,
    /// The second payload's keys, which replace the first's.
    replaced: Option<SeenKeys<'a>>,
    seen: SeenKeys<'a>,
    /// 0: the trace key; 1: the first payload; 2: the second; 3: done.
    part: u8,
    reader: Option<ValueReader<'a>>,
    left: u32,
    dropped: u32,
}

impl<'a> AttributeEntries<'a> {
    pub fn prefix(&self) -> &'static str {
        self.attrs.prefix
    }

    /// Entries dropped as duplicates so far (all of them once `next_key` has
    /// returned `None`).
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// The reader positioned at the current entry's value.
    pub fn reader(&mut self) -> Option<&mut ValueReader<'a>> {
        self.reader.as_mut()
    }

    fn open(&mut self, payload: Option<&'a Packed>) {
        self.reader = None;
        self.left = 0;
        if let Some(p) = payload {
            let mut reader = ValueReader::new(p);
            if let Some(Item::Hash(n)) = reader.r.next() {
                self.left = n;
                self.reader = Some(reader);
            }
        }
    }

    /// The next unique key and where its value comes from.
    pub fn next_key(&mut self) -> Option<(KeyText<'a>, EntryValue<'a>)> {
        loop {
            match self.part {
                0 => {
                    self.part = 1;
                    self.open(self.attrs.first);
                    if let Some(k) = self.attrs.trace_key {
                        let key = KeyText::Borrowed(b"trace_key");
                        self.seen.insert(&key);
                        return Some((key, EntryValue::Str(k)));
                    }
                }
                1 | 2 => {
                    let part = self.part;
                    if let Some(reader) = self.reader.as_mut() {
                        let mut dropped = 0u32;
                        while self.left > 0 {
                            let key =
                                reader.unique_key(&mut self.left, &mut self.seen, &mut dropped);
                            let Some(key) = key else { break };
                            let replaced_later = part == 1
                                && self
                                    .replaced
                                    .as_ref()
                                    .is_some_and(|later| later.contains(key.bytes()));
                            if replaced_later {
                                // Not written here, and free for the second
                                // payload's value.
                                self.seen.remove(key.bytes());
                                dropped = dropped.saturating_add(1);
                                reader.skip_value();
                                continue;
                            }
                            self.dropped = self.dropped.saturating_add(dropped);
                            return Some((key, EntryValue::Next));
                        }
                        self.dropped = self.dropped.saturating_add(dropped);
                    }
                    self.part += 1;
                    if self.part == 2 {
                        self.open(self.attrs.second);
                    } else {
                        self.reader = None;
                    }
                }
                _ => return None,
            }
        }
    }
}

impl SeenKeys<'_> {
    fn remove(&mut self, key: &[u8]) {
        match &mut self.index {
            Some(index) => {
                index.remove(key);
            }
            None => self.keys.retain(|k| k.bytes() != key),
        }
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

    /// Reads a whole attribute list as (key, item) pairs, nested values
    /// flattened in reading order.
    fn read_all(attrs: PayloadAttributes<'_>) -> (Vec<(String, Vec<String>)>, u32) {
        fn value(r: &mut ValueReader<'_>, depth: usize, out: &mut Vec<String>) {
            match r.value(depth) {
                AnyItem::Array(n) => {
                    out.push(format!("array({n})"));
                    for _ in 0..n {
                        value(r, depth + 1, out);
                    }
                }
                AnyItem::KvList(mut n) => {
                    out.push(format!("kvlist({n})"));
                    let mut seen = SeenKeys::default();
                    let mut dropped = 0;
                    while let Some(k) = r.unique_key(&mut n, &mut seen, &mut dropped) {
                        out.push(format!("key {}", Lossy(k.bytes())));
                        value(r, depth + 1, out);
                    }
                }
                other => out.push(format!("{other:?}")),
            }
        }
        let mut entries = attrs.entries();
        let mut out = Vec::new();
        while let Some((key, source)) = entries.next_key() {
            let mut items = Vec::new();
            match source {
                EntryValue::Str(s) => items.push(format!("str {}", s.to_string_lossy())),
                EntryValue::Next => value(entries.reader().unwrap(), 1, &mut items),
            }
            out.push((format!("{}{}", entries.prefix(), Lossy(key.bytes())), items));
        }
        (out, entries.dropped())
    }

    #[test]
    fn attribute_keys_are_unique_and_the_second_payload_wins() {
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
                Value::Hash(vec![
                    (Value::Int(1), Value::Nil),
                    (Value::string("1"), Value::Int(2)),
                ]),
            ),
        ]));
        let (entries, dropped) = read_all(PayloadAttributes::merged(&before, &after));
        assert_eq!(
            entries,
            vec![
                ("tasker.a".to_string(), vec!["Int(1)".to_string()]),
                ("tasker.b".to_string(), vec!["Double(0.5)".to_string()]),
                (
                    "tasker.c".to_string(),
                    vec![
                        "kvlist(2)".to_string(),
                        "key 1".to_string(),
                        "Empty".to_string()
                    ]
                ),
            ]
        );
        // "b" from before (replaced) and the second "a" were dropped; the
        // nested duplicate "1" is dropped without counting in the list.
        assert_eq!(dropped, 2);
    }

    #[test]
    fn the_trace_key_comes_first_and_shadows_a_payload_key() {
        let p = Packed::from_value(&Value::Hash(vec![
            (Value::symbol("trace_key"), Value::string("shadowed")),
            (Value::symbol("x"), Value::Float(f64::NAN)),
        ]));
        let key = Str::utf8("task_1");
        let (entries, dropped) = read_all(PayloadAttributes::span(Some(&key), &p));
        assert_eq!(entries[0].0, "tasker.trace_key");
        assert_eq!(entries[0].1, ["str task_1"]);
        assert_eq!(entries[1].1, [format!("{:?}", AnyItem::Text(b"NaN"))]);
        assert_eq!((entries.len(), dropped), (2, 1));
    }

    #[test]
    fn many_keys_switch_to_a_hash_index() {
        let mut pairs: Vec<(Value, Value)> = (0..100)
            .map(|i| (Value::string(&format!("k{i}")), Value::Int(i)))
            .collect();
        pairs.push((Value::string("k50"), Value::Int(-1)));
        let p = Packed::from_value(&Value::Hash(pairs));
        let (entries, dropped) = read_all(PayloadAttributes::span(None, &p));
        assert_eq!(entries.len(), 100);
        assert_eq!(dropped, 1);
    }

    #[test]
    fn doubles_that_json_cannot_carry_travel_by_name() {
        assert_eq!(double_item(1.5), AnyItem::Double(1.5));
        assert_eq!(double_item(f64::NAN), AnyItem::Text(b"NaN"));
        assert_eq!(double_item(f64::INFINITY), AnyItem::Text(b"Infinity"));
        assert_eq!(double_item(f64::NEG_INFINITY), AnyItem::Text(b"-Infinity"));
    }
}
