//! Ruby objects to core values: payloads, event names and trace keys.
//!
//! Everything here runs before any lock is taken, because it may call Ruby
//! (`to_s`, `iso8601`, a Hash subclass's `[]`) and any Ruby call can switch
//! threads. The result owns all its data: no Ruby `VALUE` is kept.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::prelude::*;
use magnus::rb_sys::AsRawValue;
use magnus::{Error, RString, Ruby, Value as RValue};
use rb_sys::{ruby_value_type as T, StableApiDefinition, VALUE};
use tasker_trace_core::input::backend::routing::classify;
use tasker_trace_core::input::backend::{KeyField, KeySource, Route};
use tasker_trace_core::value::{
    symbol_id, Packed, PackedWriter, DEPTH_LIMIT_MARKER, MAX_DEPTH, RECURSION_MARKER,
};
use tasker_trace_core::value::{Encoding, Str, Value};

use crate::helpers::errors::{must_propagate, panic_error};
use crate::helpers::static_ids;
use crate::to_ruby::values::wrap;

/// The bytes of a Ruby String, borrowed. Valid only until Ruby code runs
/// (which could change or free the String): callers copy them at once.
///
/// # Safety
/// `v` must be a live T_STRING.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub(crate) unsafe fn string_slice<'a>(v: VALUE) -> &'a [u8] {
    // SAFETY: per the contract above, pointer and length describe the
    // String's live buffer.
    unsafe {
        let len = rb_sys::RSTRING_LEN(v) as usize;
        if len == 0 {
            return &[];
        }
        std::slice::from_raw_parts(rb_sys::RSTRING_PTR(v) as *const u8, len)
    }
}

/// Bytes of a Ruby String, copied.
fn string_bytes(v: VALUE) -> Vec<u8> {
    // SAFETY: `v` is a T_STRING; copied before any Ruby code can run.
    unsafe { string_slice(v) }.to_vec()
}

/// The core encoding label of a Ruby String or Symbol-name String.
fn encoding_of(v: VALUE) -> Encoding {
    use rb_sys::ruby_encoding_consts::{RUBY_ENCODING_INLINE_MAX, RUBY_ENCODING_SHIFT};
    // SAFETY: `v` is a heap String, so it has an RBasic header; an encoding
    // index below the inline maximum is kept in its flags.
    let flags = unsafe { (*(v as *const rb_sys::RBasic)).flags };
    let inline = ((flags >> RUBY_ENCODING_SHIFT as u32) & RUBY_ENCODING_INLINE_MAX as VALUE) as i32;
    let idx = if inline == RUBY_ENCODING_INLINE_MAX as i32 {
        // SAFETY: reading a String's encoding index does not call Ruby code.
        unsafe { rb_sys::rb_enc_get_index(v) }
    } else {
        inline
    };
    static_ids::encoding_from_index(idx)
}

/// A Bignum's value when it fits in 64 bits: Ruby's Fixnums stop at 62,
/// so an Integer from 2**62 to 2**63-1 (or its negative) is a Bignum that
/// is still an OTLP `intValue`. `None` beyond 64 bits.
pub fn bignum_i64(v: VALUE) -> Option<i64> {
    let mut word = [0u8; 8];
    let flags = rb_sys::INTEGER_PACK_2COMP
        | rb_sys::INTEGER_PACK_LSWORD_FIRST
        | rb_sys::INTEGER_PACK_NATIVE_BYTE_ORDER;
    // SAFETY: `v` is a Bignum (an Integer: no `to_int` is called); one
    // 8-byte word is written into `word`, without allocating or raising.
    let sign =
        unsafe { rb_sys::rb_integer_pack(v, word.as_mut_ptr().cast(), 1, 8, 0, flags as c_int) };
    let n = i64::from_ne_bytes(word);
    // In two's complement the pack reports no overflow up to 2**64-1: the
    // sign of the word tells whether the value fits an i64.
    match sign {
        0 => Some(0),
        1 if n > 0 => Some(n),
        -1 if n < 0 => Some(n),
        _ => None,
    }
}

