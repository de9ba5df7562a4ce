//! What a lifecycle event reads of its payload: the [`ReadPlan`] (the known
//! payload keys, the `lifecycle_attributes` allowlist, and for each key
//! whether its values are exported as `"[FILTERED]"`), decided once whenever
//! the allowlist or the filter decisions change. The Ruby layer decides the
//! filtering (with Rails' `filter_parameters`) and passes the answer per key
//! name; a key of the allowlist without an answer yet is filtered.
//!
//! Nested keys of Hash values are filtered by the plan's [`ValueFilter`]
//! (the String and Symbol filters, and whether Regexp or Proc filters ask
//! the Ruby layer; see [`crate::lifecycle_values`]).
//!
//! The inputs live behind one registered lock. The plan in force is one
//! pointer readers load per event (see [`crate::from_ruby::lifecycle_convert`]):
//! no lock, no reference count, no per-thread copy. A plan is never freed
//! (a reader may still hold it while Ruby code runs inside a conversion),
//! and never made twice: inputs seen before get the plan made for them
//! then. So the plans held are one per distinct set of inputs the process
//! has used (settings and filters, each changed in turn: a handful in an
//! app, not one per `configure`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

use rb_sys::{ruby_value_type as T, ID, VALUE};
use tasker_trace_core::input::lifecycle::values::ValueFilter;
use tasker_trace_core::input::lifecycle::AttrKey;
use tasker_trace_core::support::fork::ForkSafeMutex;

use crate::from_ruby::convert::{string_slice, FastMap};

/// What a filtered value is exported as.
pub const FILTERED: &str = "[FILTERED]";
/// Most names in `lifecycle_attributes`, and most bytes in one name.
pub const MAX_ALLOWLIST: usize = 256;
pub const MAX_KEY_BYTES: usize = 256;
/// Plans of up to this many keys are matched by a scan (larger ones by a
/// map), and read with a small array on the stack.
pub(crate) const SMALL_PLAN: usize = 24;

/// One payload key an event reads, besides the identity.
#[derive(Clone, Debug)]
pub(crate) struct PlanKey {
    /// The key's Symbol ID (a plain integer; the Symbol of an interned name
    /// lives as long as the process).
    pub id: ID,
    /// The key's Symbol when it is a static one: an immediate that encodes
    /// the ID (no object); `Qundef` when the name was a dynamic Symbol first.
    pub sym: VALUE,
    pub name: Box<str>,
    pub attr: AttrKey,
    pub filtered: bool,
}

/// The keys every event reads, with their filtering decided.
#[derive(Debug)]
pub struct ReadPlan {
    pub(crate) task_id: PlanKey,
    pub(crate) step_id: PlanKey,
    /// `to_state`: read as a state, not an attribute (unless allowlisted).
    pub(crate) to_state: PlanKey,
    pub(crate) keys: Vec<PlanKey>,
    /// What finding keys in a payload reads of each key, in the plan
    /// itself and contiguous (a few cache lines) rather than in each
    /// `PlanKey`.
    hot: HotKeys,
    /// For large plans: the index of each key by its static Symbol.
    by_symbol: Option<FastMap<VALUE, usize>>,
    /// How keys nested in Hash values are filtered.
    pub(crate) values: Arc<ValueFilter>,
    /// Whether every key (the identity and `to_state` included) is a static
    /// Symbol and the plan is small: payloads are then read by looking up
    /// each key, not by a pass over every key of the payload.
    pub(crate) direct: bool,
}

/// The Symbol of `id` if it is static (an immediate), else `Qundef`.
fn static_symbol(id: ID) -> VALUE {
    // SAFETY: `id` came from rb_intern2: the VM has its Symbol.
    let sym = unsafe { rb_sys::rb_id2sym(id) };
    if rb_sys::STATIC_SYM_P(sym) {
        sym
    } else {
        QUNDEF
    }
}

pub(crate) const QUNDEF: VALUE = rb_sys::Qundef as VALUE;

impl PlanKey {
    fn new(name: &str, attr: AttrKey, filtered: bool) -> PlanKey {
        let id = intern(name);
        PlanKey {
            id,
            sym: static_symbol(id),
            name: name.into(),
            attr,
            filtered,
        }
    }

    /// Whether a payload key is this key, in `mode`. Runs no Ruby code.
    pub(crate) fn is(&self, key: VALUE, mode: KeyMode) -> bool {
        match mode {
            KeyMode::Symbols if self.sym != QUNDEF => key == self.sym,
            // SAFETY: the ID's Symbol exists; looking it up creates nothing.
            KeyMode::Symbols => key == unsafe { rb_sys::rb_id2sym(self.id) },
            KeyMode::Strings => {
                // SAFETY: RB_TYPE only inspects the VALUE; `key` is then a
                // live String whose bytes are compared at once.
                unsafe {
                    rb_sys::RB_TYPE(key) == T::RUBY_T_STRING
                        && string_slice(key) == self.name.as_bytes()
                }
            }
        }
    }
}

