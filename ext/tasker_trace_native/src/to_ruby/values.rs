//! Core values and records to new Ruby objects.
//!
//! Runs only on data already copied out of the store (a snapshot), with no
//! lock held: building Ruby objects allocates, and allocation can run GC.
//!
//! Building can also raise: a Hash key's `#hash` or `#eql?` (an Array or Hash
//! key, when an application redefines them) and any allocation
//! (`NoMemoryError`). So whole results are built inside
//! [`crate::helpers::errors::build_protected`]:
//! the builders below own nothing with a destructor (their locals are VALUEs,
//! readers and stack buffers; the snapshot is owned by the caller, outside),
//! so a Ruby exception that unwinds past them skips no destructor, stops at
//! the protect boundary and is raised once the caller has freed its copy.
//! Every object built is reachable from the Rust stack (which Ruby's GC scans
//! conservatively) until it is stored into its parent: small Hashes are built
//! from key/value arrays on the stack and filled in one call.

use std::ffi::c_void;
use std::sync::OnceLock;

use magnus::rb_sys::FromRawValue;
use magnus::Value as RValue;
use rb_sys::VALUE;
use tasker_trace_core::model::backend::store::{GenericRecord, SpanEntry, TraceRecord};
use tasker_trace_core::model::backend::Record;
use tasker_trace_core::support::clock::{TimestampFormatter, STAMP_BUF};
use tasker_trace_core::value::{Encoding, Str, Value};
use tasker_trace_core::value::{Item, Packed, PackedReader};

use crate::helpers::static_ids::{self, sym};

/// A constructor of Hashes sized for a number of entries.
type HashNewCapa = unsafe extern "C" fn(std::os::raw::c_long) -> VALUE;

/// `rb_hash_new_capa` (public from Ruby 3.2), or on Ruby 3.1 the VM's own
/// `rb_hash_new_with_size` where the library exports it: looked up once in the
/// loaded process, so the extension still loads where neither exists (then
/// Hashes grow as they fill).
fn hash_new_capa() -> Option<HashNewCapa> {
    static FOUND: OnceLock<Option<HashNewCapa>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        ["rb_hash_new_capa\0", "rb_hash_new_with_size\0"]
            .iter()
            .find_map(|name| {
                let p = process_symbol(name);
                // SAFETY: both functions take a size (a C long / st_index_t,
                // passed the same way for sizes in range) and return a new
                // Hash VALUE.
                (!p.is_null())
                    .then(|| unsafe { std::mem::transmute::<*mut c_void, HashNewCapa>(p) })
            })
    })
}

/// The address of a symbol already loaded in this process, or null.
#[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
fn process_symbol(nul_terminated: &str) -> *mut c_void {
    extern "C" {
        fn dlsym(handle: *mut c_void, symbol: *const std::os::raw::c_char) -> *mut c_void;
    }
    #[cfg(target_os = "linux")]
    let default_handle: *mut c_void = std::ptr::null_mut();
    #[cfg(not(target_os = "linux"))]
    let default_handle: *mut c_void = -2isize as *mut c_void;
    // SAFETY: looks a NUL-terminated name up among the loaded libraries.
    unsafe { dlsym(default_handle, nul_terminated.as_ptr() as *const _) }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "freebsd")))]
fn process_symbol(_nul_terminated: &str) -> *mut c_void {
    std::ptr::null_mut()
}

/// A new empty Hash with room for `capacity` entries where the VM allows.
pub fn new_hash(capacity: usize) -> VALUE {
    if capacity > 8 {
        if let (Some(new_capa), Ok(capa)) = (hash_new_capa(), i32::try_from(capacity)) {
            // SAFETY: allocates a new empty Hash sized for `capa` entries.
            return unsafe { new_capa(std::os::raw::c_long::from(capa)) };
        }
    }
    // SAFETY: allocates a new empty Hash.
    unsafe { rb_sys::rb_hash_new() }
}

pub fn hash_set(hash: VALUE, key: VALUE, val: VALUE) {
    // SAFETY: `hash` is a Hash this module just created (not frozen, no
    // default proc); keys are Symbols, Strings or converted values.
    unsafe {
        rb_sys::rb_hash_aset(hash, key, val);
    }
}