/// A Ruby String as a core string (bytes and encoding kept).
pub fn string_to_str(v: VALUE) -> Str {
    // SAFETY: `v` is a T_STRING; copied before any Ruby code can run.
    Str::new(unsafe { string_slice(v) }, encoding_of(v))
}

/// Hashes VALUEs (static Symbols: distinct integers that share their low
/// bits) with a multiply and a fold, much cheaper than the default SipHash.
#[derive(Default)]
pub(crate) struct ValueHasher(u64);

impl Hasher for ValueHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(word));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.write_u64(u64::from_le_bytes(last) ^ bytes.len() as u64);
    }

    fn write_u64(&mut self, n: u64) {
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<ValueHasher>>;

/// What conversion keeps on a thread from one event to the next.
#[derive(Default)]
struct ThreadState {
    /// The payload writer, whose buffer is reused.
    w: PackedWriter,
    /// The containers on the path from the root to the value being converted.
    path: Vec<VALUE>,
    /// Numbers (from the core's Symbol table) of static Symbols seen on this
    /// thread. Static symbols are immortal immediates, so their VALUE is a
    /// stable identity; no Ruby object is kept.
    symbols: FastMap<VALUE, u32>,
    /// Event names seen on this thread, by their bytes: the shared core
    /// string and the kind, so a repeated name costs no allocation.
    names: FastMap<Box<[u8]>, (Str, Route)>,
}

thread_local! {
    static STATE: Cell<Option<Box<ThreadState>>> = const { Cell::new(None) };
}
const SYMBOL_CACHE_LIMIT: usize = 4096;
const NAME_CACHE_LIMIT: usize = 1024;

/// A Symbol's name as a core string.
pub fn symbol_name(v: VALUE) -> Str {
    // SAFETY: `v` is a Symbol; rb_sym2str returns its (frozen) name String.
    string_to_str(unsafe { rb_sys::rb_sym2str(v) })
}

/// Writes a Symbol: by number where it has one, else by name.
fn write_symbol(st: &mut ThreadState, v: VALUE) {
    let is_static = rb_sys::STATIC_SYM_P(v);
    if is_static {
        if let Some(&id) = st.symbols.get(&v) {
            st.w.sym_id(id);
            return;
        }
    }
    let name = symbol_name(v);
    if is_static {
        if let Some(id) = symbol_id(&name) {
            if st.symbols.len() >= SYMBOL_CACHE_LIMIT {
                st.symbols.clear();
            }
            st.symbols.insert(v, id);
            st.w.sym_id(id);
            return;
        }
    }
    st.w.sym_name(name.bytes(), name.encoding());
}

/// Writes a Ruby String's bytes and encoding.
fn write_string(w: &mut PackedWriter, v: VALUE) {
    let encoding = encoding_of(v);
    // SAFETY: `v` is a T_STRING; copied into the writer before any Ruby code
    // can run.
    w.str(unsafe { string_slice(v) }, encoding);
}

/// `#<ClassName>`, the stand-in for objects that cannot describe themselves.
pub(crate) fn class_placeholder(v: VALUE) -> Result<Vec<u8>, Error> {
    // rb_class_name calls no user code but may allocate (an anonymous
    // class's name), so it can raise NoMemoryError: under protect.
    // SAFETY: rb_obj_class and rb_class_name read class metadata; the result
    // is a String.
    let name = magnus::rb_sys::protect(|| unsafe {
        let klass = rb_sys::rb_obj_class(v);
        rb_sys::rb_class_name(klass)
    })?;
    let mut bytes = b"#<".to_vec();
    bytes.extend_from_slice(&string_bytes(name));
    bytes.push(b'>');
    Ok(bytes)
}

fn write_class_placeholder(w: &mut PackedWriter, v: VALUE) -> Result<(), Error> {
    w.str(&class_placeholder(v)?, Encoding::Utf8);
    Ok(())
}

/// What an object other than nil, booleans, numbers, Strings, Symbols,
/// Arrays and Hashes says of itself.
pub(crate) enum Described {
    /// The String its `iso8601` (where it responds to it) or `to_s` returned.
    Text(VALUE),
    /// It is a BasicObject, or that method raised or gave no String: stand
    /// in with [`class_placeholder`].
    Placeholder,
}

/// Asks an object for its `iso8601`, else its `to_s`. What it raises is
/// absorbed (a placeholder), except what must propagate (interrupts,
/// throws, exits).
pub(crate) fn describe_object(ruby: &Ruby, v: VALUE) -> Result<Described, Error> {
    let obj = wrap(v);
    // SAFETY: rb_obj_is_kind_of walks the ancestry without calling user code.
    let is_object =
        unsafe { rb_sys::rb_obj_is_kind_of(v, rb_sys::rb_cObject) } != rb_sys::Qfalse as VALUE;
    if !is_object {
        return Ok(Described::Placeholder);
    }
    let method = match obj.respond_to("iso8601", false) {
        Ok(true) => "iso8601",
        Ok(false) => "to_s",
        Err(e) if must_propagate(ruby, &e) => return Err(e),
        Err(_) => return Ok(Described::Placeholder),
    };
    match obj.funcall::<_, _, RValue>(method, ()) {
        Ok(s) => {
            Ok(RString::from_value(s)
                .map_or(Described::Placeholder, |s| Described::Text(s.as_raw())))
        }
        Err(e) if must_propagate(ruby, &e) => Err(e),
        Err(_) => Ok(Described::Placeholder),
    }
}

/// As [`describe_object`], for values that are filtered before they leave
/// the process (the lifecycle tracer's): an object that holds other values
/// (one that responds to `to_h`, `to_hash`, `each` or `each_pair`: an
/// OpenStruct, a Set, a Data, Rails' Parameters) and is no time or date is
/// a placeholder, since its `to_s` shows what it holds, nested secrets and
/// all, past the filter.
pub(crate) fn describe_object_hiding_contents(ruby: &Ruby, v: VALUE) -> Result<Described, Error> {
    // SAFETY: rb_obj_is_kind_of walks the ancestry without calling user code.
    let is_object =
        unsafe { rb_sys::rb_obj_is_kind_of(v, rb_sys::rb_cObject) } != rb_sys::Qfalse as VALUE;
    if !is_object {
        return Ok(Described::Placeholder);
    }
    let obj = wrap(v);
    for method in ["iso8601", "to_h", "to_hash", "each", "each_pair"] {
        match obj.respond_to(method, false) {
            Ok(false) => {}
            // A time or date: what it says of itself is its time.
            Ok(true) if method == "iso8601" => break,
            Ok(true) => return Ok(Described::Placeholder),
            Err(e) if must_propagate(ruby, &e) => return Err(e),
            Err(_) => return Ok(Described::Placeholder),
        }
    }
    describe_object(ruby, v)
}

/// Converts a payload, in one pass, into a packed core value, with cycle and
/// depth guards.
pub struct PayloadConverter<'r> {
    ruby: &'r Ruby,
    st: Box<ThreadState>,
}

