//! Keys: a key's text, and the keys already seen in a list (each key once,
//! the first wins).

use std::collections::HashSet;

use super::text::render_text;
use crate::value::{Item, Packed, PackedReader};

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
pub(super) fn key_of<'a>(r: &mut PackedReader<'a>, item: Item<'a>) -> KeyText<'a> {
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
    pub(super) fn contains(&self, key: &[u8]) -> bool {
        match &self.index {
            Some(index) => index.contains(key),
            None => self.keys.iter().any(|k| k.bytes() == key),
        }
    }

    /// Records `key`; false when it was already there.
    pub(super) fn insert(&mut self, key: &KeyText<'a>) -> bool {
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
pub(super) fn top_level_keys(payload: &Packed) -> SeenKeys<'_> {
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

impl SeenKeys<'_> {
    pub(super) fn remove(&mut self, key: &[u8]) {
        match &mut self.index {
            Some(index) => {
                index.remove(key);
            }
            None => self.keys.retain(|k| k.bytes() != key),
        }
    }
}
