//! The owned value model a payload is copied into.
//!
//! A payload arrives as a Ruby object graph; the binding crate walks it once and
//! produces a [`Value`] tree that owns all its data. Nothing here refers to Ruby
//! memory, so a stored trace survives GC, compaction and fork without marking.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

/// Deepest container nesting that is copied. The payload Hash itself is level 1;
/// a Hash or Array found at a deeper level is stored as [`DEPTH_LIMIT_MARKER`].
pub const MAX_DEPTH: usize = 128;
/// Stored in place of a Hash or Array nested deeper than [`MAX_DEPTH`].
pub const DEPTH_LIMIT_MARKER: &str = "[depth limit]";
/// Stored in place of a Hash or Array that contains itself (the repeated occurrence).
pub const RECURSION_MARKER: &str = "[...]";

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

/// A Symbol's name. Symbols repeat across payloads, so they are shared.
pub type Sym = Arc<Str>;

/// One payload value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    /// An Integer that does not fit in 64 bits, as its decimal digits (with sign).
    BigInt(Box<str>),
    Float(f64),
    Str(Str),
    Sym(Sym),
    Array(Vec<Value>),
    /// Key/value pairs in insertion order; keys are any values.
    Hash(Vec<(Value, Value)>),
}

impl Value {
    /// A UTF-8 String value.
    pub fn string(s: &str) -> Value {
        Value::Str(Str::utf8(s))
    }

    /// A Symbol value.
    pub fn symbol(s: &str) -> Value {
        Value::Sym(Arc::new(Str::utf8(s)))
    }

    /// The marker stored for a container that contains itself.
    pub fn recursion_marker() -> Value {
        Value::string(RECURSION_MARKER)
    }

    /// The marker stored for a container nested deeper than [`MAX_DEPTH`].
    pub fn depth_limit_marker() -> Value {
        Value::string(DEPTH_LIMIT_MARKER)
    }