impl<'r> PayloadConverter<'r> {
    pub fn new(ruby: &'r Ruby) -> Self {
        // A payload's own `to_s` may call handle_event again on this thread:
        // that inner conversion finds no state to reuse and makes its own.
        let st = STATE.with(|c| c.take()).unwrap_or_default();
        PayloadConverter { ruby, st }
    }

    /// The event name as a String (a Symbol is taken by its name), with its
    /// kind. Names seen before on this thread come from a cache.
    pub fn event_name(&mut self, v: VALUE) -> Result<(Str, Route), NameRefusal> {
        // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
        let ty = unsafe { rb_sys::RB_TYPE(v) };
        let s = match ty {
            T::RUBY_T_STRING => v,
            // SAFETY: `v` is a Symbol; rb_sym2str returns its name String.
            T::RUBY_T_SYMBOL => unsafe { rb_sys::rb_sym2str(v) },
            _ => return Err(NameRefusal::NotStringOrSymbol),
        };
        let encoding = encoding_of(s);
        // SAFETY: `s` is a T_STRING; no Ruby code runs while the bytes are used.
        let bytes = unsafe { string_slice(s) };
        if let Some((name, kind)) = self.st.names.get(bytes) {
            if name.encoding() == encoding {
                return Ok((name.clone(), *kind));
            }
        }
        if !text_matchable(s) {
            return Err(NameRefusal::UnmatchableEncoding);
        }
        let name = Str::new(bytes, encoding);
        let kind = classify(bytes);
        if self.st.names.len() >= NAME_CACHE_LIMIT {
            self.st.names.clear();
        }
        self.st.names.insert(Box::from(bytes), (name.clone(), kind));
        Ok((name, kind))
    }