/// Sets `key` unless the Hash has it already: of two stored keys that are
/// equal as Ruby keys (two objects stored by the same `to_s`, equal Strings
/// of a compare_by_identity Hash) the first keeps its value, as in OTLP
/// export, which sends each attribute key once, the first.
fn hash_set_first(hash: VALUE, key: VALUE, val: VALUE) {
    // SAFETY: as in `hash_set`; the lookup hashes a converted key (no
    // application code unless it redefines a core class's `hash`).
    let absent = unsafe { rb_sys::rb_hash_lookup2(hash, key, rb_sys::Qundef as VALUE) }
        == rb_sys::Qundef as VALUE;
    if absent {
        hash_set(hash, key, val);
    }
}

/// The number of entries of a Hash.
fn hash_len(hash: VALUE) -> usize {
    // SAFETY: `hash` is a T_HASH; its size is read only.
    unsafe { rb_sys::RHASH_SIZE(hash) as usize }
}

pub fn str_to_ruby(s: &Str) -> VALUE {
    bytes_to_ruby(s.bytes(), s.encoding())
}

/// A new String of these bytes labelled with a built-in encoding. Made as a
/// binary String and labelled in its flags (what `ENCODING_SET_INLINED`
/// does), which skips `rb_enc_associate`'s checks: the String is new, not
/// frozen, its coderange unknown, and UTF-8 and US-ASCII end with one NUL
/// like binary.
fn builtin_str_new(bytes: &[u8], encoding: Encoding) -> VALUE {
    use rb_sys::ruby_encoding_consts::{RUBY_ENCODING_INLINE_MAX, RUBY_ENCODING_SHIFT};
    let idx = static_ids::builtin_index(encoding).unwrap_or(0);
    // SAFETY: copies `bytes` into a new binary String.
    let s = unsafe { rb_sys::rb_str_new(bytes.as_ptr() as *const _, bytes.len() as _) };
    if idx > 0 && idx < RUBY_ENCODING_INLINE_MAX as i32 {
        let shift = RUBY_ENCODING_SHIFT as u32;
        let mask = (RUBY_ENCODING_INLINE_MAX as VALUE) << shift;
        // SAFETY: `s` is the String just made, a heap object with an RBasic
        // header that nothing else refers to yet.
        unsafe {
            let basic = s as *mut rb_sys::RBasic;
            (*basic).flags = ((*basic).flags & !mask) | ((idx as VALUE) << shift);
        }
    } else if idx != 0 {
        // SAFETY: labels the new String with a valid encoding index.
        unsafe {
            rb_sys::rb_enc_associate_index(s, idx);
        }
    }
    s
}

pub fn utf8_to_ruby(s: &str) -> VALUE {
    builtin_str_new(s.as_bytes(), Encoding::Utf8)
}

/// A new binary (ASCII-8BIT) String of these bytes.
pub fn binary_to_ruby(bytes: &[u8]) -> VALUE {
    bytes_to_ruby(bytes, Encoding::Binary)
}

/// A raw VALUE as a magnus value, for calling Ruby methods through magnus or
/// returning it from a method.
pub fn wrap(v: VALUE) -> RValue {
    // SAFETY: `v` came from Ruby on this thread during this call and is still
    // on the stack, where the GC sees it.
    unsafe { RValue::from_raw(v) }
}

/// A count as an Integer; counts beyond `i64::MAX` saturate.
pub fn count_to_ruby(n: impl TryInto<i64>) -> VALUE {
    int_to_ruby(n.try_into().unwrap_or(i64::MAX))
}

pub fn int_to_ruby(n: i64) -> VALUE {
    // SAFETY: builds a Fixnum or Bignum from a machine integer.
    unsafe { rb_sys::rb_ll2inum(n) }
}

pub fn float_to_ruby(f: f64) -> VALUE {
    // SAFETY: builds a Float (flonum or heap).
    unsafe { rb_sys::rb_float_new(f) }
}

pub fn bool_to_ruby(b: bool) -> VALUE {
    if b {
        rb_sys::Qtrue as VALUE
    } else {
        rb_sys::Qfalse as VALUE
    }
}

pub fn nil() -> VALUE {
    rb_sys::Qnil as VALUE
}

/// A new Array of `items`, each made by `to_ruby` and pushed as soon as it
/// exists (until then it is on this stack frame, where the GC sees it).
pub fn array_of<T>(
    items: impl ExactSizeIterator<Item = T>,
    mut to_ruby: impl FnMut(T) -> VALUE,
) -> VALUE {
    // SAFETY: allocates a new empty Array.
    let ary = unsafe { rb_sys::rb_ary_new_capa(items.len() as _) };
    for item in items {
        let elem = to_ruby(item);
        // SAFETY: `ary` is the Array created above, not yet shared.
        unsafe {
            rb_sys::rb_ary_push(ary, elem);
        }
    }
    ary
}

