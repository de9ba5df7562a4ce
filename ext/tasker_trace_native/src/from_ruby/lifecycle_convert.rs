//! A published lifecycle event (a name and a Symbol-keyed payload) read into
//! a core [`LifecycleEvent`], before any lock is taken.
//!
//! Per event: the payload is read once, in one pass over its keys, for the
//! keys the model uses only (`task_id`, `step_id`, the other
//! [`AttrKey::PAYLOAD_KEYS`] and the `lifecycle_attributes` allowlist): the
//! pass only compares keys (no Ruby code runs in it) and notes where the
//! values of those keys are; only they are converted, so `step_results`,
//! `step_inputs`, `task_context` and `backtrace` are never read. The result
//! owns all its data.
//!
//! Which keys are read, and which are exported as `"[FILTERED]"`, is the
//! [`ReadPlan`] in force (see [`crate::from_ruby::lifecycle_read_plan`]);
//! each thread keeps a copy and checks one counter per event to see whether
//! it is current.
//!
//! Keys: Symbols; when the payload has no `:task_id` but a `"task_id"`
//! (HashWithIndifferentAccess, JSON), every key is read as a String. Of a
//! payload without a task id nothing is converted (the tracer ignores it).
//!
//! Values: Integer (Bignum as its decimal String), Float, true/false, String
//! (as UTF-8, invalid bytes replaced, cut at 4 bytes a character of the
//! attribute value length limit, which the export then applies), Symbol (its
//! name); nil is absent; Hashes and Arrays as structure, bounded and with
//! their nested keys filtered (see [`crate::lifecycle_values`]); a Struct is
//! `#<ClassName>`; any other object is its `iso8601` (Time, Date) or `to_s`,
//! or `#<ClassName>` when that raises. Only exceptions that must propagate
//! (interrupts, throws, exits) leave this module.
//!
//! Ids: `task_id` and `step_id` are Integers (Bignums as their digits),
//! Strings or Symbols; nil and false are absent. An event whose task or step
//! id is anything else (an object whose `to_s` might raise, or name many
//! tasks alike) is refused, and counted as such by the caller.

use std::cell::RefCell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use magnus::{Error, Ruby};
use rb_sys::{ruby_value_type as T, VALUE};
use tasker_trace_core::input::lifecycle::ToState;
use tasker_trace_core::input::lifecycle::{
    Attr, AttrKey, AttrValue, EventKind, EventName, Id, LifecycleEvent, Text, MAX_TEXT_BYTES,
};
use tasker_trace_core::support::clock::Stamp;

use crate::process;

use crate::from_ruby::convert::{
    class_placeholder, describe_object, string_slice, Described, FastMap,
};
use crate::from_ruby::lifecycle_read_plan::{
    self, KeyMode, PlanKey, ReadPlan, FILTERED, MAX_ALLOWLIST, QUNDEF, SMALL_PLAN,
};
use crate::from_ruby::lifecycle_values;

/// Event names longer than this are cut; names up to `NAME_CACHE_BYTES`
/// are cached per thread, at most `NAME_CACHE_LIMIT` of them.
const MAX_NAME_BYTES: usize = 1024;
const NAME_CACHE_BYTES: usize = 128;
const NAME_CACHE_LIMIT: usize = 1024;

/// What reading keeps on a thread from one event to the next. Borrowed
/// only for moments in which no Ruby code runs.
struct Local {
    /// The plan in force and its generation.
    plan: Option<(u64, Arc<ReadPlan>)>,
    names: Option<FastMap<Box<[u8]>, EventName>>,
    texts: Option<FastMap<Box<[u8]>, Text>>,
    /// Attributes of the event being read, reused from one event to the
    /// next (taken while in use, so a nested call makes its own).
    scratch: Vec<Attr>,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { plan: None, names: None, texts: None, scratch: Vec::new() })
    };
}

fn local<R>(f: impl FnOnce(&mut Local) -> R) -> R {
    LOCAL.with(|l| f(&mut l.borrow_mut()))
}

/// The plan in force, from this thread's copy while it is current.
pub fn current_plan() -> Arc<ReadPlan> {
    let generation = lifecycle_read_plan::generation();
    let cached = local(|l| {
        l.plan
            .as_ref()
            .filter(|(g, _)| *g == generation)
            .map(|(_, p)| p.clone())
    });
    if let Some(plan) = cached {
        return plan;
    }
    let (generation, plan) = lifecycle_read_plan::in_force();
    local(|l| l.plan = Some((generation, plan.clone())));
    plan
}

