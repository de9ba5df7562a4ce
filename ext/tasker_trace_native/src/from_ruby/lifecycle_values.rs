//! A Hash or Array in a lifecycle payload, read into a structured core value
//! (`AttrValue::Map` / `AttrValue::Array`), bounded and filtered: see
//! `tasker_trace_core::lifecycle::values` for the limits, the markers and
//! the filter rule.
//!
//! Runs before any lock is taken. Never asks a Hash or Array for its
//! `to_s`/`inspect` (they recurse without bound, and show nested secrets):
//! containers are walked here, at most [`MAX_VALUE_DEPTH`] levels deep (this
//! recursion is the only one), with a budget of [`MAX_VALUE_NODES`] values.
//! Other objects are described as elsewhere (`iso8601`, else `to_s`, else
//! `#<ClassName>`), except Structs and objects that hold other values
//! (OpenStruct, Set, Data, Rails' Parameters: what responds to `to_h`,
//! `to_hash`, `each` or `each_pair`), which stand in as `#<ClassName>`
//! (their `to_s` shows every member, past the filter).
//!
//! Filtering: String and Symbol filters are matched here
//! ([`ValueFilter`]). When Regexp or Proc filters are in force, a key they
//! must decide is asked of the Ruby layer
//! (`TaskerTraceNative::Lifecycle.filtered_path?(["order", "customer",
//! "card"])`) once per path per thread: the answers are cached per thread
//! until the filters change, and asked with no lock held. What that call
//! raises (bar interrupts and exits, which propagate) filters the key.

use std::cell::RefCell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::prelude::*;
use magnus::rb_sys::AsRawValue;
use magnus::{Error, RModule, Ruby, Value as RValue};
use rb_sys::{ruby_value_type as T, VALUE};
use tasker_trace_core::input::lifecycle::values::{
    ValueFilter, CYCLE_MARKER, DEPTH_MARKER, MAX_VALUE_BYTES, MAX_VALUE_DEPTH, MAX_VALUE_NODES,
    TRUNCATED_MARKER,
};
use tasker_trace_core::input::lifecycle::{AttrValue, Text, MAX_ARRAY_ITEMS};

use crate::from_ruby::convert::{
    bignum_i64, class_placeholder, describe_object_hiding_contents, string_slice, text_matchable,
    Described, FastMap,
};
use crate::from_ruby::lifecycle_read_plan::{self, FILTERED};
use crate::helpers::errors::{must_propagate, panic_error};
use crate::process;

/// Longest key kept, in bytes.
const MAX_KEY_BYTES: usize = 256;
/// Whether a Hash key `k`, read as `kept` bytes of text within `budget`
/// bytes, was cut: a String's or Symbol's name longer than the budget; any
/// other key whose text reached it.
fn key_was_cut(k: VALUE, kept: usize, budget: usize) -> bool {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header;
    // rb_sym2str returns a Symbol's name, and only its length is read.
    unsafe {
        match rb_sys::RB_TYPE(k) {
            T::RUBY_T_STRING => string_slice(k).len() > budget,
            T::RUBY_T_SYMBOL => string_slice(rb_sys::rb_sym2str(k)).len() > budget,
            T::RUBY_T_FIXNUM | T::RUBY_T_NIL | T::RUBY_T_TRUE | T::RUBY_T_FALSE => false,
            _ => kept >= budget,
        }
    }
}

/// Most filter answers cached per thread, and most bytes of their paths
/// (the cache starts over when either is reached; a longer path is not
/// cached).
const DECISION_CACHE_LIMIT: usize = 4096;
const DECISION_CACHE_BYTES: usize = 256 * 1024;

/// Answers of the Ruby layer, by path (see `path_key`), for one generation
/// of the filters.
struct Decisions {
    generation: u64,
    bytes: usize,
    by_path: FastMap<Box<str>, bool>,
}

/// A path's cache key: each key's length, a colon, then the key. Keys may
/// hold any character (NUL, the colon), so a separator alone would let
/// `["a\0pin"]` and `["a", "pin"]` share an answer.
fn path_key(keys: &[Text]) -> String {
    use std::fmt::Write;
    let mut path = String::with_capacity(keys.iter().map(|k| k.as_str().len() + 4).sum());
    for k in keys {
        let k = k.as_str();
        // Writing to a String cannot fail.
        let _ = write!(path, "{}:{k}", k.len());
    }
    path
}