/// A core value tree as a new Ruby object of the class it arrived as
/// (settings; stored payloads are packed: see `packed_to_ruby`).
pub fn value_to_ruby(v: &Value) -> VALUE {
    match v {
        Value::Nil => nil(),
        Value::Bool(b) => bool_to_ruby(*b),
        Value::Int(n) => int_to_ruby(*n),
        Value::BigInt(digits) => {
            let s = utf8_to_ruby(digits);
            // SAFETY: `s` holds decimal digits written by rb_big2str.
            unsafe { rb_sys::rb_str_to_inum(s, 10, 0) }
        }
        Value::Float(f) => float_to_ruby(*f),
        Value::Str(s) => str_to_ruby(s),
        Value::Sym(name) => intern(str_to_ruby(name), name.bytes()),
        Value::Array(items) => array_of(items.iter(), value_to_ruby),
        Value::Hash(pairs) => {
            let hash = new_hash(pairs.len());
            for (k, val) in pairs {
                let key = value_to_ruby(k);
                let value = value_to_ruby(val);
                hash_set(hash, key, value);
            }
            hash
        }
    }
}

fn encoding_ptr(e: Encoding) -> *mut rb_sys::rb_encoding {
    // SAFETY: these return the VM's built-in encodings, or null for an index
    // this VM does not know.
    unsafe {
        match e {
            Encoding::Utf8 => rb_sys::rb_utf8_encoding(),
            Encoding::UsAscii => rb_sys::rb_usascii_encoding(),
            Encoding::Binary => rb_sys::rb_ascii8bit_encoding(),
            Encoding::Other(idx) => rb_sys::rb_enc_from_index(idx),
        }
    }
}

/// The Symbol with this name: the existing one when there is one (looked up
/// without allocating), else a new, collectable dynamic Symbol.
fn symbol_to_ruby(bytes: &[u8], encoding: Encoding) -> VALUE {
    let enc = encoding_ptr(encoding);
    // Bytes not valid in their encoding (a Symbol Ruby made from such a
    // String all the same) are never looked up by name: the lookup raises
    // EncodingError about a stack-made String, unsafe should a GC run.
    let valid = match encoding {
        Encoding::Binary => true,
        _ if bytes.is_ascii() => true,
        Encoding::Utf8 => std::str::from_utf8(bytes).is_ok(),
        _ => false,
    };
    if !enc.is_null() && valid {
        // SAFETY: looks the name up in the symbol table; creates nothing
        // (the bytes are valid in the encoding, so it does not raise).
        let found = unsafe {
            rb_sys::rb_check_symbol_cstr(bytes.as_ptr() as *const _, bytes.len() as _, enc)
        };
        if found != nil() {
            return found;
        }
    }
    intern(bytes_to_ruby(bytes, encoding), bytes)
}

/// The Symbol named by the String `s` (of `bytes`): the existing one, else
/// a new, collectable dynamic Symbol. A name Ruby refuses as a Symbol in
/// its encoding gives the Symbol of its bytes as binary, else `s` itself:
/// what was recorded is always given back, never an EncodingError.
fn intern(s: VALUE, bytes: &[u8]) -> VALUE {
    // SAFETY: rb_str_intern returns the Symbol named by a String; it may
    // raise EncodingError, under protect.
    if let Ok(symbol) = magnus::rb_sys::protect(|| unsafe { rb_sys::rb_str_intern(s) }) {
        return symbol;
    }
    let binary = bytes_to_ruby(bytes, Encoding::Binary);
    // SAFETY: as above; a binary name is always valid.
    magnus::rb_sys::protect(|| unsafe { rb_sys::rb_str_intern(binary) }).unwrap_or(s)
}