/// The event name of a String or Symbol (else `None`), cached per thread.
fn event_name(v: VALUE) -> Option<EventName> {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    let s = match unsafe { rb_sys::RB_TYPE(v) } {
        T::RUBY_T_STRING => v,
        // SAFETY: `v` is a Symbol; rb_sym2str returns its name String.
        T::RUBY_T_SYMBOL => unsafe { rb_sys::rb_sym2str(v) },
        _ => return None,
    };
    // SAFETY: `s` is a T_STRING; no Ruby code runs while the bytes are used.
    let bytes = unsafe { string_slice(s) };
    let bytes = &bytes[..bytes.len().min(MAX_NAME_BYTES)];
    if bytes.len() > NAME_CACHE_BYTES {
        return Some(EventName::new(bytes));
    }
    Some(local(|l| {
        cached(&mut l.names, bytes, NAME_CACHE_LIMIT, EventName::new)
    }))
}

/// `cache[bytes]`, made with `make` and kept when missing; a cache holding
/// `limit` entries starts over.
fn cached<V: Clone>(
    cache: &mut Option<FastMap<Box<[u8]>, V>>,
    bytes: &[u8],
    limit: usize,
    make: impl FnOnce(&[u8]) -> V,
) -> V {
    let cache = cache.get_or_insert_with(FastMap::default);
    if let Some(v) = cache.get(bytes) {
        return v.clone();
    }
    if cache.len() >= limit {
        cache.clear();
    }
    let v = make(bytes);
    cache.insert(Box::from(bytes), v.clone());
    v
}

/// Where one pass over a payload found the keys of a plan: `found[i]` is
/// the value under `plan.keys[i]` (`Qundef`: absent). Kept on the stack, so
/// the GC sees the values while they are converted.
struct Found<'a> {
    plan: &'a ReadPlan,
    mode: KeyMode,
    task: VALUE,
    step: VALUE,
    to_state: VALUE,
    values: &'a mut [VALUE],
    /// In Symbol mode: a String "task_id" key was seen.
    string_task_id: bool,
}

impl Found<'_> {
    fn note(&mut self, key: VALUE, val: VALUE) {
        let mode = self.mode;
        let plan = self.plan;
        if mode == KeyMode::Symbols && rb_sys::STATIC_SYM_P(key) {
            // The common case: compare immediates.
            if key == plan.task_id.sym {
                self.task = val;
            } else if key == plan.step_id.sym {
                self.step = val;
            } else if key == plan.to_state.sym {
                self.to_state = val;
                // An allowlisted `to_state` is an attribute as well.
                if let Some(slot) = plan
                    .index_of_static(key)
                    .and_then(|i| self.values.get_mut(i))
                {
                    *slot = val;
                }
            } else if let Some(slot) = plan
                .index_of_static(key)
                .and_then(|i| self.values.get_mut(i))
            {
                *slot = val;
            }
            return;
        }
        if plan.task_id.is(key, mode) {
            self.task = val;
        } else if plan.step_id.is(key, mode) {
            self.step = val;
        } else if let Some(i) = plan.keys.iter().position(|k| k.is(key, mode)) {
            if let Some(slot) = self.values.get_mut(i) {
                *slot = val;
            }
        } else if mode == KeyMode::Symbols && self.task == QUNDEF {
            self.string_task_id |= self.plan.task_id.is(key, KeyMode::Strings);
        }
        if plan.to_state.is(key, mode) {
            self.to_state = val;
        }
    }
}

/// Notes where the plan's keys are in `payload`, in one pass over it; runs
/// no Ruby code. A default value is not read.
fn find_keys(found: &mut Found<'_>, payload: VALUE) -> Result<(), Error> {
    unsafe extern "C" fn each_pair(key: VALUE, val: VALUE, arg: VALUE) -> c_int {
        // SAFETY: `arg` is the address of the Found below, alive for the
        // whole rb_hash_foreach call and used by this thread only.
        let found = unsafe { &mut *(arg as *mut Found) };
        // Comparisons only; a panic (there is none to expect) must not
        // unwind into the VM.
        let _ = catch_unwind(AssertUnwindSafe(|| found.note(key, val)));
        rb_sys::st_retval::ST_CONTINUE as c_int
    }
    let arg = found as *mut Found as VALUE;
    // SAFETY: `payload` is a T_HASH; the callback never raises nor unwinds;
    // protect catches anything rb_hash_foreach itself raises.
    magnus::rb_sys::protect(|| unsafe {
        rb_sys::rb_hash_foreach(payload, Some(each_pair), arg);
        rb_sys::Qnil as VALUE
    })?;
    Ok(())
}

