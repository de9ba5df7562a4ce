//! Core values and records to new Ruby objects.
//!
//! Runs only on data already copied out of the store (a snapshot), with no
//! lock held: building Ruby objects allocates, and allocation can run GC.
//! Every object built is stored into its parent at once, so it is always
//! reachable from the Rust stack (which Ruby's GC scans) or from its parent.

use rb_sys::VALUE;
use tasker_trace_core::clock::TimestampFormatter;
use tasker_trace_core::store::{GenericRecord, TraceRecord};
use tasker_trace_core::value::{Item, Packed, PackedReader};
use tasker_trace_core::{Encoding, Record, Str, Value};

use crate::names::sym;

pub fn new_hash(_capacity: usize) -> VALUE {
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

pub fn str_to_ruby(s: &Str) -> VALUE {
    let bytes = s.bytes();
    let ptr = bytes.as_ptr() as *const _;
    let len = bytes.len() as _;
    // SAFETY: copies `len` bytes from a live slice into a new String, then
    // labels it with an encoding index taken from this VM.
    unsafe {
        match s.encoding() {
            Encoding::Utf8 => rb_sys::rb_utf8_str_new(ptr, len),
            Encoding::UsAscii => rb_sys::rb_usascii_str_new(ptr, len),
            Encoding::Binary => rb_sys::rb_str_new(ptr, len),
            Encoding::Other(idx) => {
                let enc = rb_sys::rb_enc_from_index(idx);
                if enc.is_null() {
                    rb_sys::rb_str_new(ptr, len)
                } else {
                    rb_sys::rb_enc_str_new(ptr, len, enc)
                }
            }
        }
    }
}

pub fn utf8_to_ruby(s: &str) -> VALUE {
    // SAFETY: copies the bytes of a live &str into a new UTF-8 String.
    unsafe { rb_sys::rb_utf8_str_new(s.as_ptr() as *const _, s.len() as _) }
}

pub fn int_to_ruby(n: i64) -> VALUE {
    // SAFETY: builds a Fixnum or Bignum from a machine integer.
    unsafe { rb_sys::rb_ll2inum(n) }
}

pub fn float_to_ruby(f: f64) -> VALUE {
    // SAFETY: builds a Float (flonum or heap).
    unsafe { rb_sys::rb_float_new(f) }
}

fn bool_to_ruby(b: bool) -> VALUE {
    if b {
        rb_sys::Qtrue as VALUE
    } else {
        rb_sys::Qfalse as VALUE
    }
}

pub fn nil() -> VALUE {
    rb_sys::Qnil as VALUE
}

/// A core value tree as a new Ruby object of the class it arrived as
/// (stored payloads are packed: see `packed_to_ruby`).
#[allow(dead_code)]
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
        Value::Sym(name) => {
            let s = str_to_ruby(name);
            // SAFETY: rb_str_intern returns the Symbol with that name, creating
            // a collectable dynamic symbol when none exists.
            unsafe { rb_sys::rb_str_intern(s) }
        }
        Value::Array(items) => {
            // SAFETY: a new Array; each element is pushed as soon as it exists.
            let ary = unsafe { rb_sys::rb_ary_new_capa(items.len() as _) };
            for item in items {
                let elem = value_to_ruby(item);
                // SAFETY: `ary` is the Array created above.
                unsafe {
                    rb_sys::rb_ary_push(ary, elem);
                }
            }
            ary
        }
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
    if !enc.is_null() {
        // SAFETY: looks the name up in the symbol table; creates nothing.
        let found = unsafe {
            rb_sys::rb_check_symbol_cstr(bytes.as_ptr() as *const _, bytes.len() as _, enc)
        };
        if found != nil() {
            return found;
        }
    }
    let s = str_to_ruby(&Str::new(bytes, encoding));
    // SAFETY: rb_str_intern returns the Symbol with that name, creating a
    // collectable dynamic symbol when none exists.
    unsafe { rb_sys::rb_str_intern(s) }
}