    /// Converts the root payload (a T_HASH) into its packed form.
    pub fn pack_root(&mut self, v: VALUE) -> Result<Packed, Error> {
        self.st.w.clear();
        self.st.path.clear();
        match self.convert(v, 1) {
            Ok(()) => Ok(self.st.w.finish()),
            Err(e) => {
                self.st.w.clear();
                Err(e)
            }
        }
    }

    /// Converts the root payload (a T_HASH) into a core value tree, for
    /// callers that inspect a Hash (settings); events use `pack_root`.
    pub fn convert_root(&mut self, v: VALUE) -> Result<Value, Error> {
        self.pack_root(v).map(|p| p.to_value())
    }

    fn convert(&mut self, v: VALUE, depth: usize) -> Result<(), Error> {
        // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
        let ty = unsafe { rb_sys::RB_TYPE(v) };
        match ty {
            T::RUBY_T_NIL => self.st.w.nil(),
            T::RUBY_T_TRUE => self.st.w.bool(true),
            T::RUBY_T_FALSE => self.st.w.bool(false),
            // SAFETY: a Fixnum's value is in its tag bits.
            T::RUBY_T_FIXNUM => self.st.w.int(unsafe { rb_sys::FIX2LONG(v) } as i64),
            // SAFETY: `v` is a Float (flonum or heap); NUM2DBL reads it.
            T::RUBY_T_FLOAT => self.st.w.float(unsafe { rb_sys::NUM2DBL(v) }),
            T::RUBY_T_STRING => write_string(&mut self.st.w, v),
            T::RUBY_T_SYMBOL => write_symbol(&mut self.st, v),
            T::RUBY_T_BIGNUM => match bignum_i64(v) {
                Some(n) => self.st.w.int(n),
                None => {
                    // Allocates, so it can raise NoMemoryError: under protect.
                    // SAFETY: `v` is a Bignum; rb_big2str returns a new String.
                    let s = magnus::rb_sys::protect(|| unsafe { rb_sys::rb_big2str(v, 10) })?;
                    let digits = String::from_utf8_lossy(&string_bytes(s)).into_owned();
                    self.st.w.big_int(&digits);
                }
            },
            T::RUBY_T_ARRAY => self.convert_array(v, depth)?,
            T::RUBY_T_HASH => self.convert_hash(v, depth)?,
            _ => self.convert_object(v)?,
        }
        Ok(())
    }