    /// Ruby truthiness: everything but nil and false.
    pub fn is_truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// Looks up a Symbol key in a Hash value (first match in insertion order).
    pub fn get_symbol_key(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Hash(pairs) => pairs.iter().find_map(|(k, v)| match k {
                Value::Sym(s) if s.bytes() == name.as_bytes() => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Approximate heap bytes owned by this value, for reporting memory to a GC.
    /// Iterative, so arbitrarily nested trees cannot exhaust the stack.
    pub fn heap_size(&self) -> usize {
        let mut total = 0usize;
        let mut stack: Vec<&Value> = vec![self];
        while let Some(v) = stack.pop() {
            match v {
                Value::BigInt(digits) => total += digits.len(),
                Value::Str(s) => total += s.heap_size(),
                Value::Array(items) => {
                    total += items.capacity() * std::mem::size_of::<Value>();
                    stack.extend(items.iter());
                }
                Value::Hash(pairs) => {
                    total += pairs.capacity() * std::mem::size_of::<(Value, Value)>();
                    for (k, val) in pairs {
                        stack.push(k);
                        stack.push(val);
                    }
                }
                _ => {}
            }
        }
        total
    }

    /// Nesting depth of containers (a scalar is 0, an empty Hash is 1).
    pub fn depth(&self) -> usize {
        let mut max = 0usize;
        let mut stack: Vec<(&Value, usize)> = vec![(self, 0)];
        while let Some((v, d)) = stack.pop() {
            match v {
                Value::Array(items) => {
                    max = max.max(d + 1);
                    stack.extend(items.iter().map(|i| (i, d + 1)));
                }
                Value::Hash(pairs) => {
                    max = max.max(d + 1);
                    for (k, val) in pairs {
                        stack.push((k, d + 1));
                        stack.push((val, d + 1));
                    }
                }
                _ => {}
            }
        }
        max
    }
}

impl Drop for Value {
    // The default recursive drop is bounded by MAX_DEPTH for values built by the
    // binding, but a Value built elsewhere may be deeper: flatten so that no
    // tree can overflow the stack when it is freed.
    fn drop(&mut self) {
        let mut pending: Vec<Value> = match self {
            Value::Array(items) if items.iter().any(Value::is_container) => std::mem::take(items),
            Value::Hash(pairs)
                if pairs
                    .iter()
                    .any(|(k, v)| k.is_container() || v.is_container()) =>
            {
                std::mem::take(pairs)
                    .into_iter()
                    .flat_map(|(k, v)| [k, v])
                    .collect()
            }
            _ => return,
        };
        while let Some(mut v) = pending.pop() {
            match &mut v {
                Value::Array(items) => pending.append(items),
                Value::Hash(pairs) => {
                    for (k, val) in std::mem::take(pairs) {
                        pending.push(k);
                        pending.push(val);
                    }
                }
                _ => {}
            }
        }
    }
}

impl Value {
    fn is_container(&self) -> bool {
        matches!(self, Value::Array(_) | Value::Hash(_))
    }
}

// ---------------------------------------------------------------------------
// Packed payloads
// ---------------------------------------------------------------------------

/// Symbol names that payloads refer to by number: at most this many are
/// numbered; later names are stored in full.
pub const MAX_NUMBERED_SYMBOLS: usize = 16_384;

/// Numbered names are kept in chunks of this many, made on first use.
const SYMBOL_CHUNK: usize = 256;

type NameSlots = Box<[OnceLock<Arc<Str>>]>;

/// The process-wide table of numbered Symbol names. Names are only ever added,
/// and a number once given never changes, so readers need no lock: each slot
/// is set once, before its number is handed out.
struct SymbolTable {
    ids: Mutex<HashMap<Arc<Str>, u32>>,
    chunks: Box<[OnceLock<NameSlots>]>,
}

fn symbol_table() -> &'static SymbolTable {
    static TABLE: OnceLock<SymbolTable> = OnceLock::new();
    TABLE.get_or_init(|| SymbolTable {
        ids: Mutex::new(HashMap::new()),
        chunks: (0..MAX_NUMBERED_SYMBOLS / SYMBOL_CHUNK)
            .map(|_| OnceLock::new())
            .collect(),
    })
}

fn name_slot(id: usize, create: bool) -> Option<&'static OnceLock<Arc<Str>>> {
    let chunk = symbol_table().chunks.get(id / SYMBOL_CHUNK)?;
    let slots = if create {
        chunk.get_or_init(|| (0..SYMBOL_CHUNK).map(|_| OnceLock::new()).collect())
    } else {
        chunk.get()?
    };
    slots.get(id % SYMBOL_CHUNK)
}

/// The number of a Symbol name, numbering it on first sight; `None` once the
/// table is full (the name is then stored in full wherever it occurs).
pub fn symbol_id(name: &Str) -> Option<u32> {
    let mut ids = symbol_table().ids.lock();
    if let Some(&id) = ids.get(name) {
        return Some(id);
    }
    let id = ids.len();
    let slot = name_slot(id, true)?;
    let name = Arc::new(name.clone());
    let _ = slot.set(name.clone());
    ids.insert(name, id as u32);
    Some(id as u32)
}

/// The name a Symbol number stands for.
pub fn symbol_name(id: u32) -> Option<&'static Arc<Str>> {
    name_slot(id as usize, false)?.get()
}

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
        fn read(r: &mut PackedReader<'_>, depth: usize) -> Value {
            match r.next() {
                None => Value::Nil,
                Some(item) => match item {
                    Item::Nil => Value::Nil,
                    Item::Bool(b) => Value::Bool(b),
                    Item::Int(n) => Value::Int(n),
                    Item::BigInt(d) => Value::BigInt(String::from_utf8_lossy(d).into()),
                    Item::Float(f) => Value::Float(f),
                    Item::Str(b, e) => Value::Str(Str::new(b, e)),
                    Item::Sym(b, e) => Value::Sym(Arc::new(Str::new(b, e))),
                    Item::SymId(_, name) => Value::Sym(name.clone()),
                    // Only a malformed buffer nests deeper; stop reading it.
                    Item::Array(_) | Item::Hash(_) if depth > MAX_DEPTH => {
                        Value::depth_limit_marker()
                    }
                    Item::Array(n) => Value::Array((0..n).map(|_| read(r, depth + 1)).collect()),
                    Item::Hash(n) => Value::Hash(
                        (0..n)
                            .map(|_| {
                                let k = read(r, depth + 1);
                                (k, read(r, depth + 1))
                            })
                            .collect(),
                    ),
                },
            }
        }
        read(&mut self.reader(), 1)
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

    #[test]
    fn truthiness_follows_ruby() {
        assert!(!Value::Nil.is_truthy());
        assert!(!Value::Bool(false).is_truthy());
        assert!(Value::Bool(true).is_truthy());
        assert!(Value::Int(0).is_truthy());
        assert!(Value::string("").is_truthy());
    }

    #[test]
    fn symbol_lookup_ignores_string_keys() {
        let h = Value::Hash(vec![
            (Value::string("task_id"), Value::Int(1)),
            (Value::symbol("task_id"), Value::Int(2)),
        ]);
        assert_eq!(h.get_symbol_key("task_id"), Some(&Value::Int(2)));
        assert_eq!(h.get_symbol_key("missing"), None);
        assert_eq!(Value::Int(1).get_symbol_key("task_id"), None);
    }

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

    #[test]
    fn very_deep_values_drop_and_measure_without_overflow() {
        let mut v = Value::Nil;
        for _ in 0..200_000 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(v.depth(), 200_000);
        assert!(v.heap_size() > 0);
        drop(v);
        let mut h = Value::Nil;
        for _ in 0..200_000 {
            h = Value::Hash(vec![(Value::Int(1), h)]);
        }
        drop(h);
    }

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
    fn symbols_are_numbered_once() {
        let a = symbol_id(&Str::utf8("numbered_once")).unwrap();
        let b = symbol_id(&Str::utf8("numbered_once")).unwrap();
        assert_eq!(a, b);
        assert_eq!(symbol_name(a).unwrap().bytes(), b"numbered_once");
        // Same bytes, other encoding: another Symbol.
        let c = symbol_id(&Str::new(b"numbered_once".to_vec(), Encoding::Binary)).unwrap();
        assert_ne!(a, c);
        assert_eq!(symbol_name(u32::MAX), None);
        // Symbols numbered beyond the one-byte range round trip too.
        let many: Vec<Value> = (0..300)
            .map(|i| Value::symbol(&format!("many_{i}")))
            .collect();
        let v = Value::Array(many);
        assert_eq!(Packed::from_value(&v).to_value(), v);
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

    #[test]
    fn heap_size_counts_strings_and_containers() {
        let v = Value::Hash(vec![(Value::symbol("a"), Value::string("hello"))]);
        assert!(v.heap_size() >= 5 + std::mem::size_of::<(Value, Value)>());
    }
}
