//! One lifecycle event as the binding hands it over: its classified name, the
//! clock reading taken when it arrived, the task and step ids, and the few
//! payload values the trace model uses, already converted.
//!
//! Building an event for a known name and known keys allocates nothing but the
//! attribute vector and the string values: names are `&'static str`, known
//! keys are enum variants.

use std::fmt;
use std::sync::Arc;

use crate::support::clock::Stamp;

use super::attributes::{Attr, AttrKey, AttrValue, Text};

/// What an event does to the trace model (see the module documentation of
/// [`crate::model::lifecycle`] for the rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `task.initialize_requested`: ends an open run as pending (re-enqueued).
    TaskInitializeRequested,
    /// `task.start_requested`: opens a run, or merges into the open one.
    TaskStartRequested,
    /// `task.completed`: ends the run with status OK.
    TaskCompleted,
    /// `task.failed`: ends the run with status ERROR.
    TaskFailed,
    /// `task.cancelled`: ends the run with status ERROR "cancelled".
    TaskCancelled,
    /// `task.resolved_manually`: ends the run with status OK.
    TaskResolvedManually,
    /// `step.execution_requested`: opens an attempt, or merges into the open one.
    StepExecutionRequested,
    /// `step.before_handle`: opens an attempt if none is open; a span event on it.
    StepBeforeHandle,
    /// `observability.step.backoff`: a span event on the attempt, else the task.
    StepBackoff,
    /// `step.completed`: ends the attempt with status OK.
    StepCompleted,
    /// `step.failed`: ends the attempt with status ERROR.
    StepFailed,
    /// `step.cancelled`: ends the attempt with status ERROR "cancelled".
    StepCancelled,
    /// `step.resolved_manually`: ends the attempt with status OK.
    StepResolvedManually,
    /// `step.retry_requested`: a span event on the task span.
    StepRetryRequested,
    /// `task.before_transition`, `step.initialize_requested` (a step back to
    /// pending: a retry), `observability.task.enqueue`: a span event on the
    /// open run's task span. With no run open they belong to a run not yet
    /// opened (or to none, at creation) and are ignored, never attached to a
    /// finished run.
    Preamble,
    /// `workflow.*`, `observability.task.*` and any other name: a span event on
    /// the task span.
    TaskLevel,
}

impl EventKind {
    /// Events that end a step attempt.
    pub fn closes_attempt(self) -> bool {
        matches!(
            self,
            EventKind::StepCompleted
                | EventKind::StepFailed
                | EventKind::StepCancelled
                | EventKind::StepResolvedManually
        )
    }

    /// Events that end a task run (besides `task.initialize_requested`).
    pub fn closes_run(self) -> bool {
        matches!(
            self,
            EventKind::TaskCompleted
                | EventKind::TaskFailed
                | EventKind::TaskCancelled
                | EventKind::TaskResolvedManually
        )
    }
}

/// The static name and kind of a known event name.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn known(name: &[u8]) -> Option<(&'static str, EventKind)> {
    use EventKind::*;
    let hit = match name {
        b"task.initialize_requested" => ("task.initialize_requested", TaskInitializeRequested),
        b"task.start_requested" => ("task.start_requested", TaskStartRequested),
        b"task.completed" => ("task.completed", TaskCompleted),
        b"task.failed" => ("task.failed", TaskFailed),
        b"task.cancelled" => ("task.cancelled", TaskCancelled),
        b"task.resolved_manually" => ("task.resolved_manually", TaskResolvedManually),
        b"step.execution_requested" => ("step.execution_requested", StepExecutionRequested),
        b"step.before_handle" => ("step.before_handle", StepBeforeHandle),
        b"observability.step.backoff" => ("observability.step.backoff", StepBackoff),
        b"step.completed" => ("step.completed", StepCompleted),
        b"step.failed" => ("step.failed", StepFailed),
        b"step.cancelled" => ("step.cancelled", StepCancelled),
        b"step.resolved_manually" => ("step.resolved_manually", StepResolvedManually),
        b"step.retry_requested" => ("step.retry_requested", StepRetryRequested),
        b"task.before_transition" => ("task.before_transition", Preamble),
        b"step.initialize_requested" => ("step.initialize_requested", Preamble),
        b"observability.task.enqueue" => ("observability.task.enqueue", Preamble),
        // Task-level names a run publishes, kept static so they cost nothing.
        b"workflow.task_started" => ("workflow.task_started", TaskLevel),
        b"workflow.no_viable_steps" => ("workflow.no_viable_steps", TaskLevel),
        b"observability.task.finalize" => ("observability.task.finalize", TaskLevel),
        b"workflow.viable_steps_discovered" => ("workflow.viable_steps_discovered", TaskLevel),
        b"workflow.steps_execution_started" => ("workflow.steps_execution_started", TaskLevel),
        b"workflow.steps_execution_completed" => ("workflow.steps_execution_completed", TaskLevel),
        b"workflow.task_finalization_started" => ("workflow.task_finalization_started", TaskLevel),
        b"workflow.task_finalization_completed" => {
            ("workflow.task_finalization_completed", TaskLevel)
        }
        _ => return None,
    };
    Some(hit)
}

