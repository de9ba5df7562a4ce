//! A published lifecycle event (a name and a Symbol-keyed payload) read into
//! a core [`LifecycleEvent`], before any lock is taken.
//!
//! Per event: only the keys the model uses are read (`task_id`, `step_id`,
//! the other [`AttrKey::PAYLOAD_KEYS`] and the `lifecycle_attributes`
//! allowlist), so `step_results`, `step_inputs`, `task_context` and
//! `backtrace` are never touched. Each arrives after a millisecond or more
//! of other work, with cold caches, so the path touches as little memory as
//! it can: the name is classified from its bytes against a static table,
//! the plan is one pointer, each key is one hash lookup of its static
//! Symbol, and the event's one allocation is its attribute vector (plus the
//! text values). No per-thread state, no reference count. A plan with
//! dynamic Symbols or many keys, and a payload without a Symbol `:task_id`,
//! are read in one pass over the payload's keys instead. No Ruby code runs
//! while keys are found; the result owns all its data.
//!
//! Which keys are read, and which are exported as `"[FILTERED]"`, is the
//! [`ReadPlan`] in force (see [`crate::from_ruby::lifecycle_read_plan`]).
//!
//! Keys: Symbols; when the payload has no `:task_id` but a `"task_id"`
//! (HashWithIndifferentAccess, JSON), every key is read as a String. Of a
//! payload without a task id nothing is converted (the tracer ignores it).
//!
//! Values: Integer (beyond 64 bits as its decimal String), Float, true/false, String
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

use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::{Error, Ruby};
use rb_sys::{ruby_value_type as T, ID, VALUE};
use tasker_trace_core::input::lifecycle::ToState;
use tasker_trace_core::input::lifecycle::{
    Attr, AttrKey, AttrValue, EventKind, EventName, Id, LifecycleEvent, Text,
};
use tasker_trace_core::support::clock::Stamp;

use crate::process;

use crate::from_ruby::convert::{
    bignum_i64, class_placeholder, describe_object_hiding_contents, string_slice, Described,
};
use crate::from_ruby::lifecycle_read_plan::{
    self, KeyMode, PlanKey, ReadPlan, FILTERED, MAX_ALLOWLIST, QUNDEF, SMALL_PLAN,
};
use crate::from_ruby::lifecycle_values;

/// Event names longer than this are cut.
const MAX_NAME_BYTES: usize = 1024;

/// The plan in force.
#[inline]
pub fn current_plan() -> &'static ReadPlan {
    lifecycle_read_plan::plan()
}

/// The event name of a String or Symbol (else `None`): a known name is
/// static (classified from its bytes, nothing kept between events).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
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
    Some(EventName::new(&bytes[..bytes.len().min(MAX_NAME_BYTES)]))
}

/// Where one pass over a payload found the keys of a plan: `found[i]` is
/// the value under `plan.keys[i]` (`Qundef`: absent). Kept on the stack, so
/// the GC sees the values while they are converted.
pub(crate) struct Found<'a> {
    pub(crate) plan: &'a ReadPlan,
    pub(crate) mode: KeyMode,
    pub(crate) task: VALUE,
    pub(crate) step: VALUE,
    pub(crate) to_state: VALUE,
    pub(crate) values: &'a mut [VALUE],
    /// In Symbol mode: a String "task_id" key was seen.
    pub(crate) string_task_id: bool,
}

