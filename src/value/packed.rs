//! Packed payloads: a whole payload tree encoded in one immutable byte
//! buffer, with a writer that builds one and a reader that walks one.

use std::sync::Arc;

use super::{symbol_id, symbol_name, Encoding, Str, Value, DEPTH_LIMIT_MARKER, MAX_DEPTH};

mod tag {
    pub const NIL: u8 = 0;
    pub const FALSE: u8 = 1;
    pub const TRUE: u8 = 2;
    pub const INT: u8 = 3;
    pub const BIG_INT: u8 = 4;
    pub const FLOAT: u8 = 5;
    /// Strings: `STR + encoding code`; Symbols: `SYM + encoding code`.
    pub const STR: u8 = 6;
    pub const SYM: u8 = 10;
    pub const SYM_ID: u8 = 14;
    /// `SMALL_SYM_ID + n`: the Symbol numbered n, for n below `SMALL_SYM_IDS`.
    pub const SMALL_SYM_ID: u8 = 0x40;
    pub const SMALL_SYM_IDS: u32 = 0x80;
    pub const ARRAY: u8 = 15;
    pub const HASH: u8 = 16;

    pub const ENC_UTF8: u8 = 0;
    pub const ENC_US_ASCII: u8 = 1;
    pub const ENC_BINARY: u8 = 2;
    pub const ENC_OTHER: u8 = 3;
}

fn encoding_code(e: Encoding) -> u8 {
    match e {
        Encoding::Utf8 => tag::ENC_UTF8,
        Encoding::UsAscii => tag::ENC_US_ASCII,
        Encoding::Binary => tag::ENC_BINARY,
        Encoding::Other(_) => tag::ENC_OTHER,
    }
}

/// A payload in compact form: the whole tree encoded in one immutable byte
/// buffer (one allocation, a fraction of a [`Value`] tree's size, freed
/// in one step). Build it with a [`PackedWriter`] or from a [`Value`]; read it
/// with a [`PackedReader`] or back into a [`Value`] with [`Packed::to_value`].
///
/// Every `Packed` is at most [`MAX_DEPTH`] containers deep: deeper parts are
/// stored as [`DEPTH_LIMIT_MARKER`], so readers may recurse.
#[derive(Clone, PartialEq, Eq)]
pub struct Packed(Box<[u8]>);

impl Packed {
    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Heap bytes held.
    pub fn heap_size(&self) -> usize {
        self.0.len()
    }

    /// A reader positioned at the root value.
    pub fn reader(&self) -> PackedReader<'_> {
        PackedReader {
            bytes: &self.0,
            pos: 0,
        }
    }

    /// The payload as a [`Value`] tree.
    pub fn to_value(&self) -> Value {
        let mut r = self.reader();
        match r.next() {
            Some(item) => r.read_value(item, 1),
            None => Value::Nil,
        }
    }

    /// Packs a [`Value`] tree (containers deeper than [`MAX_DEPTH`] become
    /// [`DEPTH_LIMIT_MARKER`]).
    pub fn from_value(v: &Value) -> Packed {
        fn write(w: &mut PackedWriter, v: &Value, depth: usize) {
            match v {
                Value::Nil => w.nil(),
                Value::Bool(b) => w.bool(*b),
                Value::Int(n) => w.int(*n),
                Value::BigInt(d) => w.big_int(d),
                Value::Float(f) => w.float(*f),
                Value::Str(s) => w.str(s.bytes(), s.encoding()),
                Value::Sym(s) => w.sym(s),
                Value::Array(_) | Value::Hash(_) if depth > MAX_DEPTH => {
                    w.str(DEPTH_LIMIT_MARKER.as_bytes(), Encoding::Utf8)
                }
                Value::Array(items) => {
                    let mark = w.begin_array();
                    for item in items {
                        write(w, item, depth + 1);
                    }
                    w.end(mark, items.len());
                }
                Value::Hash(pairs) => {
                    let mark = w.begin_hash();
                    for (k, val) in pairs {
                        write(w, k, depth + 1);
                        write(w, val, depth + 1);
                    }
                    w.end(mark, pairs.len());
                }
            }
        }
        let mut w = PackedWriter::new();
        write(&mut w, v, 1);
        w.finish()
    }
}