/// The bytes of what an object says of itself, `#<ClassName>` when it cannot.
fn described_text(ruby: &Ruby, v: VALUE) -> Result<Text, Error> {
    Ok(match describe_object(ruby, v)? {
        // SAFETY: `s` is a String just returned; copied at once.
        Described::Text(s) => {
            Text::from_bytes_capped(unsafe { string_slice(s) }, process::lifecycle_text_bytes())
        }
        Described::Placeholder => Text::from_bytes(&class_placeholder(v)?),
    })
}

/// Strings up to this many bytes are shared per thread (a step name comes
/// with every event of its step), at most `TEXT_CACHE_LIMIT` of them.
const TEXT_CACHE_BYTES: usize = 64;
const TEXT_CACHE_LIMIT: usize = 512;

fn string_text(s: VALUE) -> Text {
    // SAFETY: `s` is a T_STRING; copied before any Ruby code can run.
    let bytes = unsafe { string_slice(s) };
    if bytes.len() > TEXT_CACHE_BYTES {
        return Text::from_bytes_capped(bytes, process::lifecycle_text_bytes());
    }
    local(|l| cached(&mut l.texts, bytes, TEXT_CACHE_LIMIT, Text::from_bytes))
}

fn bignum_text(v: VALUE) -> Text {
    // SAFETY: `v` is a Bignum; rb_big2str returns a new String.
    string_text(unsafe { rb_sys::rb_big2str(v, 10) })
}

/// A scalar value, or `None` for what is not one (nil, Arrays, objects).
fn scalar(v: VALUE, ty: T) -> Option<AttrValue> {
    Some(match ty {
        T::RUBY_T_TRUE => AttrValue::Bool(true),
        T::RUBY_T_FALSE => AttrValue::Bool(false),
        // SAFETY: a Fixnum's value is in its tag bits.
        T::RUBY_T_FIXNUM => AttrValue::Int(unsafe { rb_sys::FIX2LONG(v) } as i64),
        // SAFETY: `v` is a Float (flonum or heap); NUM2DBL reads it.
        T::RUBY_T_FLOAT => AttrValue::Float(unsafe { rb_sys::NUM2DBL(v) }),
        T::RUBY_T_BIGNUM => AttrValue::Str(bignum_text(v)),
        T::RUBY_T_STRING => AttrValue::Str(string_text(v)),
        // SAFETY: `v` is a Symbol; rb_sym2str returns its name String.
        T::RUBY_T_SYMBOL => AttrValue::Str(string_text(unsafe { rb_sys::rb_sym2str(v) })),
        _ => return None,
    })
}

/// A payload value as an attribute value; `None` for nil.
fn attr_value(
    ruby: &Ruby,
    plan: &ReadPlan,
    key: &PlanKey,
    v: VALUE,
) -> Result<Option<AttrValue>, Error> {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    let ty = unsafe { rb_sys::RB_TYPE(v) };
    if let Some(value) = scalar(v, ty) {
        return Ok(Some(value));
    }
    match ty {
        T::RUBY_T_NIL => Ok(None),
        T::RUBY_T_ARRAY | T::RUBY_T_HASH | T::RUBY_T_STRUCT => {
            lifecycle_values::structured(ruby, v, &key.name, &plan.values).map(Some)
        }
        _ => Ok(Some(AttrValue::Str(described_text(ruby, v)?))),
    }
}

/// A task or step id: `Ok(None)` for nil and false, `Err(())` for what is
/// neither an Integer nor a String or Symbol. Runs no Ruby code.
fn id_value(v: VALUE) -> Result<Option<Id>, ()> {
    let capped = |s: VALUE| {
        // SAFETY: `s` is a T_STRING; copied at once.
        let bytes = unsafe { string_slice(s) };
        Id::from_bytes(&bytes[..bytes.len().min(MAX_TEXT_BYTES)])
    };
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    Ok(Some(match unsafe { rb_sys::RB_TYPE(v) } {
        T::RUBY_T_NIL | T::RUBY_T_FALSE => return Ok(None),
        // SAFETY: a Fixnum's value is in its tag bits.
        T::RUBY_T_FIXNUM => Id::Int(unsafe { rb_sys::FIX2LONG(v) } as i64),
        T::RUBY_T_STRING => capped(v),
        // SAFETY: `v` is a Symbol; rb_sym2str returns its name String.
        T::RUBY_T_SYMBOL => capped(unsafe { rb_sys::rb_sym2str(v) }),
        // SAFETY: `v` is a Bignum; rb_big2str returns a new String.
        T::RUBY_T_BIGNUM => capped(unsafe { rb_sys::rb_big2str(v, 10) }),
        _ => return Err(()),
    }))
}

