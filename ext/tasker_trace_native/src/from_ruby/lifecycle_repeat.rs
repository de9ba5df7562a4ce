//! A step event read into a [`RepeatKey`]: its kind, ids and the known
//! keys' values as immediates or text hashes, with nothing allocated and no
//! Ruby code run, so that a copy of the event recorded just before it can be
//! counted without being converted (see the core's `input::lifecycle::repeat`).
//!
//! `None` (read the event in full) for any other event: a name that is not a
//! step event that can repeat, a payload without Symbol keys or with a task
//! or step id that is not an Integer, a value that is not an immediate or a
//! String, or a `lifecycle_attributes` allowlist in force.

use rb_sys::{ruby_value_type as T, VALUE};
use tasker_trace_core::input::lifecycle::classify;
use tasker_trace_core::input::lifecycle::repeat::{text_hash, RepeatKey, Word, REPEAT_VALUES};

use crate::from_ruby::convert::string_slice;
use crate::from_ruby::lifecycle_convert::{find_keys, look_up_keys, Found};
use crate::from_ruby::lifecycle_read_plan::{self, ReadPlan, RepeatPlace, QUNDEF};

/// Event names longer than any step event's are not looked at.
const MAX_STEP_NAME_BYTES: usize = 32;

/// The repeat key of the event `name` with `payload`, published in
/// `thread` (see `helpers::thread_token`), if it can repeat.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn repeat_key(name: VALUE, payload: VALUE, thread: u64) -> Option<RepeatKey> {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    if unsafe { rb_sys::RB_TYPE(name) } != T::RUBY_T_STRING
        || unsafe { rb_sys::RB_TYPE(payload) } != T::RUBY_T_HASH
    {
        return None;
    }
    // SAFETY: `name` is a T_STRING; its bytes are read at once.
    let bytes = unsafe { string_slice(name) };
    if bytes.len() > MAX_STEP_NAME_BYTES {
        return None;
    }
    let kind = classify(bytes);
    if !RepeatKey::kind_can_repeat(kind) {
        return None;
    }
    let plan = lifecycle_read_plan::plan();
    let places = plan.repeat_places()?;
    if places.len() > REPEAT_VALUES + 1 {
        return None;
    }
    let mut found = [QUNDEF; REPEAT_VALUES + 1];
    let (task, step) = look_up(plan, payload, &mut found[..places.len()])?;
    let mut key = RepeatKey {
        kind,
        task: fixnum(task)?,
        step: fixnum(step)?,
        attempt: Word::Absent,
        values: [Word::Absent; REPEAT_VALUES],
        thread,
    };
    for (&(place, filtered), &value) in places.iter().zip(&found) {
        let word = if filtered && !absent(value) {
            Word::Filtered
        } else {
            word(value)?
        };
        match place {
            RepeatPlace::Attempt => key.attempt = word,
            RepeatPlace::Value(i) => *key.values.get_mut(usize::from(i))? = word,
            RepeatPlace::Extra => return None,
        }
    }
    Some(key)
}

/// Finds the ids and the plan's keys as reading the event finds them (one
/// hash lookup of each Symbol when they are all static, else one pass over
/// the payload); no Ruby code runs. `None` without both ids.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn look_up(plan: &ReadPlan, payload: VALUE, values: &mut [VALUE]) -> Option<(VALUE, VALUE)> {
    let mut found = Found::new(plan, values);
    if plan.direct {
        look_up_keys(&mut found, payload).ok()?;
    } else {
        find_keys(&mut found, payload).ok()?;
    }
    (found.task != QUNDEF && found.step != QUNDEF).then_some((found.task, found.step))
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn fixnum(v: VALUE) -> Option<i64> {
    // SAFETY: FIXNUM_P only inspects the tag bits; FIX2LONG reads them.
    rb_sys::FIXNUM_P(v).then(|| unsafe { rb_sys::FIX2LONG(v) } as i64)
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn absent(v: VALUE) -> bool {
    v == QUNDEF || v == rb_sys::Qnil as VALUE
}

/// A value as a word; `None` for what a repeat does not compare (anything
/// but immediates and Strings).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn word(v: VALUE) -> Option<Word> {
    if absent(v) {
        return Some(Word::Absent);
    }
    if let Some(n) = fixnum(v) {
        return Some(Word::Int(n));
    }
    if rb_sys::SPECIAL_CONST_P(v) {
        // true, false, a flonum, a static Symbol: the bits are the value.
        return Some(Word::Bits(v));
    }
    // SAFETY: RB_TYPE only inspects the header of a heap object.
    if unsafe { rb_sys::RB_TYPE(v) } != T::RUBY_T_STRING {
        return None;
    }
    // SAFETY: `v` is a live T_STRING; its bytes are hashed at once and its
    // encoding index read from its header (the same bytes in another
    // encoding may convert differently).
    let (bytes, encoding) = unsafe { (string_slice(v), rb_sys::ENCODING_GET(v)) };
    let hash = text_hash(bytes) ^ (encoding as u64).rotate_left(48);
    Some(Word::Text(hash, bytes.len()))
}
