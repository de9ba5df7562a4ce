//! Ruby objects to core values: payloads, event names and trace keys.
//!
//! Everything here runs before any lock is taken, because it may call Ruby
//! (`to_s`, `iso8601`, a Hash subclass's `[]`) and any Ruby call can switch
//! threads. The result owns all its data: no Ruby `VALUE` is kept.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use magnus::prelude::*;
use magnus::rb_sys::{AsRawValue, FromRawValue};
use magnus::{Error, RString, Ruby, Value as RValue};
use rb_sys::{ruby_value_type as T, StableApiDefinition, VALUE};
use tasker_trace_core::value::MAX_DEPTH;
use tasker_trace_core::{Encoding, KeyField, KeySource, Str, Value};

use crate::errors::{must_propagate, native_error, panic_message};
use crate::names;

/// A raw VALUE as a magnus value, for calling Ruby methods through magnus.
fn wrap(v: VALUE) -> RValue {
    // SAFETY: `v` came from Ruby on this thread and is still on the stack.
    unsafe { RValue::from_raw(v) }
}

/// Bytes of a Ruby String, copied.
fn string_bytes(v: VALUE) -> Vec<u8> {
    // SAFETY: `v` is a T_STRING; pointer and length describe its live buffer,
    // copied before any Ruby code can run.
    unsafe {
        let len = rb_sys::RSTRING_LEN(v) as usize;
        if len == 0 {
            return Vec::new();
        }
        let ptr = rb_sys::RSTRING_PTR(v) as *const u8;
        std::slice::from_raw_parts(ptr, len).to_vec()
    }
}

/// The core encoding label of a Ruby String or Symbol-name String.
fn encoding_of(v: VALUE) -> Encoding {
    // SAFETY: reading a String's encoding index does not call Ruby code.
    let idx = unsafe { rb_sys::rb_enc_get_index(v) };
    names::encoding_from_index(idx)
}

/// A Ruby String as a core string (bytes and encoding kept).
pub fn string_to_str(v: VALUE) -> Str {
    Str::new(string_bytes(v), encoding_of(v))
}

thread_local! {
    /// Names of static (immortal) Symbols seen on this thread, so repeated
    /// payload keys share one allocation. Static symbols never move or die,
    /// so their VALUE is a stable identity.
    static SYMBOL_NAMES: RefCell<HashMap<VALUE, Arc<Str>>> = RefCell::new(HashMap::new());
}
const SYMBOL_CACHE_LIMIT: usize = 4096;

/// A Symbol's name as a shared core string.
pub fn symbol_name(v: VALUE) -> Arc<Str> {
    let is_static = rb_sys::STATIC_SYM_P(v);
    if is_static {
        if let Some(hit) = SYMBOL_NAMES.with(|c| c.borrow().get(&v).cloned()) {
            return hit;
        }
    }
    // SAFETY: `v` is a Symbol; rb_sym2str returns its (frozen) name String.
    let name = unsafe { rb_sys::rb_sym2str(v) };
    let sym = Arc::new(string_to_str(name));
    if is_static {
        SYMBOL_NAMES.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= SYMBOL_CACHE_LIMIT {
                c.clear();
            }
            c.insert(v, sym.clone());
        });
    }
    sym
}

/// `#<ClassName>`, the stand-in for objects that cannot describe themselves.
fn class_placeholder(v: VALUE) -> Value {
    // SAFETY: rb_obj_class and rb_class_name read class metadata without
    // calling user code; the result is a String.
    let name = unsafe {
        let klass = rb_sys::rb_obj_class(v);
        rb_sys::rb_class_name(klass)
    };
    let mut bytes = b"#<".to_vec();
    bytes.extend_from_slice(&string_bytes(name));
    bytes.push(b'>');
    Value::Str(Str::new(bytes, Encoding::Utf8))
}

/// Converts a payload into owned core values, with cycle and depth guards.
pub struct PayloadConverter<'r> {
    ruby: &'r Ruby,
    /// The containers on the path from the root to the value being converted.
    path: Vec<VALUE>,
}

impl<'r> PayloadConverter<'r> {
    pub fn new(ruby: &'r Ruby) -> Self {
        PayloadConverter {
            ruby,
            path: Vec::with_capacity(8),
        }
    }

    /// Converts the root payload (a T_HASH).
    pub fn convert_root(&mut self, v: VALUE) -> Result<Value, Error> {
        self.convert(v, 1)
    }