/// A new String of these bytes, labelled with an encoding of this VM (binary
/// when the index is unknown).
fn bytes_to_ruby(bytes: &[u8], encoding: Encoding) -> VALUE {
    let ptr = bytes.as_ptr() as *const _;
    let len = bytes.len() as _;
    // SAFETY: copies `len` bytes from a live slice into a new String labelled
    // with an encoding of this VM (binary when the index is unknown).
    unsafe {
        match encoding {
            Encoding::Utf8 | Encoding::UsAscii => builtin_str_new(bytes, encoding),
            Encoding::Binary => rb_sys::rb_str_new(ptr, len),
            Encoding::Other(_) => {
                let enc = encoding_ptr(encoding);
                if enc.is_null() {
                    rb_sys::rb_str_new(ptr, len)
                } else {
                    rb_sys::rb_enc_str_new(ptr, len, enc)
                }
            }
        }
    }
}

/// A frozen, deduplicated String: what a Hash stores for a String key.
fn interned_to_ruby(bytes: &[u8], encoding: Encoding) -> VALUE {
    let enc = encoding_ptr(encoding);
    if enc.is_null() {
        // An encoding this VM does not know: a plain String (the Hash
        // freezes its own copy, as for any String key).
        return bytes_to_ruby(bytes, encoding);
    }
    // SAFETY: copies the bytes into (or finds) the VM's frozen string of that
    // content and encoding.
    unsafe { rb_sys::rb_enc_interned_str(bytes.as_ptr() as *const _, bytes.len() as _, enc) }
}

/// The Symbol a core Symbol number stands for.
fn numbered_symbol_to_ruby(n: u32, name: &Str) -> VALUE {
    if let Some(symbol) = static_ids::numbered_symbol(n) {
        return symbol;
    }
    let symbol = symbol_to_ruby(name.bytes(), name.encoding());
    static_ids::remember_numbered_symbol(n, symbol);
    symbol
}

/// Pairs up to this many are built on the stack and inserted in one call.
const BULK_PAIRS: usize = 8;

/// Builds a new Hash from pairs whose VALUEs are on this stack frame (so the
/// GC sees them) in one call.
pub fn hash_from_pairs(kv: &[VALUE]) -> VALUE {
    // SAFETY: a new Hash; `kv` holds key, value, key, value … of live objects.
    unsafe {
        let hash = new_hash(kv.len() / 2);
        if !kv.is_empty() {
            rb_sys::rb_hash_bulk_insert(kv.len() as _, kv.as_ptr(), hash);
        }
        hash
    }
}

/// A Hash key read from a packed payload: Strings as the frozen String a Hash
/// would keep for them anyway.
fn read_key_to_ruby(r: &mut PackedReader<'_>) -> VALUE {
    match r.next() {
        Some(Item::Str(bytes, encoding)) => interned_to_ruby(bytes, encoding),
        Some(item) => item_to_ruby(item, r),
        None => nil(),
    }
}

/// The next value of a packed payload as a new Ruby object (nil where the
/// buffer ends early). Packed values are at most MAX_DEPTH deep, so the
/// recursion is bounded.
fn read_to_ruby(r: &mut PackedReader<'_>) -> VALUE {
    match r.next() {
        Some(item) => item_to_ruby(item, r),
        None => nil(),
    }
}

fn item_to_ruby(item: Item<'_>, r: &mut PackedReader<'_>) -> VALUE {
    match item {
        Item::Nil => nil(),
        Item::Bool(b) => bool_to_ruby(b),
        Item::Int(n) => int_to_ruby(n),
        Item::BigInt(digits) => {
            let s = bytes_to_ruby(digits, Encoding::Utf8);
            // SAFETY: `s` holds decimal digits written by rb_big2str.
            unsafe { rb_sys::rb_str_to_inum(s, 10, 0) }
        }
        Item::Float(f) => float_to_ruby(f),
        Item::Str(bytes, encoding) => bytes_to_ruby(bytes, encoding),
        Item::Sym(bytes, encoding) => symbol_to_ruby(bytes, encoding),
        Item::SymId(n, name) => numbered_symbol_to_ruby(n, name),
        Item::Array(n) => {
            // SAFETY: a new Array; each element is pushed as soon as it exists.
            let ary = unsafe { rb_sys::rb_ary_new_capa(n as _) };
            for _ in 0..n {
                let elem = read_to_ruby(r);
                // SAFETY: `ary` is the Array created above.
                unsafe {
                    rb_sys::rb_ary_push(ary, elem);
                }
            }
            ary
        }
        Item::Hash(n) if n as usize <= BULK_PAIRS => {
            let n = n as usize;
            let mut kv = [nil(); 2 * BULK_PAIRS];
            for i in 0..n {
                kv[2 * i] = read_key_to_ruby(r);
                kv[2 * i + 1] = read_to_ruby(r);
            }
            let hash = hash_from_pairs(&kv[..2 * n]);
            if hash_len(hash) == n {
                return hash;
            }
            // Two keys fell together, the later value won: first wins instead.
            let first = new_hash(n);
            for pair in kv[..2 * n].chunks_exact(2) {
                hash_set_first(first, pair[0], pair[1]);
            }
            first
        }
        Item::Hash(n) => {
            let hash = new_hash(n as usize);
            for _ in 0..n {
                let key = read_key_to_ruby(r);
                let value = read_to_ruby(r);
                hash_set_first(hash, key, value);
            }
            hash
        }
    }
}