/// The event names the trace model needs to open, merge into and close its
/// spans (and a step's backoff): what the tracer subscribes to unless span
/// events for the rest (`workflow.*`, transitions, enqueueing) are asked for.
pub const SPAN_EVENT_NAMES: [&str; 13] = [
    "task.initialize_requested",
    "task.start_requested",
    "task.completed",
    "task.failed",
    "task.cancelled",
    "task.resolved_manually",
    "step.execution_requested",
    "observability.step.backoff",
    "step.completed",
    "step.failed",
    "step.cancelled",
    "step.resolved_manually",
    "step.retry_requested",
];

/// The other names the tracer knows by name: kept only as span events.
const OTHER_EVENT_NAMES: [&str; 12] = [
    "step.before_handle",
    "task.before_transition",
    "step.initialize_requested",
    "observability.task.enqueue",
    "observability.task.finalize",
    "workflow.task_started",
    "workflow.no_viable_steps",
    "workflow.viable_steps_discovered",
    "workflow.steps_execution_started",
    "workflow.steps_execution_completed",
    "workflow.task_finalization_started",
    "workflow.task_finalization_completed",
];

/// Every event name the tracer knows by name (the rest of `workflow.*` and
/// `observability.task.*` are task-level events all the same).
pub const KNOWN_EVENT_NAMES: [&str; 25] = joined(SPAN_EVENT_NAMES, OTHER_EVENT_NAMES);

/// `a` then `b`, as one array (`C` must be `A + B`).
const fn joined<const A: usize, const B: usize, const C: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; C] {
    assert!(A + B == C);
    let mut out = [""; C];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < B {
        out[A + j] = b[j];
        j += 1;
    }
    out
}

/// The state a state-machine transition event moves to (its `to_state`),
/// as far as the model needs it: a task run opens at the transition into
/// `in_progress`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ToState {
    /// No `to_state` in the payload (not the state machine's copy).
    #[default]
    Absent,
    InProgress,
    Other,
}

impl ToState {
    /// The state named by a `to_state` value's text.
    pub fn from_bytes(name: &[u8]) -> ToState {
        if name == b"in_progress" {
            ToState::InProgress
        } else {
            ToState::Other
        }
    }
}

/// The kind of an event name. `workflow.*`, `observability.task.*` and unknown
/// names are [`EventKind::TaskLevel`].
pub fn classify(name: &[u8]) -> EventKind {
    known(name).map_or(EventKind::TaskLevel, |(_, kind)| kind)
}

/// An event name with its kind. Known names are static; any other name is
/// copied once (a binding that sees the same names over and over can keep the
/// `EventName` it built and clone it: a reference count, no copy).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventName {
    kind: EventKind,
    text: Text,
}

impl EventName {
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn new(name: &[u8]) -> EventName {
        match known(name) {
            Some((text, kind)) => EventName {
                kind,
                text: Text::Static(text),
            },
            None => EventName {
                kind: EventKind::TaskLevel,
                text: Text::from_bytes(name),
            },
        }
    }

    /// A name the tracer makes up itself (`task.pending`).
    pub(crate) const fn synthetic(text: &'static str) -> EventName {
        EventName {
            kind: EventKind::TaskLevel,
            text: Text::Static(text),
        }
    }