    /// Writes the marker instead when the container is too deep or repeats
    /// one it is inside of; else enters it.
    fn enter(&mut self, v: VALUE, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            self.st.w.str(DEPTH_LIMIT_MARKER.as_bytes(), Encoding::Utf8);
            return false;
        }
        if self.st.path.contains(&v) {
            self.st.w.str(RECURSION_MARKER.as_bytes(), Encoding::Utf8);
            return false;
        }
        self.st.path.push(v);
        true
    }

    fn convert_array(&mut self, v: VALUE, depth: usize) -> Result<(), Error> {
        if !self.enter(v, depth) {
            return Ok(());
        }
        let mark = self.st.w.begin_array();
        let result = (|| {
            // SAFETY: `v` is a T_ARRAY; its length is re-read every step because
            // a `to_s` called during conversion may change the array.
            let mut i: isize = 0;
            // SAFETY: as above; rb_ary_entry is bounds-checked.
            while i < unsafe { rb_sys::RARRAY_LEN(v) } as isize {
                let item = unsafe { rb_sys::rb_ary_entry(v, i as _) };
                self.convert(item, depth + 1)?;
                i += 1;
            }
            Ok::<usize, Error>(i as usize)
        })();
        self.st.path.pop();
        self.st.w.end(mark, result?);
        Ok(())
    }

    fn convert_hash(&mut self, v: VALUE, depth: usize) -> Result<(), Error> {
        if !self.enter(v, depth) {
            return Ok(());
        }
        let mark = self.st.w.begin_hash();
        let result = self.hash_pairs(v, depth);
        self.st.path.pop();
        self.st.w.end(mark, result?);
        Ok(())
    }

    /// Writes the pairs of a Hash; returns how many.
    fn hash_pairs(&mut self, v: VALUE, depth: usize) -> Result<usize, Error> {
        struct Walk<'a, 'r> {
            conv: &'a mut PayloadConverter<'r>,
            depth: usize,
            pairs: usize,
            failure: Option<Error>,
        }

        unsafe extern "C" fn each_pair(key: VALUE, val: VALUE, arg: VALUE) -> c_int {
            // SAFETY: `arg` is the address of the Walk below, alive for the
            // whole rb_hash_foreach call.
            let walk = unsafe { &mut *(arg as *mut Walk) };
            let depth = walk.depth;
            let step = catch_unwind(AssertUnwindSafe(|| {
                walk.conv.convert(key, depth + 1)?;
                walk.conv.convert(val, depth + 1)
            }));
            match step {
                Ok(Ok(())) => {
                    walk.pairs += 1;
                    rb_sys::st_retval::ST_CONTINUE as c_int
                }
                Ok(Err(e)) => {
                    walk.failure = Some(e);
                    rb_sys::st_retval::ST_STOP as c_int
                }
                Err(panic) => {
                    let ruby = walk.conv.ruby;
                    walk.failure = Some(panic_error(ruby, panic.as_ref()));
                    rb_sys::st_retval::ST_STOP as c_int
                }
            }
        }

        let mut walk = Walk {
            conv: self,
            depth,
            pairs: 0,
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
    fn convert_object(&mut self, v: VALUE) -> Result<(), Error> {
        match describe_object(self.ruby, v)? {
            Described::Text(s) => write_string(&mut self.st.w, s),
            Described::Placeholder => write_class_placeholder(&mut self.st.w, v)?,
        }
        Ok(())
    }
}

impl Drop for PayloadConverter<'_> {
    fn drop(&mut self) {
        // Hands the state (and its buffers and caches) back for the next event.
        let mut st = std::mem::take(&mut self.st);
        st.w.clear();
        st.path.clear();
        STATE.with(|c| c.set(Some(st)));
    }
}

/// Why an event name was refused.
pub enum NameRefusal {
    NotStringOrSymbol,
    /// The name's bytes are invalid for its encoding, or the encoding is not
    /// ASCII-compatible: the original's regexp match raises on such names.
    UnmatchableEncoding,
}

/// Whether a Ruby Regexp can match this String (the original's, an event
/// name; a Rails filter's, a key): its bytes are valid for its encoding,
/// and the encoding is ASCII-compatible.
pub(crate) fn text_matchable(s: VALUE) -> bool {
    // SAFETY: coderange scanning and encoding lookups read the string only.
    unsafe {
        let enc = rb_sys::rb_enc_get(s);
        let broken = rb_sys::rb_enc_str_coderange(s)
            == rb_sys::ruby_coderange_type::RUBY_ENC_CODERANGE_BROKEN as c_int;
        !broken && (*enc).min_enc_len == 1 && rb_sys::rb_enc_dummy_p(enc) == 0
    }
}

