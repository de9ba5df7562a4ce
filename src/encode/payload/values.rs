//! Values: one payload value read as an OTLP AnyValue, streamed from the
//! packed buffer.

use super::keys::{key_of, KeyText, SeenKeys};
use super::text::text_of;
use crate::encode::limits::{cut_bytes, cut_text};
use crate::value::{Item, Packed, PackedReader, DEPTH_LIMIT_MARKER, MAX_DEPTH};

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
    pub(super) r: PackedReader<'a>,
    /// Characters a text value keeps (bytes a binary one), at any depth.
    text_limit: usize,
}

impl<'a> ValueReader<'a> {
    /// A reader whose text values are cut to `text_limit` characters (the
    /// attribute value length limit; cuts are counted).
    pub fn with_text_limit(payload: &'a Packed, text_limit: usize) -> Self {
        ValueReader {
            r: payload.reader(),
            text_limit,
        }
    }

    /// The next value. `depth` counts the containers above it (a payload's
    /// top-level Hash is 1); a container at [`MAX_DEPTH`] is skipped and
    /// stands as the depth-limit marker. A container's elements follow it.
    pub fn value(&mut self, depth: usize) -> AnyItem<'a> {
        match self.item(depth) {
            AnyItem::Text(t) => AnyItem::Text(cut_text(t, self.text_limit)),
            AnyItem::Bytes(b) => AnyItem::Bytes(cut_bytes(b, self.text_limit)),
            other => other,
        }
    }

    fn item(&mut self, depth: usize) -> AnyItem<'a> {
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
    pub(super) fn skip_value(&mut self) {
        if let Some(v) = self.r.next() {
            self.r.skip_elements(&v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn doubles_that_json_cannot_carry_travel_by_name() {
        assert_eq!(double_item(1.5), AnyItem::Double(1.5));
        assert_eq!(double_item(f64::NAN), AnyItem::Text(b"NaN"));
        assert_eq!(double_item(f64::INFINITY), AnyItem::Text(b"Infinity"));
        assert_eq!(double_item(f64::NEG_INFINITY), AnyItem::Text(b"-Infinity"));
    }
}
