//! Core values and records to new Ruby objects.
//!
//! Runs only on data already copied out of the store (a snapshot), with no
//! lock held: building Ruby objects allocates, and allocation can run GC.
//! Every object built is stored into its parent at once, so it is always
//! reachable from the Rust stack (which Ruby's GC scans) or from its parent.

use rb_sys::VALUE;
use tasker_trace_core::clock::TimestampFormatter;
use tasker_trace_core::store::{GenericRecord, TraceRecord};
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

/// A payload value as a new Ruby object of the class it arrived as.
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

fn start_record_to_ruby(t: &TraceRecord, fmt: &mut TimestampFormatter) -> VALUE {
    let h = new_hash(7);
    hash_set(
        h,
        sym(|s| s.start_time),
        utf8_to_ruby(&fmt.format(t.start.wall_ns)),
    );
    hash_set(h, sym(|s| s.event_name), str_to_ruby(&t.event_name));
    hash_set(h, sym(|s| s.payload), value_to_ruby(&t.payload));
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
        hash_set(sh, sym(|s| s.payload), value_to_ruby(&span.payload));
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
    hash_set(h, sym(|s| s.payload), value_to_ruby(&g.payload));
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