fn intern(name: &str) -> ID {
    // SAFETY: rb_intern2 copies the name and returns a static Symbol's ID.
    unsafe { rb_sys::rb_intern2(name.as_ptr() as *const _, name.len() as _) }
}

/// Where a repeat read (see `lifecycle_repeat`) puts a key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RepeatPlace {
    /// `attempt_number`.
    Attempt,
    /// The n-th compared value.
    Value(u8),
    /// An allowlisted key: events are not compared.
    Extra,
}

/// The keys of a small plan, as finding them reads them.
#[derive(Debug)]
struct HotKeys {
    /// Keys held (all of a plan of up to `SMALL_PLAN` keys, else the first).
    len: usize,
    sym: [VALUE; SMALL_PLAN],
    id: [ID; SMALL_PLAN],
    repeat: [(RepeatPlace, bool); SMALL_PLAN],
}

impl HotKeys {
    fn new(keys: &[PlanKey]) -> HotKeys {
        let mut hot = HotKeys {
            len: keys.len().min(SMALL_PLAN),
            sym: [QUNDEF; SMALL_PLAN],
            id: [0; SMALL_PLAN],
            repeat: [(RepeatPlace::Extra, false); SMALL_PLAN],
        };
        let mut value = 0u8;
        for (i, key) in keys.iter().take(SMALL_PLAN).enumerate() {
            hot.sym[i] = key.sym;
            hot.id[i] = key.id;
            let place = match key.attr {
                AttrKey::AttemptNumber => RepeatPlace::Attempt,
                AttrKey::Extra(_) => RepeatPlace::Extra,
                _ => {
                    value += 1;
                    RepeatPlace::Value(value - 1)
                }
            };
            hot.repeat[i] = (place, key.filtered);
        }
        hot
    }
}

/// What the plan is made from: the allowlist and the filter decisions.
#[derive(Clone, Debug, Default, PartialEq)]
struct Inputs {
    allowlist: Vec<Arc<str>>,
    /// Payload key name → filtered, as the Ruby layer decided.
    decisions: HashMap<Box<str>, bool>,
    values: Arc<ValueFilter>,
}

impl ReadPlan {
    /// Interns Symbols: call with the GVL and no lock held.
    fn build(inputs: &Inputs) -> ReadPlan {
        let decided =
            |name: &str, default: bool| inputs.decisions.get(name).copied().unwrap_or(default);
        let mut keys = Vec::with_capacity(AttrKey::PAYLOAD_KEYS.len() + inputs.allowlist.len());
        for name in AttrKey::PAYLOAD_KEYS {
            let Some(attr) = AttrKey::from_payload_key(name.as_bytes()) else {
                continue;
            };
            if matches!(attr, AttrKey::TaskId | AttrKey::StepId) {
                continue;
            }
            // Known keys are exported unless a filter matches them.
            keys.push(PlanKey::new(name, attr, decided(name, false)));
        }
        for name in &inputs.allowlist {
            // Known keys are read anyway (`execution_duration` is measured).
            if AttrKey::from_payload_key(name.as_bytes()).is_some() {
                continue;
            }
            // An allowlisted key no decision was made for is filtered until
            // one is (never exported by mistake).
            keys.push(PlanKey::new(
                name,
                AttrKey::Extra(name.clone()),
                decided(name, true),
            ));
        }
        let by_symbol = (keys.len() > SMALL_PLAN).then(|| {
            keys.iter()
                .enumerate()
                .filter(|(_, k)| k.sym != QUNDEF)
                .map(|(i, k)| (k.sym, i))
                .collect()
        });
        let task_id = PlanKey::new("task_id", AttrKey::TaskId, false);
        let step_id = PlanKey::new("step_id", AttrKey::StepId, false);
        let to_state = PlanKey::new("to_state", AttrKey::Extra(Arc::from("to_state")), false);
        let direct = keys.len() <= SMALL_PLAN
            && [&task_id, &step_id, &to_state]
                .into_iter()
                .chain(&keys)
                .all(|k| k.sym != QUNDEF);
        ReadPlan {
            task_id,
            step_id,
            to_state,
            hot: HotKeys::new(&keys),
            keys,
            by_symbol,
            values: inputs.values.clone(),
            direct,
        }
    }

    /// `keys[i].sym` for every key, in order.
    pub(crate) fn symbols(&self) -> &[VALUE] {
        &self.hot.sym[..self.hot.len]
    }