    fn convert(&mut self, v: VALUE, depth: usize) -> Result<Value, Error> {
        // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
        let ty = unsafe { rb_sys::RB_TYPE(v) };
        Ok(match ty {
            T::RUBY_T_NIL => Value::Nil,
            T::RUBY_T_TRUE => Value::Bool(true),
            T::RUBY_T_FALSE => Value::Bool(false),
            // SAFETY: a Fixnum's value is in its tag bits.
            T::RUBY_T_FIXNUM => Value::Int(unsafe { rb_sys::FIX2LONG(v) } as i64),
            // SAFETY: `v` is a Float (flonum or heap); NUM2DBL reads it.
            T::RUBY_T_FLOAT => Value::Float(unsafe { rb_sys::NUM2DBL(v) }),
            T::RUBY_T_STRING => Value::Str(string_to_str(v)),
            T::RUBY_T_SYMBOL => Value::Sym(symbol_name(v)),
            T::RUBY_T_BIGNUM => {
                // SAFETY: `v` is a Bignum; rb_big2str returns a new String.
                let s = unsafe { rb_sys::rb_big2str(v, 10) };
                let digits = String::from_utf8_lossy(&string_bytes(s)).into_owned();
                Value::BigInt(digits.into_boxed_str())
            }
            T::RUBY_T_ARRAY => self.convert_array(v, depth)?,
            T::RUBY_T_HASH => self.convert_hash(v, depth)?,
            _ => self.convert_object(v)?,
        })
    }

    fn enter(&mut self, v: VALUE, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return Some(Value::depth_limit_marker());
        }
        if self.path.contains(&v) {
            return Some(Value::recursion_marker());
        }
        self.path.push(v);
        None
    }

    fn convert_array(&mut self, v: VALUE, depth: usize) -> Result<Value, Error> {
        if let Some(marker) = self.enter(v, depth) {
            return Ok(marker);
        }
        let result = (|| {
            // SAFETY: `v` is a T_ARRAY; its length is re-read every step because
            // a `to_s` called during conversion may change the array.
            let mut items = Vec::with_capacity(unsafe { rb_sys::RARRAY_LEN(v) } as usize);
            let mut i: isize = 0;
            // SAFETY: as above; rb_ary_entry is bounds-checked.
            while i < unsafe { rb_sys::RARRAY_LEN(v) } as isize {
                let item = unsafe { rb_sys::rb_ary_entry(v, i as _) };
                items.push(self.convert(item, depth + 1)?);
                i += 1;
            }
            Ok(Value::Array(items))
        })();
        self.path.pop();
        result
    }

    fn convert_hash(&mut self, v: VALUE, depth: usize) -> Result<Value, Error> {
        if let Some(marker) = self.enter(v, depth) {
            return Ok(marker);
        }
        let result = self.hash_pairs(v, depth);
        self.path.pop();
        result.map(Value::Hash)
    }

    fn hash_pairs(&mut self, v: VALUE, depth: usize) -> Result<Vec<(Value, Value)>, Error> {
        struct Walk<'a, 'r> {
            conv: &'a mut PayloadConverter<'r>,
            depth: usize,
            pairs: Vec<(Value, Value)>,
            failure: Option<Error>,
        }

        unsafe extern "C" fn each_pair(key: VALUE, val: VALUE, arg: VALUE) -> c_int {
            // SAFETY: `arg` is the address of the Walk below, alive for the
            // whole rb_hash_foreach call.
            let walk = unsafe { &mut *(arg as *mut Walk) };
            let depth = walk.depth;
            let step = catch_unwind(AssertUnwindSafe(|| {
                let k = walk.conv.convert(key, depth + 1)?;
                let v = walk.conv.convert(val, depth + 1)?;
                Ok::<_, Error>((k, v))
            }));
            match step {
                Ok(Ok(pair)) => {
                    walk.pairs.push(pair);
                    rb_sys::st_retval::ST_CONTINUE as c_int
                }
                Ok(Err(e)) => {
                    walk.failure = Some(e);
                    rb_sys::st_retval::ST_STOP as c_int
                }
                Err(panic) => {
                    let ruby = walk.conv.ruby;
                    walk.failure = Some(native_error(
                        ruby,
                        format!("internal error: {}", panic_message(panic.as_ref())),
                    ));
                    rb_sys::st_retval::ST_STOP as c_int
                }
            }
        }

        // SAFETY: `v` is a T_HASH.
        let size = unsafe { rb_sys::RHASH_SIZE(v) };
        let mut walk = Walk {
            conv: self,
            depth,
            pairs: Vec::with_capacity(size),
            failure: None,
        };
        let arg = &mut walk as *mut Walk as VALUE;
        // SAFETY: the callback never unwinds (panics are caught inside it) and
        // never raises; protect catches anything rb_hash_foreach itself raises.
        magnus::rb_sys::protect(|| unsafe {
            rb_sys::rb_hash_foreach(v, Some(each_pair), arg);
            rb_sys::Qnil as VALUE
        })?;
        match walk.failure {
            Some(e) => Err(e),
            None => Ok(walk.pairs),
        }
    }

    /// Any other object: its `iso8601` where it responds to it, else its `to_s`;
    /// `#<ClassName>` when that raises, is not a String, or the object is a
    /// BasicObject.
    fn convert_object(&mut self, v: VALUE) -> Result<Value, Error> {
        let obj = wrap(v);
        // SAFETY: rb_obj_is_kind_of walks the ancestry without calling user code.
        let is_object =
            unsafe { rb_sys::rb_obj_is_kind_of(v, rb_sys::rb_cObject) } != rb_sys::Qfalse as VALUE;
        if !is_object {
            return Ok(class_placeholder(v));
        }
        let method = match obj.respond_to("iso8601", false) {
            Ok(true) => "iso8601",
            Ok(false) => "to_s",
            Err(e) if must_propagate(self.ruby, &e) => return Err(e),
            Err(_) => return Ok(class_placeholder(v)),
        };
        match obj.funcall::<_, _, RValue>(method, ()) {
            Ok(s) => match RString::from_value(s) {
                Some(s) => Ok(Value::Str(string_to_str(s.as_raw()))),
                None => Ok(class_placeholder(v)),
            },
            Err(e) if must_propagate(self.ruby, &e) => Err(e),
            Err(_) => Ok(class_placeholder(v)),
        }
    }
}