impl<'a> Found<'a> {
    /// Nothing found yet, in Symbol mode.
    pub(crate) fn new(plan: &'a ReadPlan, values: &'a mut [VALUE]) -> Found<'a> {
        Found {
            plan,
            mode: KeyMode::Symbols,
            task: QUNDEF,
            step: QUNDEF,
            to_state: QUNDEF,
            values,
            string_task_id: false,
        }
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
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
        // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
        if mode == KeyMode::Symbols && unsafe { rb_sys::RB_TYPE(key) } == T::RUBY_T_SYMBOL {
            // A dynamic Symbol (its name was made a Symbol at run time
            // before the plan interned it, which pinned it down): its ID,
            // read from the Symbol itself (which the payload's own hashing
            // just read); 0 for a Symbol no ID was made for, which no plan
            // key is. Nothing is interned.
            let mut sym = key;
            // SAFETY: `sym` is a Symbol; rb_check_id creates nothing.
            let id = unsafe { rb_sys::rb_check_id(&mut sym) };
            if id != 0 {
                self.note_dynamic(id, val);
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

    /// A dynamic Symbol key whose ID is `id`.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn note_dynamic(&mut self, id: ID, val: VALUE) {
        let plan = self.plan;
        if id == plan.task_id.id {
            self.task = val;
        } else if id == plan.step_id.id {
            self.step = val;
        } else if let Some(slot) = plan.index_of_id(id).and_then(|i| self.values.get_mut(i)) {
            *slot = val;
        }
        if id == plan.to_state.id {
            self.to_state = val;
        }
    }
}

/// Notes where the plan's keys are in `payload`, in one pass over it; runs
/// no Ruby code. A default value is not read.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub(crate) fn find_keys(found: &mut Found<'_>, payload: VALUE) -> Result<(), Error> {
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
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

/// The bytes of what an object says of itself, `#<ClassName>` when it cannot
/// or when it holds other values (see `describe_object_hiding_contents`).
fn described_text(ruby: &Ruby, v: VALUE) -> Result<Text, Error> {
    Ok(match describe_object_hiding_contents(ruby, v)? {
        // SAFETY: `s` is a String just returned; copied at once.
        Described::Text(s) => {
            Text::from_bytes_capped(unsafe { string_slice(s) }, process::lifecycle_text_bytes())
        }
        Described::Placeholder => Text::from_bytes(&class_placeholder(v)?),
    })
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn string_text(s: VALUE) -> Text {
    // SAFETY: `s` is a T_STRING; copied before any Ruby code can run.
    Text::from_bytes_capped(unsafe { string_slice(s) }, process::lifecycle_text_bytes())
}

fn bignum_text(v: VALUE) -> Text {
    // SAFETY: `v` is a Bignum; rb_big2str returns a new String.
    string_text(unsafe { rb_sys::rb_big2str(v, 10) })
}

/// A scalar value, or `None` for what is not one (nil, Arrays, objects).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn scalar(v: VALUE, ty: T) -> Option<AttrValue> {
    Some(match ty {
        T::RUBY_T_TRUE => AttrValue::Bool(true),
        T::RUBY_T_FALSE => AttrValue::Bool(false),
        // SAFETY: a Fixnum's value is in its tag bits.
        T::RUBY_T_FIXNUM => AttrValue::Int(unsafe { rb_sys::FIX2LONG(v) } as i64),
        // SAFETY: `v` is a Float (flonum or heap); NUM2DBL reads it.
        T::RUBY_T_FLOAT => AttrValue::Float(unsafe { rb_sys::NUM2DBL(v) }),
        T::RUBY_T_BIGNUM => match bignum_i64(v) {
            Some(n) => AttrValue::Int(n),
            None => AttrValue::Str(bignum_text(v)),
        },
        T::RUBY_T_STRING => AttrValue::Str(string_text(v)),
        // SAFETY: `v` is a Symbol; rb_sym2str returns its name String.
        T::RUBY_T_SYMBOL => AttrValue::Str(string_text(unsafe { rb_sys::rb_sym2str(v) })),
        _ => return None,
    })
}

/// A payload value as an attribute value; `None` for nil.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
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
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn id_value(v: VALUE) -> Result<Option<Id>, ()> {
    // Long or invalid ids are kept apart (see `Id::from_bytes`).
    let capped = |s: VALUE| {
        // SAFETY: `s` is a T_STRING; copied at once.
        Id::from_bytes(unsafe { string_slice(s) })
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
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
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
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
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
        read_sized::<SMALL_PLAN>(ruby, payload, name, at, plan)
    } else {
        read_sized::<LARGE_PLAN>(ruby, payload, name, at, plan)
    }
}

const LARGE_PLAN: usize = AttrKey::PAYLOAD_KEYS.len() + MAX_ALLOWLIST;

/// [`read_with`] with room for `N` values on the stack.
#[inline(always)]
fn read_sized<const N: usize>(
    ruby: &Ruby,
    payload: VALUE,
    name: EventName,
    at: Stamp,
    plan: &ReadPlan,
) -> Result<Read, Error> {
    let mut values = [QUNDEF; N];
    read_with(
        ruby,
        payload,
        name,
        at,
        plan,
        &mut values[..plan.keys.len()],
    )
}

/// Looks up each key of a direct plan in `payload` (one hash lookup of a
/// static Symbol each; the default value and default proc are not used).
/// Stops after `:task_id` when the payload has none. Runs no Ruby code
/// (a static Symbol's hash and equality are the VM's own), under one
/// protect all the same.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub(crate) fn look_up_keys(found: &mut Found<'_>, payload: VALUE) -> Result<(), Error> {
    let plan = found.plan;
    let lookup = |key: VALUE| {
        // SAFETY: `payload` is a T_HASH and `key` a static Symbol.
        unsafe { rb_sys::rb_hash_lookup2(payload, key, QUNDEF) }
    };
    magnus::rb_sys::protect(|| {
        found.task = lookup(plan.task_id.sym);
        if found.task != QUNDEF {
            found.step = lookup(plan.step_id.sym);
            found.to_state = lookup(plan.to_state.sym);
            for (slot, &key) in found.values.iter_mut().zip(plan.symbols()) {
                *slot = lookup(key);
            }
        }
        rb_sys::Qnil as VALUE
    })?;
    Ok(())
}