/// The state a `to_state` value names (a String or Symbol; nil or absent:
/// none). Compares bytes, copies nothing.
fn state_of(v: VALUE) -> ToState {
    if v == QUNDEF {
        return ToState::Absent;
    }
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    let s = match unsafe { rb_sys::RB_TYPE(v) } {
        T::RUBY_T_STRING => v,
        // SAFETY: `v` is a Symbol; rb_sym2str returns its name String.
        T::RUBY_T_SYMBOL => unsafe { rb_sys::rb_sym2str(v) },
        T::RUBY_T_NIL => return ToState::Absent,
        _ => return ToState::Other,
    };
    // SAFETY: `s` is a T_STRING, read at once; no Ruby code runs.
    ToState::from_bytes(unsafe { string_slice(s) })
}

/// What reading an event gave.
pub enum Read {
    /// Not a lifecycle event: the payload is not a Hash, the name is
    /// neither a String nor a Symbol, or the task or step id is neither an
    /// Integer nor a String or Symbol.
    Refused,
    Event(LifecycleEvent),
}

/// Reads one event (see the module documentation). `at` is the event's one
/// clock reading.
pub fn read_event(ruby: &Ruby, name: VALUE, payload: VALUE, at: Stamp) -> Result<Read, Error> {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    if unsafe { rb_sys::RB_TYPE(payload) } != T::RUBY_T_HASH {
        return Ok(Read::Refused);
    }
    let Some(name) = event_name(name) else {
        return Ok(Read::Refused);
    };
    let plan = current_plan();
    if plan.keys.len() <= SMALL_PLAN {
        let mut values = [QUNDEF; SMALL_PLAN];
        read_with(ruby, payload, name, at, &plan, &mut values)
    } else {
        let mut values = [QUNDEF; LARGE_PLAN];
        read_with(ruby, payload, name, at, &plan, &mut values)
    }
}

const LARGE_PLAN: usize = AttrKey::PAYLOAD_KEYS.len() + MAX_ALLOWLIST;

fn read_with(
    ruby: &Ruby,
    payload: VALUE,
    name: EventName,
    at: Stamp,
    plan: &ReadPlan,
    values: &mut [VALUE],
) -> Result<Read, Error> {
    let mut found = Found {
        plan,
        mode: KeyMode::Symbols,
        task: QUNDEF,
        step: QUNDEF,
        to_state: QUNDEF,
        values,
        string_task_id: false,
    };
    find_keys(&mut found, payload)?;
    if found.task == QUNDEF && found.string_task_id {
        found.mode = KeyMode::Strings;
        found.step = QUNDEF;
        found.to_state = QUNDEF;
        found.values.fill(QUNDEF);
        find_keys(&mut found, payload)?;
    }
    let id = |v: VALUE| if v == QUNDEF { Ok(None) } else { id_value(v) };
    let Ok(task) = id(found.task) else {
        return Ok(Read::Refused);
    };
    // Without a task id only a failed creation (`task.failed`) is read.
    if task.is_none() && name.kind() != EventKind::TaskFailed {
        return Ok(Read::Event(LifecycleEvent::new(name, at)));
    }
    let Ok(step) = id(found.step) else {
        return Ok(Read::Refused);
    };
    let to_state = state_of(found.to_state);
    let mut attrs = local(|l| std::mem::take(&mut l.scratch));
    attrs.clear();
    let read = convert_values(ruby, plan, found.values, &mut attrs);
    let event = read.map(|()| {
        let mut ev = LifecycleEvent::with_capacity(name, at, attrs.len());
        ev.task_id = task;
        ev.step_id = step;
        ev.to_state = to_state;
        ev.attrs.append(&mut attrs);
        ev
    });
    local(|l| l.scratch = attrs);
    Ok(Read::Event(event?))
}

/// The values found, converted in the plan's order (filtered ones as
/// `"[FILTERED]"`, without reading them).
fn convert_values(
    ruby: &Ruby,
    plan: &ReadPlan,
    values: &[VALUE],
    attrs: &mut Vec<Attr>,
) -> Result<(), Error> {
    for (key, &v) in plan.keys.iter().zip(values) {
        if v == QUNDEF {
            continue;
        }
        if key.filtered {
            if v != rb_sys::Qnil as VALUE {
                attrs.push((key.attr.clone(), AttrValue::Str(Text::Static(FILTERED))));
            }
            continue;
        }
        if let Some(value) = attr_value(ruby, plan, key, v)? {
            attrs.push((key.attr.clone(), value));
        }
    }
    Ok(())
}