    /// For a repeat read (see `lifecycle_repeat`): each key's place, and
    /// whether it is filtered; `None` for a plan with more keys than a
    /// repeat compares.
    pub(crate) fn repeat_places(&self) -> Option<&[(RepeatPlace, bool)]> {
        (self.hot.len == self.keys.len()).then(|| &self.hot.repeat[..self.hot.len])
    }

    /// The index of the plan key a static Symbol is (a static Symbol can
    /// only be a key whose own Symbol is static).
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub(crate) fn index_of_static(&self, key: VALUE) -> Option<usize> {
        match &self.by_symbol {
            Some(map) => map.get(&key).copied(),
            None => self.symbols().iter().position(|&s| s == key),
        }
    }

    /// The index of the plan key whose Symbol has the ID `id`.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub(crate) fn index_of_id(&self, id: ID) -> Option<usize> {
        if self.hot.len == self.keys.len() {
            self.hot.id[..self.hot.len].iter().position(|&k| k == id)
        } else {
            self.keys.iter().position(|k| k.id == id)
        }
    }

    /// The names whose values are exported as `"[FILTERED]"`.
    pub fn filtered_names(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter(|k| k.filtered)
            .map(|k| k.name.to_string())
            .collect()
    }
}

struct Policy {
    inputs: Inputs,
    /// Every plan made so far, with its inputs (see the module docs).
    made: Vec<(Inputs, &'static ReadPlan)>,
}

static POLICY: ForkSafeMutex<Option<Policy>> = ForkSafeMutex::new(None);
/// The plan in force (null until the first [`update`]).
static PLAN: AtomicPtr<ReadPlan> = AtomicPtr::new(std::ptr::null_mut());
/// Bumped whenever the filters or the plan change; the nested-key
/// decisions cached per thread (see [`crate::lifecycle_values`]) compare it.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Builds the default plan and makes its lock fork-safe; called at load.
pub fn init() {
    POLICY.register();
    update(|_| {});
}

/// Changes the inputs and puts the new plan in force (the same plan when
/// the inputs did not change). Runs with the GVL, so callers never
/// interleave; Symbols are interned outside the lock.
fn update(change: impl FnOnce(&mut Inputs)) {
    let mut inputs = POLICY
        .lock()
        .as_ref()
        .map_or_else(Inputs::default, |p| p.inputs.clone());
    change(&mut inputs);
    let known = POLICY.lock().as_ref().and_then(|p| {
        let found = p.made.iter().find(|(was, _)| *was == inputs);
        found.map(|(_, plan)| *plan)
    });
    let plan: &'static ReadPlan = match known {
        Some(plan) => plan,
        // Built with no lock held (it interns Symbols); never freed: see
        // the module documentation.
        None => Box::leak(Box::new(ReadPlan::build(&inputs))),
    };
    let mut policy = POLICY.lock();
    let mut made = policy
        .as_mut()
        .map(|p| std::mem::take(&mut p.made))
        .unwrap_or_default();
    if known.is_none() {
        made.push((inputs.clone(), plan));
    }
    let old = policy.replace(Policy { inputs, made });
    drop(policy);
    PLAN.store(plan as *const ReadPlan as *mut ReadPlan, Ordering::Release);
    GENERATION.fetch_add(1, Ordering::AcqRel);
    drop(old);
}

/// How many plans the process has made (for specs: one per distinct set of
/// inputs).
pub fn plans_made() -> usize {
    POLICY.lock().as_ref().map_or(0, |p| p.made.len())
}

/// The allowlist in force (`lifecycle_attributes`).
pub fn allowlist() -> Vec<String> {
    POLICY
        .lock()
        .as_ref()
        .map(|p| p.inputs.allowlist.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default()
}

/// Puts an allowlist in force (names deduplicated, order kept).
pub fn set_allowlist(names: Vec<String>) {
    update(|inputs| {
        let mut list: Vec<Arc<str>> = Vec::with_capacity(names.len());
        for name in names {
            if !list.iter().any(|n| **n == *name) {
                list.push(Arc::from(name));
            }
        }
        inputs.allowlist = list;
    });
}

/// Replaces every filter decision (payload key name → filtered).
pub fn set_decisions(decisions: Vec<(String, bool)>) {
    update(|inputs| {
        inputs.decisions = decisions
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v))
            .collect();
    });
}

/// Puts the filter for nested keys in force.
pub fn set_value_filter(filter: ValueFilter) {
    update(|inputs| inputs.values = Arc::new(filter));
}

/// The generation of the plan in force.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// The plan in force (made at load; made here if not): one atomic load.
#[inline]
pub fn plan() -> &'static ReadPlan {
    let p = PLAN.load(Ordering::Acquire);
    if p.is_null() {
        update(|_| {});
        return plan();
    }
    // SAFETY: PLAN only ever holds plans leaked by `update`, never freed.
    unsafe { &*p }
}

/// How the payload's keys are looked up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyMode {
    Symbols,
    Strings,
}