/// Why an event name was refused.
pub enum NameRefusal {
    NotStringOrSymbol,
    /// The name's bytes are invalid for its encoding, or the encoding is not
    /// ASCII-compatible: the original's regexp match raises on such names.
    UnmatchableEncoding,
}

/// The event name as a String (a Symbol is taken by its name).
pub fn event_name(v: VALUE) -> Result<Str, NameRefusal> {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    let ty = unsafe { rb_sys::RB_TYPE(v) };
    let s = match ty {
        T::RUBY_T_STRING => v,
        // SAFETY: `v` is a Symbol; rb_sym2str returns its name String.
        T::RUBY_T_SYMBOL => unsafe { rb_sys::rb_sym2str(v) },
        _ => return Err(NameRefusal::NotStringOrSymbol),
    };
    // SAFETY: coderange scanning and encoding lookups read the string only.
    let matchable = unsafe {
        let enc = rb_sys::rb_enc_get(s);
        let broken = rb_sys::rb_enc_str_coderange(s)
            == rb_sys::ruby_coderange_type::RUBY_ENC_CODERANGE_BROKEN as c_int;
        !broken && (*enc).min_enc_len == 1 && rb_sys::rb_enc_dummy_p(enc) == 0
    };
    if !matchable {
        return Err(NameRefusal::UnmatchableEncoding);
    }
    Ok(string_to_str(s))
}

/// `payload[field]`: through `rb_hash_aref` for a plain Hash (default procs
/// included), through the object's own `[]` for a Hash subclass, so
/// HashWithIndifferentAccess answers for String keys too.
fn lookup(ruby: &Ruby, payload: VALUE, plain_hash: bool, field: KeyField) -> Result<VALUE, Error> {
    let key = names::key_field_symbol(field);
    if plain_hash {
        // SAFETY: `payload` is a T_HASH; rb_hash_aref may call a default proc,
        // which may raise, so it runs under protect.
        magnus::rb_sys::protect(|| unsafe { rb_sys::rb_hash_aref(payload, key) })
    } else {
        let _ = ruby;
        wrap(payload)
            .funcall::<_, _, RValue>("[]", (wrap(key),))
            .map(|v| v.as_raw())
    }
}

/// `"#{v}"`: Ruby's `to_s`, with the fallback interpolation uses when `to_s`
/// does not return a String.
fn interpolate(v: VALUE) -> Result<Str, Error> {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    match unsafe { rb_sys::RB_TYPE(v) } {
        T::RUBY_T_STRING => Ok(string_to_str(v)),
        T::RUBY_T_SYMBOL => Ok((*symbol_name(v)).clone()),
        _ => {
            let s = wrap(v).funcall::<_, _, RValue>("to_s", ())?;
            match RString::from_value(s) {
                Some(s) => Ok(string_to_str(s.as_raw())),
                // SAFETY: rb_any_to_s builds "#<Class:0x...>" without user code.
                None => Ok(string_to_str(unsafe { rb_sys::rb_any_to_s(v) })),
            }
        }
    }
}

/// The trace key: the first truthy of `task_id`, `workflow_step_id`, `operation`.
pub fn trace_key(ruby: &Ruby, payload: VALUE) -> Result<KeySource, Error> {
    // The class pointer itself, not rb_obj_class: a Hash with a singleton class
    // (say, a singleton `[]`) must be asked through `[]` like a subclass.
    // SAFETY: `payload` is a heap T_HASH, so it has an RBasic header to read.
    let klass = unsafe { rb_sys::stable_api::get_default().rbasic_class(payload) };
    // SAFETY: rb_cHash is a global the VM sets at boot.
    let plain_hash = klass.map(|k| k.as_ptr() as VALUE) == Some(unsafe { rb_sys::rb_cHash });
    for field in KeyField::ORDER {
        let v = lookup(ruby, payload, plain_hash, field)?;
        if !rb_sys::TEST(v) {
            continue;
        }
        if rb_sys::FIXNUM_P(v) {
            // SAFETY: `v` is a Fixnum.
            return Ok(KeySource::Field(
                field.key_for_int(unsafe { rb_sys::FIX2LONG(v) } as i64),
            ));
        }
        return Ok(KeySource::Field(field.key_for(&interpolate(v)?)));
    }
    Ok(KeySource::Fresh)
}