/// Finds the ids, `to_state` and the plan's keys in `payload` (a Hash):
/// by direct lookups when the plan allows, else (or without a Symbol
/// `:task_id`) in one pass over every key, with String keys when the
/// payload has a String "task_id". Runs no Ruby code.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn find(found: &mut Found<'_>, payload: VALUE) -> Result<(), Error> {
    if found.plan.direct {
        look_up_keys(found, payload)?;
    }
    if found.task == QUNDEF {
        // Not read directly, or no Symbol `:task_id`: one pass over every
        // key (String keys, failed creations without an id).
        found.values.fill(QUNDEF);
        find_keys(found, payload)?;
        if found.task == QUNDEF && found.string_task_id {
            found.mode = KeyMode::Strings;
            found.step = QUNDEF;
            found.to_state = QUNDEF;
            found.values.fill(QUNDEF);
            find_keys(found, payload)?;
        }
    }
    Ok(())
}

/// Whether reading the event would give one that can open a run: a
/// `task.start_requested` whose payload has a task id and a `to_state` of
/// `in_progress` (the state machine's copy). Found as reading finds them,
/// with nothing converted and no Ruby code run; false for anything else,
/// a failure included (reading it then tells).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub fn opens_run(name: VALUE, payload: VALUE) -> bool {
    // SAFETY: RB_TYPE only inspects the VALUE's tag bits and header.
    if unsafe { rb_sys::RB_TYPE(payload) } != T::RUBY_T_HASH {
        return false;
    }
    if event_name(name).map(|n| n.kind()) != Some(EventKind::TaskStartRequested) {
        return false;
    }
    let mut found = Found::new(current_plan(), &mut []);
    find(&mut found, payload).is_ok()
        && found.task != QUNDEF
        && state_of(found.to_state) == ToState::InProgress
}

#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn read_with(
    ruby: &Ruby,
    payload: VALUE,
    name: EventName,
    at: Stamp,
    plan: &ReadPlan,
    values: &mut [VALUE],
) -> Result<Read, Error> {
    let mut found = Found::new(plan, values);
    find(&mut found, payload)?;
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
    // Room for the identity attributes the tracer may add: one allocation.
    let present = found.values.iter().filter(|&&v| v != QUNDEF).count();
    let mut attrs = Vec::with_capacity(present + 2);
    convert_values(ruby, plan, found.values, &mut attrs)?;
    let mut ev = LifecycleEvent::new(name, at);
    ev.task_id = task;
    ev.step_id = step;
    ev.to_state = to_state;
    ev.attrs = attrs;
    Ok(Read::Event(ev))
}

/// The values found, converted in the plan's order (filtered ones as
/// `"[FILTERED]"`, without reading them).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
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