/// A packed payload as new Ruby objects of the classes it arrived as.
pub fn packed_to_ruby(p: &Packed) -> VALUE {
    read_to_ruby(&mut p.reader())
}

/// A timestamp as a new String, formatted on the stack.
fn stamp_to_ruby(fmt: &mut TimestampFormatter, wall_ns: i64) -> VALUE {
    let mut buf = [0u8; STAMP_BUF];
    utf8_to_ruby(fmt.format_into(wall_ns, &mut buf))
}

fn span_to_ruby(span: &SpanEntry, fmt: &mut TimestampFormatter) -> VALUE {
    let kv = [
        sym(|s| s.timestamp),
        stamp_to_ruby(fmt, span.at.wall_ns),
        sym(|s| s.event_name),
        str_to_ruby(&span.event_name),
        sym(|s| s.payload),
        packed_to_ruby(&span.payload),
    ];
    hash_from_pairs(&kv)
}

fn start_record_to_ruby(t: &TraceRecord, fmt: &mut TimestampFormatter) -> VALUE {
    // SAFETY: a new Array for the spans; each is pushed as soon as it exists.
    let spans = unsafe { rb_sys::rb_ary_new_capa(t.spans.len() as _) };
    for span in &t.spans {
        let sh = span_to_ruby(span, fmt);
        // SAFETY: `spans` is the Array created above.
        unsafe {
            rb_sys::rb_ary_push(spans, sh);
        }
    }
    let mut kv = [nil(); 14];
    kv[..8].copy_from_slice(&[
        sym(|s| s.start_time),
        stamp_to_ruby(fmt, t.start.wall_ns),
        sym(|s| s.event_name),
        str_to_ruby(&t.event_name),
        sym(|s| s.payload),
        packed_to_ruby(&t.payload),
        sym(|s| s.spans),
        spans,
    ]);
    let len = match &t.finish {
        Some(f) => {
            kv[8..].copy_from_slice(&[
                sym(|s| s.end_time),
                stamp_to_ruby(fmt, f.at.wall_ns),
                sym(|s| s.duration),
                float_to_ruby(f.duration),
                sym(|s| s.status),
                utf8_to_ruby(f.status.as_str()),
            ]);
            14
        }
        None => 8,
    };
    hash_from_pairs(&kv[..len])
}

fn generic_record_to_ruby(g: &GenericRecord, fmt: &mut TimestampFormatter) -> VALUE {
    let kv = [
        sym(|s| s.timestamp),
        stamp_to_ruby(fmt, g.at.wall_ns),
        sym(|s| s.event_name),
        str_to_ruby(&g.event_name),
        sym(|s| s.payload),
        packed_to_ruby(&g.payload),
        sym(|s| s.type_),
        utf8_to_ruby("generic"),
    ];
    hash_from_pairs(&kv)
}

pub fn record_to_ruby(rec: &Record, fmt: &mut TimestampFormatter) -> VALUE {
    match rec {
        Record::Trace(t) => start_record_to_ruby(t, fmt),
        Record::Generic(g) => generic_record_to_ruby(g, fmt),
    }
}

/// The traces Hash: key → record, in store order.
pub fn traces_to_ruby(snapshot: &tasker_trace_core::model::backend::Snapshot) -> VALUE {
    let mut fmt = TimestampFormatter::new(snapshot.timestamp_precision);
    let traces = new_hash(snapshot.entries.len());
    for (key, rec) in &snapshot.entries {
        // The frozen String the Hash would have made of a new key anyway.
        let k = interned_to_ruby(key.bytes(), key.encoding());
        let v = record_to_ruby(rec, &mut fmt);
        hash_set(traces, k, v);
    }
    traces
}
