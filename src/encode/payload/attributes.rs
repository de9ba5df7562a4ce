//! Attribute lists: a span's payload attributes (with the `tasker.` prefix
//! and the trace key first), each key once.

use super::keys::{top_level_keys, KeyText, SeenKeys};
use super::text::str_text;
use super::values::{AnyItem, ValueReader};
use crate::encode::limits::{count_cut, cut_bytes, cut_text, Limit};
use crate::value::{Item, Packed, Str};

/// Prefix of every span attribute taken from a payload.
pub const ATTRIBUTE_PREFIX: &str = "tasker.";

/// A span's (or event's, or the resource's) attributes from payloads:
/// `<prefix>trace_key` when given, then the payloads' top-level keys as
/// `<prefix><key>`. With two payloads (a child span's `.before_` and
/// `.after_`), a key in both takes the second's value (an overwrite, not
/// counted as dropped). Keys are unique; duplicates are dropped and counted, and so are the keys beyond a count
/// limit (see [`crate::encode::limits`]).
#[derive(Clone, Copy)]
pub struct PayloadAttributes<'a> {
    pub(crate) prefix: &'static str,
    pub(crate) trace_key: Option<&'a Str>,
    pub(crate) first: Option<&'a Packed>,
    pub(crate) second: Option<&'a Packed>,
    /// Attributes written at most; the others are dropped and counted as
    /// cut by `limit`.
    pub(crate) max: usize,
    /// Characters a text value keeps.
    pub(crate) value_length: usize,
    pub(crate) limit: Limit,
}

impl<'a> PayloadAttributes<'a> {
    pub(crate) fn span(trace_key: Option<&'a Str>, payload: &'a Packed) -> Self {
        PayloadAttributes {
            prefix: ATTRIBUTE_PREFIX,
            trace_key,
            first: Some(payload),
            second: None,
            max: usize::MAX,
            value_length: usize::MAX,
            limit: Limit::SpanAttributes,
        }
    }

    pub(crate) fn merged(first: &'a Packed, second: &'a Packed) -> Self {
        PayloadAttributes {
            second: Some(second),
            ..PayloadAttributes::span(None, first)
        }
    }

    /// Keys as they are (resource attributes, which no limit cuts).
    pub(crate) fn plain(payload: &'a Packed) -> Self {
        PayloadAttributes {
            prefix: "",
            ..PayloadAttributes::span(None, payload)
        }
    }

    /// With the span limits: at most `max` attributes (those beyond it are
    /// counted as cut by `limit`), text values of at most `value_length`
    /// characters.
    pub(crate) fn limited(self, max: usize, value_length: usize, limit: Limit) -> Self {
        PayloadAttributes {
            max,
            value_length,
            limit,
            ..self
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
            written: 0,
        }
    }
}

/// Where an attribute's value comes from.
pub(crate) enum EntryValue<'a> {
    /// The trace key, as text (or bytes when it is not text), cut to the
    /// value length limit.
    Item(AnyItem<'a>),
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
    /// Keys given so far (at most `attrs.max`).
    written: usize,
}

impl<'a> AttributeEntries<'a> {
    pub fn prefix(&self) -> &'static str {
        self.attrs.prefix
    }

    /// Entries dropped as duplicates or beyond the count limit so far (all
    /// of them once `next_key` has returned `None`).
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
            let mut reader = ValueReader::with_text_limit(p, self.attrs.value_length);
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
                        if self.written < self.attrs.max {
                            self.written += 1;
                            let limit = self.attrs.value_length;
                            let item = match str_text(k) {
                                Some(_) => AnyItem::Text(cut_text(k.bytes(), limit)),
                                None => AnyItem::Bytes(cut_bytes(k.bytes(), limit)),
                            };
                            return Some((key, EntryValue::Item(item)));
                        }
                        self.dropped = self.dropped.saturating_add(1);
                        count_cut(self.attrs.limit, 1);
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
                                // payload's value: an overwrite, as setting
                                // an attribute again is in OpenTelemetry,
                                // not a dropped attribute.
                                self.seen.remove(key.bytes());
                                reader.skip_value();
                                continue;
                            }
                            if self.written >= self.attrs.max {
                                dropped = dropped.saturating_add(1);
                                count_cut(self.attrs.limit, 1);
                                reader.skip_value();
                                continue;
                            }
                            self.written += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::payload::text::Lossy;
    use crate::value::Value;

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
                EntryValue::Item(item) => items.push(format!("{item:?}")),
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
        // The second "a" was dropped; "b" from before was replaced (not
        // dropped); the nested duplicate "1" is dropped without counting
        // in the list.
        assert_eq!(dropped, 1);
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
        assert_eq!(entries[0].1, [format!("{:?}", AnyItem::Text(b"task_1"))]);
        assert_eq!(entries[1].1, [format!("{:?}", AnyItem::Text(b"NaN"))]);
        assert_eq!((entries.len(), dropped), (2, 1));
    }
    #[test]
    fn the_count_limit_keeps_the_first_keys_and_drops_the_rest() {
        let p = Packed::from_value(&Value::Hash(
            (0..5)
                .map(|i| (Value::string(&format!("k{i}")), Value::string("abcdef")))
                .collect(),
        ));
        let key = Str::utf8("task_1");
        let limited = PayloadAttributes::span(Some(&key), &p).limited(3, 2, Limit::SpanAttributes);
        let (entries, dropped) = read_all(limited);
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["tasker.trace_key", "tasker.k0", "tasker.k1"]);
        assert_eq!(dropped, 3);
        assert_eq!(entries[1].1, [format!("{:?}", AnyItem::Text(b"ab"))]);
        let (entries, dropped) = read_all(PayloadAttributes::span(Some(&key), &p).limited(
            0,
            usize::MAX,
            Limit::EventAttributes,
        ));
        assert!(entries.is_empty());
        assert_eq!(dropped, 6);
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
}