impl Default for Packed {
    /// An empty Hash.
    fn default() -> Self {
        Packed::from_value(&Value::Hash(Vec::new()))
    }
}

impl From<Value> for Packed {
    fn from(v: Value) -> Packed {
        Packed::from_value(&v)
    }
}

impl From<&Value> for Packed {
    fn from(v: &Value) -> Packed {
        Packed::from_value(v)
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({:?})", self.to_value())
    }
}

/// Where a container's element count goes, filled in by [`PackedWriter::end`].
#[must_use]
pub struct ContainerMark(usize);

/// Builds a [`Packed`] payload value by value, in order: a container is
/// opened, its elements (a Hash's as key, value, key, value …) written, then
/// closed with its element count. The buffer is kept between payloads, so a
/// writer reused for many payloads allocates only for the finished ones.
#[derive(Default)]
pub struct PackedWriter {
    buf: Vec<u8>,
}

impl PackedWriter {
    pub fn new() -> Self {
        PackedWriter {
            buf: Vec::with_capacity(256),
        }
    }

    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.buf.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.buf.push(n as u8);
    }

    fn bytes_with_len(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    fn tagged_bytes(&mut self, base: u8, bytes: &[u8], encoding: Encoding) {
        self.buf.push(base + encoding_code(encoding));
        if let Encoding::Other(idx) = encoding {
            self.varint(zigzag(i64::from(idx)));
        }
        self.bytes_with_len(bytes);
    }

    pub fn nil(&mut self) {
        self.buf.push(tag::NIL);
    }

    pub fn bool(&mut self, b: bool) {
        self.buf.push(if b { tag::TRUE } else { tag::FALSE });
    }

    pub fn int(&mut self, n: i64) {
        self.buf.push(tag::INT);
        self.varint(zigzag(n));
    }

    /// An Integer beyond 64 bits, as its decimal digits.
    pub fn big_int(&mut self, digits: &str) {
        self.buf.push(tag::BIG_INT);
        self.bytes_with_len(digits.as_bytes());
    }

    pub fn float(&mut self, f: f64) {
        self.buf.push(tag::FLOAT);
        self.buf.extend_from_slice(&f.to_bits().to_le_bytes());
    }

    pub fn str(&mut self, bytes: &[u8], encoding: Encoding) {
        self.tagged_bytes(tag::STR, bytes, encoding);
    }

    /// A Symbol by its name, written by number when the name is numbered.
    pub fn sym(&mut self, name: &Str) {
        match symbol_id(name) {
            Some(id) => self.sym_id(id),
            None => self.sym_name(name.bytes(), name.encoding()),
        }
    }

    /// A Symbol by a number from [`symbol_id`].
    pub fn sym_id(&mut self, id: u32) {
        if id < tag::SMALL_SYM_IDS {
            // The first-numbered Symbols (payload keys, mostly) take one byte.
            self.buf.push(tag::SMALL_SYM_ID + id as u8);
        } else {
            self.buf.push(tag::SYM_ID);
            self.varint(u64::from(id));
        }
    }

    /// A Symbol by its name in full.
    pub fn sym_name(&mut self, bytes: &[u8], encoding: Encoding) {
        self.tagged_bytes(tag::SYM, bytes, encoding);
    }

    /// A container's tag, then its element count as a varint: one byte is
    /// kept for it, and `end` makes room for more when the count needs it.
    fn begin(&mut self, t: u8) -> ContainerMark {
        self.buf.push(t);
        let at = self.buf.len();
        self.buf.push(0);
        ContainerMark(at)
    }

    pub fn begin_array(&mut self) -> ContainerMark {
        self.begin(tag::ARRAY)
    }

    /// Opens a Hash; `count` given to [`PackedWriter::end`] is its number of pairs.
    pub fn begin_hash(&mut self) -> ContainerMark {
        self.begin(tag::HASH)
    }

    /// Closes a container: `count` elements (pairs for a Hash) were written.
    pub fn end(&mut self, mark: ContainerMark, count: usize) {
        let mut n = u32::try_from(count).unwrap_or(u32::MAX);
        let mut digits = [0u8; 5];
        let mut len = 0;
        loop {
            let more = n >= 0x80;
            digits[len] = (n as u8 & 0x7f) | if more { 0x80 } else { 0 };
            len += 1;
            n >>= 7;
            if !more {
                break;
            }
        }
        let at = mark.0;
        if at >= self.buf.len() {
            return;
        }
        if len > 1 {
            // Make room after the reserved byte by moving the elements along.
            let old_len = self.buf.len();
            self.buf.resize(old_len + len - 1, 0);
            self.buf.copy_within(at + 1..old_len, at + len);
        }
        self.buf[at..at + len].copy_from_slice(&digits[..len]);
    }

    /// The payload written since the last `finish` (or `clear`), as one
    /// exactly sized allocation; the writer is left empty for the next.
    pub fn finish(&mut self) -> Packed {
        let packed = Packed(Box::from(&self.buf[..]));
        self.clear();
        packed
    }

    /// Drops whatever was written since the last `finish`.
    pub fn clear(&mut self) {
        // A writer that once held a huge payload does not keep its buffer.
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::with_capacity(256);
        } else {
            self.buf.clear();
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// One value read from a [`Packed`] payload. A container's elements follow it:
/// `Array(n)` is followed by n values, `Hash(n)` by n key/value pairs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Item<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    /// Decimal digits with sign.
    BigInt(&'a [u8]),
    Float(f64),
    Str(&'a [u8], Encoding),
    /// A Symbol stored by name.
    Sym(&'a [u8], Encoding),
    /// A Symbol stored by number, with its name.
    SymId(u32, &'static Arc<Str>),
    Array(u32),
    Hash(u32),
}

/// Reads a [`Packed`] payload value by value, in the order it was written.
/// Malformed input ends the reading (`None`); it never panics.
pub struct PackedReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> PackedReader<'a> {
    /// Reads `item` (just read, at container depth `depth`) and what follows
    /// it into a [`Value`] tree. A container deeper than [`MAX_DEPTH`] (only
    /// a malformed buffer has one) is skipped and read as the depth marker;
    /// a buffer that ends early ends the tree there.
    pub fn read_value(&mut self, item: Item<'a>, depth: usize) -> Value {
        match item {
            Item::Nil => Value::Nil,
            Item::Bool(b) => Value::Bool(b),
            Item::Int(n) => Value::Int(n),
            Item::BigInt(d) => Value::BigInt(String::from_utf8_lossy(d).into()),
            Item::Float(f) => Value::Float(f),
            Item::Str(b, e) => Value::Str(Str::new(b, e)),
            Item::Sym(b, e) => Value::Sym(Arc::new(Str::new(b, e))),
            Item::SymId(_, name) => Value::Sym(name.clone()),
            Item::Array(_) | Item::Hash(_) if depth > MAX_DEPTH => {
                self.skip_elements(&item);
                Value::depth_limit_marker()
            }
            Item::Array(n) => Value::Array(
                (0..n)
                    .map_while(|_| self.next().map(|i| self.read_value(i, depth + 1)))
                    .collect(),
            ),
            Item::Hash(n) => {
                let mut pairs = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let Some(k) = self.next() else { break };
                    let k = self.read_value(k, depth + 1);
                    let Some(v) = self.next() else { break };
                    pairs.push((k, self.read_value(v, depth + 1)));
                }
                Value::Hash(pairs)
            }
        }
    }

    /// Skips the elements that follow `item`, if it is a container.
    pub fn skip_elements(&mut self, item: &Item<'_>) {
        let children = |item: &Item<'_>| match item {
            Item::Array(n) => u64::from(*n),
            Item::Hash(n) => 2 * u64::from(*n),
            _ => 0,
        };
        let mut pending = children(item);
        while pending > 0 {
            match self.next() {
                Some(next) => pending = pending - 1 + children(&next),
                None => return,
            }
        }
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift >= 64 {
                return None;
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
            shift += 7;
        }
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn encoded(&mut self, code: u8) -> Option<(&'a [u8], Encoding)> {
        let encoding = match code {
            tag::ENC_UTF8 => Encoding::Utf8,
            tag::ENC_US_ASCII => Encoding::UsAscii,
            tag::ENC_BINARY => Encoding::Binary,
            _ => Encoding::Other(i32::try_from(unzigzag(self.varint()?)).ok()?),
        };
        let len = usize::try_from(self.varint()?).ok()?;
        Some((self.take(len)?, encoding))
    }

    /// A container's element count; every element takes at least a byte, so
    /// a count beyond the bytes left is malformed.
    fn count(&mut self, per_element: usize) -> Option<u32> {
        let n = u32::try_from(self.varint()?).ok()?;
        let left = self.bytes.len() - self.pos;
        (n as usize)
            .checked_mul(per_element)
            .filter(|&need| need <= left)?;
        Some(n)
    }

    /// The next value, or `None` at the end (or on malformed input).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Item<'a>> {
        let t = self.byte()?;
        Some(match t {
            tag::NIL => Item::Nil,
            tag::FALSE => Item::Bool(false),
            tag::TRUE => Item::Bool(true),
            tag::INT => Item::Int(unzigzag(self.varint()?)),
            tag::BIG_INT => {
                let len = usize::try_from(self.varint()?).ok()?;
                Item::BigInt(self.take(len)?)
            }
            tag::FLOAT => {
                let b = self.take(8)?;
                let mut bits = [0u8; 8];
                bits.copy_from_slice(b);
                Item::Float(f64::from_bits(u64::from_le_bytes(bits)))
            }
            t if (tag::STR..tag::STR + 4).contains(&t) => {
                let (b, e) = self.encoded(t - tag::STR)?;
                Item::Str(b, e)
            }
            t if (tag::SYM..tag::SYM + 4).contains(&t) => {
                let (b, e) = self.encoded(t - tag::SYM)?;
                Item::Sym(b, e)
            }
            tag::SYM_ID => {
                let id = u32::try_from(self.varint()?).ok()?;
                Item::SymId(id, symbol_name(id)?)
            }
            t if (tag::SMALL_SYM_ID..tag::SMALL_SYM_ID + tag::SMALL_SYM_IDS as u8).contains(&t) => {
                let id = u32::from(t - tag::SMALL_SYM_ID);
                Item::SymId(id, symbol_name(id)?)
            }
            tag::ARRAY => Item::Array(self.count(1)?),
            tag::HASH => Item::Hash(self.count(2)?),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        Value::Hash(vec![
            (Value::symbol("task_id"), Value::Int(42)),
            (Value::string("name"), Value::string("order_fulfillment")),
            (
                Value::symbol("context"),
                Value::Hash(vec![
                    (Value::Int(-7), Value::Float(f64::NAN)),
                    (Value::Nil, Value::Bool(true)),
                    (Value::Bool(false), Value::Float(-0.0)),
                    (
                        Value::symbol("tags"),
                        Value::Array(vec![
                            Value::Str(Str::new(vec![0xff, 0x00], Encoding::Binary)),
                            Value::Str(Str::new(b"x".to_vec(), Encoding::Other(37))),
                            Value::Str(Str::new(b"ascii".to_vec(), Encoding::UsAscii)),
                            Value::Sym(Arc::new(Str::new(vec![0xe9], Encoding::Other(5)))),
                            Value::BigInt("-123456789012345678901234567890".into()),
                            Value::Int(i64::MIN),
                            Value::Int(i64::MAX),
                            Value::Array(vec![]),
                            Value::Hash(vec![]),
                        ]),
                    ),
                ]),
            ),
        ])
    }

    /// Equality that treats NaN as equal to NaN and tells -0.0 from 0.0.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Hash(x), Value::Hash(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((ka, va), (kb, vb))| same(ka, kb) && same(va, vb))
            }
            _ => a == b,
        }
    }

    #[test]
    fn packed_round_trips_every_kind_of_value() {
        let v = sample();
        let packed = Packed::from_value(&v);
        assert!(same(&packed.to_value(), &v));
        // Much smaller than the tree it stands for.
        assert!(
            packed.heap_size() * 3 < v.heap_size(),
            "{} vs {}",
            packed.heap_size(),
            v.heap_size()
        );
    }

    #[test]
    fn packed_reader_yields_values_in_order() {
        let packed = Packed::from_value(&Value::Hash(vec![(
            Value::symbol("a"),
            Value::Array(vec![Value::Int(1), Value::string("b")]),
        )]));
        let mut r = packed.reader();
        assert_eq!(r.next(), Some(Item::Hash(1)));
        match r.next() {
            Some(Item::SymId(_, name)) => assert_eq!(name.bytes(), b"a"),
            other => panic!("expected a numbered Symbol, got {other:?}"),
        }
        assert_eq!(r.next(), Some(Item::Array(2)));
        assert_eq!(r.next(), Some(Item::Int(1)));
        assert_eq!(r.next(), Some(Item::Str(b"b", Encoding::Utf8)));
        assert_eq!(r.next(), None);
    }

    #[test]
    fn packing_stops_at_the_depth_limit() {
        let mut v = Value::Int(1);
        for _ in 0..(MAX_DEPTH + 10) {
            v = Value::Array(vec![v]);
        }
        let back = Packed::from_value(&v).to_value();
        assert_eq!(back.depth(), MAX_DEPTH);
        let mut inner = &back;
        for _ in 0..MAX_DEPTH {
            match inner {
                Value::Array(items) => inner = &items[0],
                other => panic!("expected an Array, got {other:?}"),
            }
        }
        assert_eq!(inner, &Value::depth_limit_marker());
    }

    #[test]
    fn malformed_packed_bytes_end_reading_without_panic() {
        let good = Packed::from_value(&sample());
        let bytes = good.as_bytes();
        for cut in 0..bytes.len() {
            let truncated = Packed(Box::from(&bytes[..cut]));
            let _ = truncated.to_value();
        }
        // A count far beyond the bytes left is refused.
        let huge = Packed(Box::from(
            &[tag::ARRAY, 0xff, 0xff, 0xff, 0x0f, tag::NIL][..],
        ));
        assert_eq!(huge.reader().next(), None);
        assert_eq!(Packed(Box::from(&[200u8][..])).reader().next(), None);
    }

    #[test]
    fn large_containers_round_trip() {
        for n in [0usize, 1, 127, 128, 300, 20_000] {
            let v = Value::Hash(vec![
                (
                    Value::symbol("items"),
                    Value::Array((0..n as i64).map(Value::Int).collect()),
                ),
                (
                    Value::symbol("pairs"),
                    Value::Hash((0..n as i64).map(|i| (Value::Int(i), Value::Nil)).collect()),
                ),
                (Value::symbol("after"), Value::string("end")),
            ]);
            assert_eq!(Packed::from_value(&v).to_value(), v, "n = {n}");
        }
    }

    #[test]
    fn writer_is_reusable() {
        let mut w = PackedWriter::new();
        w.int(5);
        let a = w.finish();
        assert!(w.is_empty());
        let mark = w.begin_array();
        w.nil();
        w.end(mark, 1);
        let b = w.finish();
        assert_eq!(a.to_value(), Value::Int(5));
        assert_eq!(b.to_value(), Value::Array(vec![Value::Nil]));
    }
}