    pub fn kind(&self) -> EventKind {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    pub fn text(&self) -> &Text {
        &self.text
    }
}

/// A task or step id. Tasker sends ids as Integers or Strings; a String that is
/// a plain decimal integer (`"42"`, no sign, no leading zero, fits in an i64)
/// becomes [`Id::Int`], so `42` and `"42"` are the same id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Id {
    Int(i64),
    Text(Arc<str>),
    /// A String id that could not be kept as it is (see
    /// [`Id::from_bytes`]): never the same id as a [`Id::Text`], even one
    /// that reads the same.
    Tagged(Arc<str>),
}

/// See [`Id::from_bytes`].
fn tagged_id(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    // Each invalid byte becomes U+FFFD (3 bytes): the readable start is
    // cut again after that, at a character boundary.
    let room = MAX_ID_BYTES - 32;
    let head = &bytes[..bytes.len().min(room)];
    let mut text = String::from_utf8_lossy(head).into_owned();
    let mut cut = head.len() < bytes.len();
    if text.len() > room {
        let mut end = room;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        cut = true;
    }
    if cut {
        text.push('…');
    }
    text.push_str(&format!("#{:016x}", hasher.finish()));
    text
}

/// The value of `bytes` if they are a canonical non-negative decimal integer.
fn canonical_int(bytes: &[u8]) -> Option<i64> {
    match bytes {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        _ => bytes.iter().try_fold(0_i64, |n, &b| {
            if b.is_ascii_digit() {
                n.checked_mul(10)?.checked_add(i64::from(b - b'0'))
            } else {
                None
            }
        }),
    }
}

/// Longest String id kept as it is, in bytes (see [`Id::from_bytes`]).
pub const MAX_ID_BYTES: usize = super::MAX_TEXT_BYTES;

impl Id {
    /// An id from a String's bytes. One that is not valid UTF-8, or is
    /// longer than [`MAX_ID_BYTES`], is kept as its readable start (invalid
    /// bytes as U+FFFD, cut with `…`) followed by `#` and 16 hexadecimal
    /// digits of a hash of all its bytes, so that two different ids never
    /// become one.
    pub fn from_bytes(bytes: &[u8]) -> Id {
        if let Some(n) = canonical_int(bytes) {
            return Id::Int(n);
        }
        match std::str::from_utf8(bytes) {
            Ok(text) if text.len() <= MAX_ID_BYTES => Id::Text(Arc::from(text)),
            _ => Id::Tagged(Arc::from(tagged_id(bytes))),
        }
    }

    /// The id as an attribute value: Integer ids stay Integers.
    pub fn to_value(&self) -> AttrValue {
        match self {
            Id::Int(n) => AttrValue::Int(*n),
            Id::Text(s) | Id::Tagged(s) => AttrValue::Str(Text::Shared(s.clone())),
        }
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Id {
        Id::Int(n)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Id {
        Id::from_bytes(s.as_bytes())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(n) => write!(f, "{n}"),
            Id::Text(s) | Id::Tagged(s) => f.write_str(s),
        }
    }
}

/// One published event, owned and converted, ready for [`crate::model::lifecycle::Tracer::record`].
///
/// `task_id` and `step_id` are the identity: the tracer writes the `task_id`
/// and `step_id` attributes itself, and ignores those two keys in `attrs`.
/// Keys in `attrs` are expected once each.
#[derive(Clone, Debug)]
pub struct LifecycleEvent {
    pub name: EventName,
    /// When the event arrived (one clock reading in the binding).
    pub at: Stamp,
    pub task_id: Option<Id>,
    pub step_id: Option<Id>,
    /// The payload's `to_state` (transition events of the state machine).
    pub to_state: ToState,
    pub attrs: Vec<Attr>,
    /// The span current in the publishing thread (an OpenTelemetry span),
    /// given only on the connected path: a run this event opens becomes its
    /// child.
    pub parent: Option<ParentSpan>,
}

/// A span outside the tracer that a run can be the child of: the current
/// OpenTelemetry span of the thread that opens the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParentSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent's sampled flag (trace flags bit 0).
    pub sampled: bool,
}

impl ParentSpan {
    /// A parent with these ids, or `None` when either is all zeros (not a
    /// valid span context).
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> Option<ParentSpan> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(ParentSpan {
            trace_id,
            span_id,
            sampled,
        })
    }
}