thread_local! {
    static DECISIONS: RefCell<Option<Decisions>> = const { RefCell::new(None) };
}

fn cached_decision(generation: u64, path: &str) -> Option<bool> {
    DECISIONS.with(|d| {
        let d = d.borrow();
        let d = d.as_ref().filter(|d| d.generation == generation)?;
        d.by_path.get(path).copied()
    })
}

fn remember_decision(generation: u64, path: String, filtered: bool) {
    if path.len() > DECISION_CACHE_BYTES {
        return;
    }
    DECISIONS.with(|d| {
        let mut d = d.borrow_mut();
        let d = match &mut *d {
            Some(d)
                if d.generation == generation
                    && d.by_path.len() < DECISION_CACHE_LIMIT
                    && d.bytes + path.len() <= DECISION_CACHE_BYTES =>
            {
                d
            }
            slot => slot.insert(Decisions {
                generation,
                bytes: 0,
                by_path: FastMap::default(),
            }),
        };
        d.bytes += path.len();
        d.by_path.insert(path.into_boxed_str(), filtered);
    });
}

/// `s` (a String whose bytes are valid in an ASCII-compatible encoding)
/// as UTF-8 text: itself when it is UTF-8, binary or only ASCII; else its
/// conversion to UTF-8 (`None` when the encoding has none, or the
/// conversion fails). No Ruby code runs: transcoders are the VM's.
fn utf8_key(s: VALUE) -> Result<Option<VALUE>, Error> {
    // SAFETY: reading a String's encoding index and scanning its coderange
    // read the String only.
    let (idx, seven_bit) = unsafe {
        (
            rb_sys::rb_enc_get_index(s),
            rb_sys::rb_enc_str_coderange(s)
                == rb_sys::ruby_coderange_type::RUBY_ENC_CODERANGE_7BIT as c_int,
        )
    };
    // SAFETY: these return the indexes of the VM's built-in encodings.
    let (utf8, binary) = unsafe { (rb_sys::rb_utf8_encindex(), rb_sys::rb_ascii8bit_encindex()) };
    if seven_bit || idx == utf8 || idx == binary {
        return Ok(Some(s));
    }
    // SAFETY: rb_str_conv_enc returns a new UTF-8 String, or `s` itself
    // when it cannot convert; it runs no Ruby code, and may only raise
    // NoMemoryError (under protect).
    let converted = magnus::rb_sys::protect(|| unsafe {
        rb_sys::rb_str_conv_enc(s, rb_sys::rb_enc_get(s), rb_sys::rb_utf8_encoding())
    })?;
    // SAFETY: as above, the index only.
    let converted_idx = unsafe { rb_sys::rb_enc_get_index(converted) };
    Ok((converted_idx == utf8).then_some(converted))
}

/// A Hash or Array value of the payload key `key`, walked (see the module
/// documentation).
pub(crate) fn structured(
    ruby: &Ruby,
    v: VALUE,
    key: &str,
    filter: &ValueFilter,
) -> Result<AttrValue, Error> {
    let mut walk = Walk {
        ruby,
        filter,
        generation: lifecycle_read_plan::generation(),
        nodes: MAX_VALUE_NODES,
        bytes: MAX_VALUE_BYTES.saturating_sub(key.len()),
        containers: Vec::new(),
        keys: vec![Text::from(key.to_string())],
        path: key.to_string(),
    };
    walk.value(v, 1)
}

struct Walk<'a> {
    ruby: &'a Ruby,
    filter: &'a ValueFilter,
    generation: u64,
    /// Values that may still be copied.
    nodes: usize,
    /// Bytes of text that may still be copied.
    bytes: usize,
    /// The containers from the top down to the one being walked: compared
    /// by identity only (each is also held by a frame of this walk).
    containers: Vec<VALUE>,
    /// The keys from the payload key down to the one being read.
    keys: Vec<Text>,
    /// The same, joined with dots.
    path: String,
}