/// `payload[field]`: through `rb_hash_aref` for a plain Hash (default procs
/// included), through the object's own `[]` for a Hash subclass, so
/// HashWithIndifferentAccess answers for String keys too.
fn lookup(payload: VALUE, plain_hash: bool, field: KeyField) -> Result<VALUE, Error> {
    let key = static_ids::key_field_symbol(field);
    if plain_hash {
        // SAFETY: `payload` is a T_HASH. Looking a static Symbol up compares
        // it with stored keys by identity or through Symbol#eql?, so it runs
        // Ruby code only if an application redefines Symbol#eql? (accepted:
        // the lookup stays unprotected on the hot path). Qundef: absent.
        let found = unsafe { rb_sys::rb_hash_lookup2(payload, key, rb_sys::Qundef as VALUE) };
        if found != rb_sys::Qundef as VALUE {
            return Ok(found);
        }
        // Absent: `[]` gives the default, which may come from a default proc
        // that may raise, so it runs under protect.
        // SAFETY: as above; rb_hash_aref may call the default proc.
        magnus::rb_sys::protect(|| unsafe { rb_sys::rb_hash_aref(payload, key) })
    } else {
        wrap(payload)
            .funcall::<_, _, RValue>("[]", (wrap(key),))
            .map(|v| v.as_raw())
    }
}

/// `"#{v}"`: Ruby's `to_s`, with the fallback interpolation uses when `to_s`
/// does not return a String.
/// `None` where the original's interpolation raises (a String that is not
/// empty, in an encoding that is not ASCII-compatible, such as UTF-16LE).
fn interpolate(v: VALUE) -> Result<Option<Str>, Error> {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    let text = match unsafe { rb_sys::RB_TYPE(v) } {
        T::RUBY_T_STRING => v,
        // SAFETY: `v` is a Symbol; rb_sym2str returns its name String.
        T::RUBY_T_SYMBOL => unsafe { rb_sys::rb_sym2str(v) },
        _ => {
            let s = wrap(v).funcall::<_, _, RValue>("to_s", ())?;
            match RString::from_value(s) {
                Some(s) => s.as_raw(),
                // SAFETY: rb_any_to_s builds "#<Class:0x...>" without user code.
                None => unsafe { rb_sys::rb_any_to_s(v) },
            }
        }
    };
    Ok(appends_to_ascii(text).then(|| string_to_str(text)))
}

/// Whether `"task_#{s}"` works for the String `s`: it is empty, or its
/// encoding is ASCII-compatible.
fn appends_to_ascii(s: VALUE) -> bool {
    // SAFETY: `s` is a T_STRING; its length and encoding are read only.
    unsafe {
        let enc = rb_sys::rb_enc_get(s);
        rb_sys::RSTRING_LEN(s) == 0 || ((*enc).min_enc_len == 1 && rb_sys::rb_enc_dummy_p(enc) == 0)
    }
}

/// Most elements (and pairs) a Hash or Array id may hold, all levels
/// together, for its `to_s` to name a trace.
const MAX_KEY_CONTAINER_ITEMS: usize = 10_000;