impl LifecycleEvent {
    pub fn new(name: EventName, at: Stamp) -> LifecycleEvent {
        LifecycleEvent {
            name,
            at,
            task_id: None,
            step_id: None,
            to_state: ToState::Absent,
            attrs: Vec::new(),
            parent: None,
        }
    }

    /// An event named by raw bytes (classified here).
    pub fn named(name: &[u8], at: Stamp) -> LifecycleEvent {
        LifecycleEvent::new(EventName::new(name), at)
    }

    pub fn kind(&self) -> EventKind {
        self.name.kind()
    }

    pub fn with_task(mut self, id: impl Into<Id>) -> LifecycleEvent {
        self.task_id = Some(id.into());
        self
    }

    pub fn with_parent(mut self, parent: Option<ParentSpan>) -> LifecycleEvent {
        self.parent = parent;
        self
    }

    pub fn with_step(mut self, id: impl Into<Id>) -> LifecycleEvent {
        self.step_id = Some(id.into());
        self
    }

    pub fn with_to_state(mut self, to: ToState) -> LifecycleEvent {
        self.to_state = to;
        self
    }

    pub fn with_attr(mut self, key: AttrKey, value: impl Into<AttrValue>) -> LifecycleEvent {
        self.attrs.push((key, value.into()));
        self
    }

    /// Done before the tracer's lock is taken: drops the identity keys and
    /// `execution_duration` (the tracer measures it), lets an
    /// `error_class` shadow an `exception_class` of the same event, and makes
    /// room for the identity attributes the tracer may add (see
    /// [`LifecycleEvent::identity_room`]).
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub(crate) fn prepare(&mut self) {
        let mut error_class = false;
        let mut identity = false;
        let mut exception_class = false;
        for (k, _) in &self.attrs {
            match k {
                AttrKey::ErrorClass => error_class = true,
                AttrKey::ExceptionClass => exception_class = true,
                AttrKey::TaskId | AttrKey::StepId | AttrKey::ExecutionDuration => identity = true,
                _ => {}
            }
        }
        if identity || (error_class && exception_class) {
            self.attrs.retain(|(k, _)| {
                let identity = matches!(
                    k,
                    AttrKey::TaskId | AttrKey::StepId | AttrKey::ExecutionDuration
                );
                let shadowed = error_class && *k == AttrKey::ExceptionClass;
                !identity && !shadowed
            });
        }
        self.attrs.reserve(self.identity_room());
    }