fn bytes_to_ruby(bytes: &[u8], encoding: Encoding) -> VALUE {
    let ptr = bytes.as_ptr() as *const _;
    let len = bytes.len() as _;
    // SAFETY: copies `len` bytes from a live slice into a new String labelled
    // with an encoding of this VM (binary when the index is unknown).
    unsafe {
        match encoding {
            Encoding::Utf8 => rb_sys::rb_utf8_str_new(ptr, len),
            Encoding::UsAscii => rb_sys::rb_usascii_str_new(ptr, len),
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

/// The next value of a packed payload as a new Ruby object (nil where the
/// buffer ends early). Packed values are at most MAX_DEPTH deep, so the
/// recursion is bounded.
fn read_to_ruby(r: &mut PackedReader<'_>) -> VALUE {
    let Some(item) = r.next() else {
        return nil();
    };
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
        Item::SymId(_, name) => symbol_to_ruby(name.bytes(), name.encoding()),
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
        Item::Hash(n) => {
            let hash = new_hash(n as usize);
            for _ in 0..n {
                let key = read_to_ruby(r);
                let value = read_to_ruby(r);
                hash_set(hash, key, value);
            }
            hash
        }
    }
}

/// A packed payload as new Ruby objects of the classes it arrived as.
pub fn packed_to_ruby(p: &Packed) -> VALUE {
    read_to_ruby(&mut p.reader())
}

fn start_record_to_ruby(t: &TraceRecord, fmt: &mut TimestampFormatter) -> VALUE {
    let h = new_hash(7);
    hash_set(
        h,
        sym(|s| s.start_time),
        utf8_to_ruby(&fmt.format(t.start.wall_ns)),
    );
    hash_set(h, sym(|s| s.event_name), str_to_ruby(&t.event_name));
    hash_set(h, sym(|s| s.payload), packed_to_ruby(&t.payload));
    // SAFETY: a new Array for the spans, filled right away.
    let spans = unsafe { rb_sys::rb_ary_new_capa(t.spans.len() as _) };
    hash_set(h, sym(|s| s.spans), spans);
    for span in &t.spans {
        let sh = new_hash(3);
        // SAFETY: `spans` is the Array created above; `sh` is pushed first so
        // that it is reachable while it is filled.
        unsafe {
            rb_sys::rb_ary_push(spans, sh);
        }
        hash_set(
            sh,
            sym(|s| s.timestamp),
            utf8_to_ruby(&fmt.format(span.at.wall_ns)),
        );
        hash_set(sh, sym(|s| s.event_name), str_to_ruby(&span.event_name));
        hash_set(sh, sym(|s| s.payload), packed_to_ruby(&span.payload));
    }
    if let Some(f) = &t.finish {
        hash_set(
            h,
            sym(|s| s.end_time),
            utf8_to_ruby(&fmt.format(f.at.wall_ns)),
        );
        hash_set(h, sym(|s| s.duration), float_to_ruby(f.duration));
        hash_set(h, sym(|s| s.status), utf8_to_ruby(f.status.as_str()));
    }
    h
}

fn generic_record_to_ruby(g: &GenericRecord, fmt: &mut TimestampFormatter) -> VALUE {
    let h = new_hash(4);
    hash_set(
        h,
        sym(|s| s.timestamp),
        utf8_to_ruby(&fmt.format(g.at.wall_ns)),
    );
    hash_set(h, sym(|s| s.event_name), str_to_ruby(&g.event_name));
    hash_set(h, sym(|s| s.payload), packed_to_ruby(&g.payload));
    hash_set(h, sym(|s| s.type_), utf8_to_ruby("generic"));
    h
}

pub fn record_to_ruby(rec: &Record, fmt: &mut TimestampFormatter) -> VALUE {
    match rec {
        Record::Trace(t) => start_record_to_ruby(t, fmt),
        Record::Generic(g) => generic_record_to_ruby(g, fmt),
    }
}

/// The traces Hash: key → record, in store order.
pub fn traces_to_ruby(snapshot: &tasker_trace_core::Snapshot) -> VALUE {
    let mut fmt = TimestampFormatter::new(snapshot.timestamp_precision);
    let traces = new_hash(snapshot.entries.len());
    for (key, rec) in &snapshot.entries {
        let k = str_to_ruby(key);
        let v = record_to_ruby(rec, &mut fmt);
        hash_set(traces, k, v);
    }
    traces
}