/// Whether Ruby's own `to_s` of a Hash or Array stays shallow: it nests at
/// most [`MAX_DEPTH`] containers deep and holds at most
/// [`MAX_KEY_CONTAINER_ITEMS`] elements (a container met again is not
/// walked again: `inspect` prints it as `[...]`). Walked without recursion
/// and without running Ruby code, so nothing is freed while it runs.
fn shallow_container(v: VALUE) -> bool {
    struct Walk {
        stack: Vec<(VALUE, usize)>,
        seen: FastMap<VALUE, ()>,
        items: usize,
        depth: usize,
    }

    impl Walk {
        fn visit(&mut self, v: VALUE) {
            self.items += 1;
            // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
            let ty = unsafe { rb_sys::RB_TYPE(v) };
            if matches!(ty, T::RUBY_T_ARRAY | T::RUBY_T_HASH) && self.seen.insert(v, ()).is_none() {
                self.stack.push((v, self.depth + 1));
            }
        }
    }

    unsafe extern "C" fn each_pair(key: VALUE, val: VALUE, arg: VALUE) -> c_int {
        // SAFETY: `arg` is the address of the Walk below, alive for the
        // whole rb_hash_foreach call; nothing here can panic but allocation.
        let walk = unsafe { &mut *(arg as *mut Walk) };
        let _ = catch_unwind(AssertUnwindSafe(|| {
            walk.visit(key);
            walk.visit(val);
        }));
        if walk.items > MAX_KEY_CONTAINER_ITEMS {
            rb_sys::st_retval::ST_STOP as c_int
        } else {
            rb_sys::st_retval::ST_CONTINUE as c_int
        }
    }

    let mut walk = Walk {
        stack: vec![(v, 1)],
        seen: FastMap::default(),
        items: 0,
        depth: 0,
    };
    walk.seen.insert(v, ());
    while let Some((container, depth)) = walk.stack.pop() {
        if depth > MAX_DEPTH || walk.items > MAX_KEY_CONTAINER_ITEMS {
            return false;
        }
        walk.depth = depth;
        // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
        if unsafe { rb_sys::RB_TYPE(container) } == T::RUBY_T_ARRAY {
            // SAFETY: `container` is a T_ARRAY; rb_ary_entry is bounds-checked.
            let len = unsafe { rb_sys::RARRAY_LEN(container) };
            for i in 0..len {
                if walk.items > MAX_KEY_CONTAINER_ITEMS {
                    return false;
                }
                // SAFETY: as above.
                walk.visit(unsafe { rb_sys::rb_ary_entry(container, i) });
            }
        } else {
            let arg = &mut walk as *mut Walk as VALUE;
            // SAFETY: `container` is a T_HASH; the callback runs no Ruby
            // code, never unwinds and never raises; protect catches what
            // rb_hash_foreach itself raises (then the id is refused).
            let done = magnus::rb_sys::protect(|| unsafe {
                rb_sys::rb_hash_foreach(container, Some(each_pair), arg);
                rb_sys::Qnil as VALUE
            });
            if done.is_err() {
                return false;
            }
        }
    }
    walk.items <= MAX_KEY_CONTAINER_ITEMS
}

/// The trace key: the first truthy of `task_id`, `workflow_step_id`,
/// `operation`, spelled as `"#{v}"` spells it; `None` when that value is a
/// Hash or Array too deep or too large for its `to_s` to be asked for
/// safely, or spells as a String the original cannot interpolate (the
/// event is refused, as the original's raises).
pub fn trace_key(payload: VALUE) -> Result<Option<KeySource>, Error> {
    // The class pointer itself, not rb_obj_class: a Hash with a singleton class
    // (say, a singleton `[]`) must be asked through `[]` like a subclass.
    // SAFETY: `payload` is a heap T_HASH, so it has an RBasic header to read.
    let klass = unsafe { rb_sys::stable_api::get_default().rbasic_class(payload) };
    // SAFETY: rb_cHash is a global the VM sets at boot.
    let plain_hash = klass.map(|k| k.as_ptr() as VALUE) == Some(unsafe { rb_sys::rb_cHash });
    for field in KeyField::ORDER {
        let v = lookup(payload, plain_hash, field)?;
        if !rb_sys::TEST(v) {
            continue;
        }
        if rb_sys::FIXNUM_P(v) {
            // SAFETY: `v` is a Fixnum.
            return Ok(Some(KeySource::Field(
                field.key_for_int(unsafe { rb_sys::FIX2LONG(v) } as i64),
            )));
        }
        // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
        let ty = unsafe { rb_sys::RB_TYPE(v) };
        if matches!(ty, T::RUBY_T_ARRAY | T::RUBY_T_HASH) && !shallow_container(v) {
            return Ok(None);
        }
        return Ok(interpolate(v)?.map(|text| KeySource::Field(field.key_for(&text))));
    }
    Ok(Some(KeySource::Fresh))
}