impl Walk<'_> {
    /// Text of at most the bytes left (and `max`).
    fn text(&mut self, bytes: &[u8], max: usize) -> Text {
        let cap = self.bytes.min(max);
        self.bytes -= bytes.len().min(cap);
        Text::from_bytes_capped(bytes, cap)
    }

    /// A String's text.
    fn string(&mut self, s: VALUE, max: usize) -> Text {
        // SAFETY: `s` is a T_STRING; copied before any Ruby code runs.
        let bytes = unsafe { string_slice(s) };
        self.text(bytes, max)
    }

    /// A Bignum's decimal digits (allocates, so under protect).
    fn bignum(&mut self, v: VALUE, max: usize) -> Result<Text, Error> {
        // SAFETY: `v` is a Bignum; rb_big2str returns a new String.
        let s = magnus::rb_sys::protect(|| unsafe { rb_sys::rb_big2str(v, 10) })?;
        Ok(self.string(s, max))
    }

    fn placeholder(&mut self, v: VALUE) -> Result<Text, Error> {
        let bytes = class_placeholder(v)?;
        Ok(self.text(&bytes, MAX_KEY_BYTES))
    }

    /// An object's own description, or its class placeholder (always for
    /// an object that holds other values: see
    /// `describe_object_hiding_contents`).
    fn described(&mut self, v: VALUE, max: usize) -> Result<Text, Error> {
        Ok(self.described_or_placeholder(v, max)?.0)
    }

    /// As `described`, and whether it is the class placeholder.
    fn described_or_placeholder(&mut self, v: VALUE, max: usize) -> Result<(Text, bool), Error> {
        match describe_object_hiding_contents(self.ruby, v)? {
            Described::Text(s) => Ok((self.string(s, max), false)),
            Described::Placeholder => Ok((self.placeholder(v)?, true)),
        }
    }

    fn value(&mut self, v: VALUE, depth: usize) -> Result<AttrValue, Error> {
        self.nodes = self.nodes.saturating_sub(1);
        // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
        let ty = unsafe { rb_sys::RB_TYPE(v) };
        Ok(match ty {
            T::RUBY_T_NIL => AttrValue::Str(Text::Static("")),
            T::RUBY_T_TRUE => AttrValue::Bool(true),
            T::RUBY_T_FALSE => AttrValue::Bool(false),
            // SAFETY: a Fixnum's value is in its tag bits.
            T::RUBY_T_FIXNUM => AttrValue::Int(unsafe { rb_sys::FIX2LONG(v) } as i64),
            // SAFETY: `v` is a Float (flonum or heap); NUM2DBL reads it.
            T::RUBY_T_FLOAT => AttrValue::Float(unsafe { rb_sys::NUM2DBL(v) }),
            T::RUBY_T_BIGNUM => match bignum_i64(v) {
                Some(n) => AttrValue::Int(n),
                None => AttrValue::Str(self.bignum(v, process::lifecycle_text_bytes())?),
            },
            T::RUBY_T_STRING => AttrValue::Str(self.string(v, process::lifecycle_text_bytes())),
            // SAFETY: `v` is a Symbol; rb_sym2str returns its name String.
            T::RUBY_T_SYMBOL => AttrValue::Str(self.string(
                unsafe { rb_sys::rb_sym2str(v) },
                process::lifecycle_text_bytes(),
            )),
            T::RUBY_T_ARRAY => self.array(v, depth)?,
            T::RUBY_T_HASH => self.hash(v, depth)?,
            T::RUBY_T_STRUCT => AttrValue::Str(self.placeholder(v)?),
            _ => AttrValue::Str(self.described(v, process::lifecycle_text_bytes())?),
        })
    }

    /// The marker for a container not to enter; else enters it.
    fn enter(&mut self, v: VALUE, depth: usize) -> Option<AttrValue> {
        if depth > MAX_VALUE_DEPTH {
            return Some(AttrValue::Str(Text::Static(DEPTH_MARKER)));
        }
        if self.containers.contains(&v) {
            return Some(AttrValue::Str(Text::Static(CYCLE_MARKER)));
        }
        self.containers.push(v);
        None
    }

    fn full(&self, taken: usize) -> bool {
        taken >= MAX_ARRAY_ITEMS || self.nodes == 0 || self.bytes == 0
    }

    fn array(&mut self, v: VALUE, depth: usize) -> Result<AttrValue, Error> {
        if let Some(marker) = self.enter(v, depth) {
            return Ok(marker);
        }
        let mut items = Vec::new();
        let result = (|| {
            let mut i: isize = 0;
            // The length is read again every step: a `to_s` may change it.
            // SAFETY: `v` is a T_ARRAY; rb_ary_entry is bounds-checked.
            while i < unsafe { rb_sys::RARRAY_LEN(v) } as isize {
                if self.full(items.len()) {
                    items.push(AttrValue::Str(Text::Static(TRUNCATED_MARKER)));
                    break;
                }
                // SAFETY: as above.
                let item = unsafe { rb_sys::rb_ary_entry(v, i as _) };
                items.push(self.value(item, depth + 1)?);
                i += 1;
            }
            Ok::<(), Error>(())
        })();
        self.containers.pop();
        result?;
        Ok(AttrValue::Array(items.into()))
    }

    fn hash(&mut self, v: VALUE, depth: usize) -> Result<AttrValue, Error> {
        if let Some(marker) = self.enter(v, depth) {
            return Ok(marker);
        }
        let mut pairs = Vec::new();
        let result = self.hash_pairs(v, depth, &mut pairs);
        self.containers.pop();
        let seen = result?;
        // SAFETY: `v` is a T_HASH; reading its size calls no Ruby code.
        let size = unsafe { rb_sys::RHASH_SIZE(v) } as usize;
        if seen < size {
            let left_out = i64::try_from(size - seen).unwrap_or(i64::MAX);
            pairs.push((Text::Static(TRUNCATED_MARKER), AttrValue::Int(left_out)));
        }
        Ok(AttrValue::Map(pairs.into()))
    }

    /// Reads a Hash's pairs into `pairs` until the bounds are met; returns
    /// how many pairs were seen (read or skipped as duplicates).
    fn hash_pairs(
        &mut self,
        v: VALUE,
        depth: usize,
        pairs: &mut Vec<(Text, AttrValue)>,
    ) -> Result<usize, Error> {
        struct Each<'w, 'a, 'p> {
            walk: &'w mut Walk<'a>,
            depth: usize,
            pairs: &'p mut Vec<(Text, AttrValue)>,
            seen: usize,
            failure: Option<Error>,
        }

        unsafe extern "C" fn each_pair(key: VALUE, val: VALUE, arg: VALUE) -> c_int {
            // SAFETY: `arg` is the address of the Each below, alive for the
            // whole rb_hash_foreach call and used by this thread only.
            let each = unsafe { &mut *(arg as *mut Each) };
            if each.walk.full(each.pairs.len()) {
                return rb_sys::st_retval::ST_STOP as c_int;
            }
            let step = catch_unwind(AssertUnwindSafe(|| {
                each.walk.pair(key, val, each.depth, each.pairs)
            }));
            match step {
                Ok(Ok(())) => {
                    each.seen += 1;
                    rb_sys::st_retval::ST_CONTINUE as c_int
                }
                Ok(Err(e)) => {
                    each.failure = Some(e);
                    rb_sys::st_retval::ST_STOP as c_int
                }
                Err(panic) => {
                    each.failure = Some(panic_error(each.walk.ruby, panic.as_ref()));
                    rb_sys::st_retval::ST_STOP as c_int
                }
            }
        }

        let mut each = Each {
            walk: self,
            depth,
            pairs,
            seen: 0,
            failure: None,
        };
        let arg = &mut each as *mut Each as VALUE;
        // SAFETY: the callback never unwinds (panics are caught inside it)
        // and never raises; protect catches what rb_hash_foreach raises.
        magnus::rb_sys::protect(|| unsafe {
            rb_sys::rb_hash_foreach(v, Some(each_pair), arg);
            rb_sys::Qnil as VALUE
        })?;
        match each.failure {
            Some(e) => Err(e),
            None => Ok(each.seen),
        }
    }

    /// One pair: its key as text (a key already read wins), then its value
    /// or `"[FILTERED]"`.
    fn pair(
        &mut self,
        key: VALUE,
        val: VALUE,
        depth: usize,
        pairs: &mut Vec<(Text, AttrValue)>,
    ) -> Result<(), Error> {
        let budget = self.bytes.min(MAX_KEY_BYTES);
        let raw = key;
        let (key, unmatchable) = self.key_text(key)?;
        if pairs.iter().any(|(k, _)| *k == key) {
            return Ok(());
        }
        // A key cut to its limit, a key shown as its class (Rails matches
        // its whole `to_s`), or a String or Symbol a Regexp cannot match
        // (broken bytes, an encoding such as UTF-16) cannot be matched as
        // Rails matches it: with any filter in force, its value is filtered.
        let cut = !self.filter.is_empty()
            && (key_was_cut(raw, key.as_str().len(), budget) || unmatchable);
        let path_len = self.path.len();
        self.path.push('.');
        self.path.push_str(&key);
        self.keys.push(key.clone());
        let value = match if cut { Ok(true) } else { self.filtered(&key) } {
            Ok(true) => {
                self.nodes = self.nodes.saturating_sub(1);
                Ok(AttrValue::Str(Text::Static(FILTERED)))
            }
            Ok(false) => self.value(val, depth + 1),
            Err(e) => Err(e),
        };
        self.keys.pop();
        self.path.truncate(path_len);
        pairs.push((key, value?));
        Ok(())
    }

    /// A Hash key as text: Strings and Symbols as their names, numbers as
    /// their digits, nil as empty, containers as `#<ClassName>`, other
    /// objects as described; and whether a filter cannot match it as Rails
    /// would (shown as its class, or text no Regexp matches).
    fn key_text(&mut self, k: VALUE) -> Result<(Text, bool), Error> {
        // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
        Ok(match unsafe { rb_sys::RB_TYPE(k) } {
            T::RUBY_T_STRING => self.key_string(k)?,
            T::RUBY_T_SYMBOL => {
                // SAFETY: `k` is a Symbol; rb_sym2str returns its name String.
                let name = unsafe { rb_sys::rb_sym2str(k) };
                self.key_string(name)?
            }
            // SAFETY: a Fixnum's value is in its tag bits.
            T::RUBY_T_FIXNUM => (
                Text::from((unsafe { rb_sys::FIX2LONG(k) } as i64).to_string()),
                false,
            ),
            T::RUBY_T_BIGNUM => (self.bignum(k, MAX_KEY_BYTES)?, false),
            T::RUBY_T_NIL => (Text::Static(""), false),
            T::RUBY_T_TRUE => (Text::Static("true"), false),
            T::RUBY_T_FALSE => (Text::Static("false"), false),
            T::RUBY_T_ARRAY | T::RUBY_T_HASH | T::RUBY_T_STRUCT => (self.placeholder(k)?, true),
            _ => self.described_or_placeholder(k, MAX_KEY_BYTES)?,
        })
    }

    /// A String key's text (or a Symbol key's name), and whether no filter
    /// can match it. A key in another ASCII-compatible encoding than UTF-8
    /// (ISO-8859-1's "paßword") is read as its UTF-8 conversion, so that
    /// filters match it as Ruby's Regexps do; one with no conversion is
    /// matched by no filter (bytes not valid in their encoding, an
    /// encoding that is not ASCII-compatible, likewise). Binary keys are
    /// read as bytes, as before: Ruby matches ASCII filters in them bytewise.
    fn key_string(&mut self, s: VALUE) -> Result<(Text, bool), Error> {
        if !text_matchable(s) {
            return Ok((self.string(s, MAX_KEY_BYTES), true));
        }
        match utf8_key(s)? {
            Some(utf8) => Ok((self.string(utf8, MAX_KEY_BYTES), false)),
            None => Ok((self.string(s, MAX_KEY_BYTES), true)),
        }
    }

    /// Whether the key just pushed is filtered (see the module documentation).
    /// A key cut to its limit is filtered whenever a filter is in force
    /// (see `pair`).
    fn filtered(&mut self, key: &str) -> Result<bool, Error> {
        if self.filter.is_empty() {
            return Ok(false);
        }
        if self.filter.matches(key, &self.path) {
            return Ok(true);
        }
        if !self.filter.asks() {
            return Ok(false);
        }
        let path = path_key(&self.keys);
        if let Some(filtered) = cached_decision(self.generation, &path) {
            return Ok(filtered);
        }
        let filtered = self.ask_ruby()?;
        remember_decision(self.generation, path, filtered);
        Ok(filtered)
    }

    /// `TaskerTraceNative::Lifecycle.filtered_path?(keys)`; true when it
    /// raises (bar what must propagate).
    fn ask_ruby(&self) -> Result<bool, Error> {
        let ruby = self.ruby;
        let asked = (|| {
            let keys = ruby.ary_new_capa(self.keys.len());
            for k in &self.keys {
                keys.push(ruby.str_new(k))?;
            }
            let lifecycle: RModule = ruby
                .class_object()
                .const_get::<_, RModule>("TaskerTraceNative")?
                .const_get("Lifecycle")?;
            let answer: RValue = lifecycle.funcall("filtered_path?", (keys,))?;
            Ok::<bool, Error>(rb_sys::TEST(answer.as_raw()))
        })();
        match asked {
            Ok(filtered) => Ok(filtered),
            Err(e) if must_propagate(ruby, &e) => Err(e),
            Err(_) => Ok(true),
        }
    }
}