    /// How many attributes the tracer may add to this event's own when it
    /// becomes a span or a span event (`task_id`, `step_id`). A binding that
    /// builds `attrs` with this much spare capacity saves a reallocation.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn identity_room(&self) -> usize {
        match self.kind() {
            EventKind::TaskStartRequested => 1,
            EventKind::StepExecutionRequested | EventKind::StepBeforeHandle => 2,
            // An attempt's close adds the measured duration.
            EventKind::StepCompleted
            | EventKind::StepFailed
            | EventKind::StepCancelled
            | EventKind::StepResolvedManually => 1,
            // On the task span an event names its step.
            EventKind::StepBackoff
            | EventKind::StepRetryRequested
            | EventKind::Preamble
            | EventKind::TaskLevel => usize::from(self.step_id.is_some()),
            // Task closing events add nothing (an orphaned closing step
            // event, rare, grows its vector under the lock).
            _ => 0,
        }
    }

    /// An event with room for `attrs` attributes plus the identity ones.
    pub fn with_capacity(name: EventName, at: Stamp, attrs: usize) -> LifecycleEvent {
        let mut ev = LifecycleEvent::new(name, at);
        ev.attrs = Vec::with_capacity(attrs + 2);
        ev
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn ids_that_cannot_be_kept_as_they_are_stay_apart() {
        let a = Id::from_bytes(b"task-\xFF");
        let b = Id::from_bytes(b"task-\xFE");
        assert_ne!(a, b);
        assert!(a.to_string().starts_with("task-\u{FFFD}#"), "{a}");
        assert_eq!(a, Id::from_bytes(b"task-\xFF"));
        let long_a = [b"x".repeat(MAX_ID_BYTES), b"a".to_vec()].concat();
        let long_b = [b"x".repeat(MAX_ID_BYTES), b"b".to_vec()].concat();
        let (la, lb) = (Id::from_bytes(&long_a), Id::from_bytes(&long_b));
        assert_ne!(la, lb);
        assert!(la.to_string().len() <= MAX_ID_BYTES);
        // Invalid bytes grow when shown (U+FFFD): still within the limit.
        let invalid = Id::from_bytes(&b"\xFF".repeat(MAX_ID_BYTES));
        assert!(
            invalid.to_string().len() <= MAX_ID_BYTES,
            "{}",
            invalid.to_string().len()
        );
        // A valid id that reads as another's tagged form is another id.
        assert_ne!(Id::from_bytes(a.to_string().as_bytes()), a);
        assert_eq!(Id::from_bytes(b"order-7"), Id::Text(Arc::from("order-7")));
        assert_eq!(Id::from_bytes(b"42"), Id::Int(42));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_known_name_and_keeps_it_static() {
        for (name, kind) in [
            ("task.start_requested", EventKind::TaskStartRequested),
            (
                "task.initialize_requested",
                EventKind::TaskInitializeRequested,
            ),
            ("step.before_handle", EventKind::StepBeforeHandle),
            ("observability.step.backoff", EventKind::StepBackoff),
            ("step.resolved_manually", EventKind::StepResolvedManually),
            ("workflow.viable_steps_discovered", EventKind::TaskLevel),
        ] {
            assert_eq!(classify(name.as_bytes()), kind);
            let n = EventName::new(name.as_bytes());
            assert_eq!(n.kind(), kind);
            assert_eq!(n.as_str(), name);
            assert!(matches!(n.text(), Text::Static(_)));
        }
        let other = EventName::new(b"workflow.task_reenqueue_delayed");
        assert_eq!(other.kind(), EventKind::TaskLevel);
        assert_eq!(other.as_str(), "workflow.task_reenqueue_delayed");
        assert_eq!(classify(b"task.started"), EventKind::TaskLevel);
        assert_eq!(EventName::new(b"x\xff").as_str(), "x\u{fffd}");
    }

    #[test]
    fn the_known_names_are_the_static_ones() {
        for name in KNOWN_EVENT_NAMES {
            assert!(known(name.as_bytes()).is_some(), "{name}");
        }
        let distinct: std::collections::HashSet<_> = KNOWN_EVENT_NAMES.iter().collect();
        assert_eq!(distinct.len(), KNOWN_EVENT_NAMES.len());
    }

    #[test]
    fn ids_from_strings_match_integer_ids() {
        assert_eq!(Id::from("42"), Id::Int(42));
        assert_eq!(Id::from("0"), Id::Int(0));
        assert_eq!(Id::from("042"), Id::Text(Arc::from("042")));
        assert_eq!(Id::from("-1"), Id::Text(Arc::from("-1")));
        assert_eq!(Id::from("+1"), Id::Text(Arc::from("+1")));
        assert_eq!(Id::from(""), Id::Text(Arc::from("")));
        assert_eq!(Id::from("9223372036854775807"), Id::Int(i64::MAX));
        assert!(matches!(Id::from("9223372036854775808"), Id::Text(_)));
        assert_eq!(Id::from("abc").to_string(), "abc");
        assert_eq!(Id::Int(7).to_value(), AttrValue::Int(7));
    }

    #[test]
    fn prepare_drops_identity_keys_and_a_shadowed_exception_class() {
        let mut ev = LifecycleEvent::named(b"step.failed", Stamp::now())
            .with_attr(AttrKey::TaskId, 1)
            .with_attr(AttrKey::StepId, 2)
            .with_attr(AttrKey::ExceptionClass, "StandardError")
            .with_attr(AttrKey::ErrorClass, "Timeout")
            .with_attr(AttrKey::Error, "boom");
        ev.prepare();
        let keys: Vec<&AttrKey> = ev.attrs.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&AttrKey::ErrorClass, &AttrKey::Error]);
        // Room for the measured execution_duration.
        assert_eq!(ev.identity_room(), 1);
        let mut ev = LifecycleEvent::named(b"step.execution_requested", Stamp::now())
            .with_attr(AttrKey::StepName, "a");
        ev.prepare();
        assert_eq!(ev.identity_room(), 2);
        assert!(ev.attrs.capacity() >= 3);
        let with_step = LifecycleEvent::named(b"workflow.x", Stamp::now()).with_step(1);
        assert_eq!(with_step.identity_room(), 1);
    }
}
