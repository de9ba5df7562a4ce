//! One run as the tracer holds it while it is open or waiting for export:
//! the root span, the attempts in start order, and every span event of the
//! run in arrival order (so the oldest entry is always at a queue's front),
//! with the attribute merge rules and the per-run bound.

use std::collections::VecDeque;

use crate::support::clock::Stamp;

use super::run::{
    Link, Run, RunEnd, Span, SpanEvent, SpanStatus, StatusCode, STEP_SPAN_NAME, TASK_SPAN_NAME,
};
use crate::input::lifecycle::attributes::{Attr, AttrKey, AttrValue, Text};
use crate::input::lifecycle::event::{EventKind, EventName, Id, ParentSpan};
use crate::model::sampling::RunFacts;

/// The later of two stamps on the monotonic clock (an event stamped just
/// before another thread's may reach the lock after it).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn not_before(start: Stamp, at: Stamp) -> Stamp {
    if at.mono_ns < start.mono_ns {
        start
    } else {
        at
    }
}

/// Seconds from `start` to `end` on the monotonic clock.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
fn seconds(start: Stamp, end: Stamp) -> f64 {
    end.mono_ns.saturating_sub(start.mono_ns) as f64 / 1e9
}

/// How a merged value combines with the one already stored.
enum Rule {
    Replace,
    Max,
    KeepFirst,
}

/// Merges `incoming` into `into`, leaving in `incoming` only what is to be
/// dropped (replaced old values and placeholders), so the caller can free it
/// after releasing the lock. Rules: `attempt_number` and `execution_duration`
/// keep the highest number; an `exception_class` never replaces one already
/// stored, an `error_class` always does (stored as `exception_class`); any
/// other key takes the newer value.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub(crate) fn merge_attrs(into: &mut Vec<Attr>, incoming: &mut [Attr]) {
    const EXCEPTION_CLASS: AttrKey = AttrKey::ExceptionClass;
    for (key, value) in incoming.iter_mut() {
        let rule = match key {
            AttrKey::AttemptNumber => Rule::Max,
            AttrKey::ExceptionClass => Rule::KeepFirst,
            // The tracer writes these itself.
            AttrKey::TaskId | AttrKey::StepId | AttrKey::ExecutionDuration => continue,
            _ => Rule::Replace,
        };
        let renamed = *key == AttrKey::ErrorClass;
        let target = if renamed { &EXCEPTION_CLASS } else { &*key };
        match into.iter_mut().find(|(k, _)| k == target) {
            Some((_, old)) => {
                let take = match rule {
                    Rule::Replace => true,
                    Rule::KeepFirst => false,
                    Rule::Max => match (value.as_f64(), old.as_f64()) {
                        (Some(new), Some(was)) => new > was,
                        _ => true,
                    },
                };
                if take {
                    std::mem::swap(old, value);
                }
            }
            None => {
                // Moved out without touching a reference count; placeholders
                // (no heap) are left behind.
                let key = if renamed {
                    AttrKey::ExceptionClass
                } else {
                    std::mem::replace(key, AttrKey::TaskId)
                };
                into.push((key, std::mem::replace(value, AttrValue::Bool(false))));
            }
        }
    }
}

/// Stored attributes never carry the input-only `error_class` key.
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub(crate) fn rename_error_class(attrs: &mut [Attr]) {
    for (key, _) in attrs.iter_mut() {
        if *key == AttrKey::ErrorClass {
            *key = AttrKey::ExceptionClass;
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct LiveSpan {
    pub span_id: [u8; 8],
    pub start: Stamp,
    pub end: Option<Stamp>,
    pub status: SpanStatus,
    pub attrs: Vec<Attr>,
}

impl LiveSpan {
    fn new(span_id: [u8; 8], start: Stamp, attrs: Vec<Attr>) -> LiveSpan {
        LiveSpan {
            span_id,
            start,
            end: None,
            status: SpanStatus::UNSET,
            attrs,
        }
    }

    pub fn is_open(&self) -> bool {
        self.end.is_none()
    }

    /// Ends the span (once) at `at`, never before it started.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn end_at(&mut self, at: Stamp) {
        if self.end.is_none() {
            self.end = Some(not_before(self.start, at));
        }
    }

    /// Moves the end (of an ended span) to `at` if that is later: a run's
    /// root ends at the run's last event.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn extend_to(&mut self, at: Stamp) {
        if let Some(end) = self.end {
            if at.mono_ns > end.mono_ns {
                self.end = Some(at);
            }
        }
    }

    /// Ends the attempt span at `at` and records its own duration in seconds
    /// as `execution_duration` (Tasker's figure comes from whole-second
    /// times; it is never read).
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn end_measured(&mut self, at: Stamp) {
        self.end_at(at);
        if let Some(end) = self.end {
            let d = AttrValue::Float(seconds(self.start, end));
            match self
                .attrs
                .iter_mut()
                .find(|(k, _)| *k == AttrKey::ExecutionDuration)
            {
                Some((_, v)) => *v = d,
                None => self.attrs.push((AttrKey::ExecutionDuration, d)),
            }
        }
    }

    /// The `error` attribute as text, for an error status's message.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn error_message(&self) -> Option<Text> {
        self.attrs
            .iter()
            .find(|(k, _)| *k == AttrKey::Error)
            .and_then(|(_, v)| v.as_text().cloned())
    }
}

/// The status a closing event gives (an error's message comes from the span's
/// `error` attribute; a cancellation's is "cancelled").
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub(crate) fn closing_status(kind: EventKind, span: &LiveSpan) -> SpanStatus {
    match kind {
        EventKind::TaskCompleted
        | EventKind::TaskResolvedManually
        | EventKind::StepCompleted
        | EventKind::StepResolvedManually => SpanStatus::OK,
        EventKind::TaskFailed | EventKind::StepFailed => SpanStatus::error(span.error_message()),
        EventKind::TaskCancelled | EventKind::StepCancelled => {
            SpanStatus::error(Some(Text::Static("cancelled")))
        }
        _ => SpanStatus::UNSET,
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    /// Position in the run's entry order (shared with span events).
    pub order: u64,
    pub step: Id,
    /// The event that ended the attempt.
    pub closed_by: Option<EventKind>,
    pub span: LiveSpan,
}

impl Attempt {
    /// Whether its `attempt_number` is above 1 (a retry).
    pub fn is_retry(&self) -> bool {
        self.span
            .attrs
            .iter()
            .any(|(k, v)| *k == AttrKey::AttemptNumber && v.as_f64().is_some_and(|n| n > 1.0))
    }
}

/// Which span a span event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Root,
    /// The attempt with this order.
    Attempt(u64),
}

#[derive(Clone, Debug)]
struct Entry {
    order: u64,
    target: Target,
    event: SpanEvent,
}

/// Whether an entry fitted, and how many older entries were evicted for it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Room {
    pub fits: bool,
    pub evicted: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct LiveRun {
    /// `None` for a task whose creation failed.
    pub task: Option<Id>,
    /// The root span's name.
    pub root_name: &'static str,
    pub trace_id: [u8; 16],
    pub link: Option<Link>,
    /// The root's parent: the OpenTelemetry span current when the run opened.
    pub parent: Option<[u8; 8]>,
    pub root: LiveSpan,
    pub end: RunEnd,
    /// Monotonic nanoseconds of the latest event applied to the run.
    pub last_active: u64,
    /// The head sampling decision, made once when the run opened (see
    /// `State::sampling_decision`).
    pub sampled: bool,
    /// Whether the run records its spans: false only for a run the head
    /// left out while no keep rule could bring it back and without an
    /// OpenTelemetry parent (it records its end and nothing else).
    pub records: bool,
    /// Whether an attempt with status ERROR was evicted to make room (see
    /// `evict_oldest`): the run had a failure, which the keep rules still see.
    evicted_error: bool,
    /// Likewise, whether an evicted attempt was a retry (an
    /// `attempt_number` above 1, or a step with another attempt held).
    evicted_retry: bool,
    attempts: VecDeque<Attempt>,
    events: VecDeque<Entry>,
    next_order: u64,
}

impl LiveRun {
    /// A run whose root span starts at `at` with `attrs` (already including
    /// `task_id`).
    pub fn new(
        task: Option<Id>,
        trace_id: [u8; 16],
        root_span_id: [u8; 8],
        at: Stamp,
        attrs: Vec<Attr>,
        link: Option<Link>,
    ) -> LiveRun {
        LiveRun {
            task,
            root_name: TASK_SPAN_NAME,
            trace_id,
            link,
            parent: None,
            root: LiveSpan::new(root_span_id, at, attrs),
            end: RunEnd::Open,
            last_active: at.mono_ns,
            sampled: true,
            records: true,
            evicted_error: false,
            evicted_retry: false,
            attempts: VecDeque::new(),
            events: VecDeque::new(),
            next_order: 0,
        }
    }

    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn touch(&mut self, at: Stamp) {
        self.last_active = self.last_active.max(at.mono_ns);
    }

    /// The parent a run opening under `p` takes when this run is dropped
    /// for it (evicted by its opening event): when `p` is one of this run's
    /// spans (its context was still current in the opening thread), the
    /// span that was current when this run opened, or none; an ended span
    /// is never a new run's parent. Otherwise `p` itself.
    pub fn parent_in_place_of(&self, p: ParentSpan) -> Option<ParentSpan> {
        let own = p.trace_id == self.trace_id
            && (p.span_id == self.root.span_id
                || self.attempts.iter().any(|a| a.span.span_id == p.span_id));
        if !own {
            return Some(p);
        }
        // Under parent-based sampling (the only samplers that read the
        // parent's flag) this run's decision was its parent's flag.
        self.parent
            .and_then(|span_id| ParentSpan::new(self.trace_id, span_id, self.sampled))
    }

    /// Spans held: the root and the attempts.
    pub fn spans(&self) -> usize {
        1 + self.attempts.len()
    }

    /// What the sampling keep rules look at (attempts evicted to make room
    /// included): an ERROR status on any span,
    /// the root's duration (to its end, or to the run's latest event while
    /// open) and whether a step had more than one attempt (an
    /// `attempt_number` above 1, or two attempts of one step in the run).
    pub fn facts(&self) -> RunFacts {
        let is_error = |s: &LiveSpan| s.status.code == StatusCode::Error;
        let end = self.root.end.map_or(self.last_active, |e| e.mono_ns);
        let later_attempt = self.attempts.iter().any(|a| a.is_retry());
        let mut steps = std::collections::HashSet::with_capacity(self.attempts.len());
        let retried = self.evicted_retry
            || later_attempt
            || !self.attempts.iter().all(|a| steps.insert(&a.step));
        RunFacts {
            any_error: self.evicted_error
                || is_error(&self.root)
                || self.attempts.iter().any(|a| is_error(&a.span)),
            root_ns: end.saturating_sub(self.root.start.mono_ns),
            retried,
        }
    }

    /// Spans and span events held, the root included.
    pub fn entries(&self) -> usize {
        1 + self.attempts.len() + self.events.len()
    }

    /// The span id of the open attempt of `step`, if any.
    pub fn open_attempt_id(&self, step: &Id) -> Option<[u8; 8]> {
        self.open_attempt(step)
            .map(|i| self.attempts[i].span.span_id)
    }

    /// The span id of the latest attempt of `step`, if any.
    pub fn latest_attempt_id(&self, step: &Id) -> Option<[u8; 8]> {
        self.latest_attempt(step)
            .map(|i| self.attempts[i].span.span_id)
    }

    /// The index of the latest attempt of `step`.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn latest_attempt(&self, step: &Id) -> Option<usize> {
        self.attempts.iter().rposition(|a| a.step == *step)
    }

    /// Whether an attempt is still open (its closing event not in yet).
    pub fn any_attempt_open(&self) -> bool {
        self.attempts.iter().any(|a| a.span.is_open())
    }

    /// The index of the open attempt of `step`, if any.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn open_attempt(&self, step: &Id) -> Option<usize> {
        self.latest_attempt(step)
            .filter(|&i| self.attempts[i].span.is_open())
    }

    pub fn attempt_mut(&mut self, index: usize) -> Option<&mut Attempt> {
        self.attempts.get_mut(index)
    }

    /// Evicts the oldest entry that may go: a span event, or a closed attempt
    /// with its span events. Open attempts and the root stay. Returns how many
    /// entries went, or `None` when nothing could.
    fn evict_oldest(&mut self) -> Option<u64> {
        let event = self.events.front().map(|e| e.order);
        let closed = self.attempts.iter().position(|a| !a.span.is_open());
        let attempt_first = match (event, closed) {
            (Some(e), Some(i)) => self.attempts[i].order < e,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => return None,
        };
        if !attempt_first {
            self.events.pop_front();
            return Some(1);
        }
        let gone = closed.and_then(|i| self.attempts.remove(i))?;
        self.evicted_error |= gone.span.status.code == StatusCode::Error;
        self.evicted_retry |= gone.is_retry() || self.attempts.iter().any(|a| a.step == gone.step);
        let before = self.events.len();
        let target = Target::Attempt(gone.order);
        self.events.retain(|e| e.target != target);
        Some(1 + (before - self.events.len()) as u64)
    }

    /// Makes room for one more entry under `max` (spans and span events).
    /// When even evicting everything that may go would not make room, nothing
    /// is evicted.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn make_room(&mut self, max: usize) -> Room {
        let mut room = Room::default();
        if self.entries() < max {
            room.fits = true;
            return room;
        }
        let open = self.attempts.iter().filter(|a| a.span.is_open()).count();
        if 1 + open >= max {
            return room;
        }
        while self.entries() >= max {
            match self.evict_oldest() {
                Some(n) => room.evicted += n,
                None => return room,
            }
        }
        room.fits = true;
        room
    }

    /// Opens an attempt of `step` starting at `at`; `attrs` already carry the
    /// identity. Returns its index when it fitted.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn push_attempt(
        &mut self,
        step: Id,
        span_id: [u8; 8],
        at: Stamp,
        attrs: Vec<Attr>,
        max: usize,
    ) -> (Option<usize>, Room) {
        let room = self.make_room(max);
        if !room.fits {
            return (None, room);
        }
        let order = self.next_order;
        self.next_order += 1;
        self.attempts.push_back(Attempt {
            order,
            step,
            closed_by: None,
            span: LiveSpan::new(span_id, at, attrs),
        });
        (Some(self.attempts.len() - 1), room)
    }

    /// The target naming the attempt at `index`.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn attempt_target(&self, index: usize) -> Target {
        self.attempts
            .get(index)
            .map_or(Target::Root, |a| Target::Attempt(a.order))
    }

    /// When `target` started (the root's start for an unknown attempt).
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    fn start_of(&self, target: Target) -> Stamp {
        match target {
            Target::Root => self.root.start,
            Target::Attempt(order) => self
                .attempts
                .iter()
                .find(|a| a.order == order)
                .map_or(self.root.start, |a| a.span.start),
        }
    }

    /// Adds a span event to `target`, never before the span started (an
    /// event stamped in another thread just before may take the lock after).
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn push_event(
        &mut self,
        target: Target,
        at: Stamp,
        name: EventName,
        mut attributes: Vec<Attr>,
        max: usize,
    ) -> Room {
        let room = self.make_room(max);
        if room.fits {
            let at = not_before(self.start_of(target), at);
            rename_error_class(&mut attributes);
            let order = self.next_order;
            self.next_order += 1;
            self.events.push_back(Entry {
                order,
                target,
                event: SpanEvent {
                    at,
                    name,
                    attributes,
                },
            });
        }
        room
    }

    /// The run as exported data. Attempts still open in a run that has ended
    /// end with the root (status UNSET); in an open run they stay open.
    pub fn into_run(self) -> Run {
        let root_id = self.root.span_id;
        let root_end = self.root.end;
        let mut spans = Vec::with_capacity(1 + self.attempts.len());
        spans.push(Span {
            span_id: root_id,
            parent_span_id: self.parent,
            name: self.root_name,
            start: self.root.start,
            end: root_end,
            status: self.root.status,
            attributes: self.root.attrs,
            events: Vec::new(),
            links: self.link.into_iter().collect(),
        });
        let orders: Vec<u64> = self.attempts.iter().map(|a| a.order).collect();
        for attempt in self.attempts {
            let span = attempt.span;
            let end = span.end.or(root_end.map(|e| not_before(span.start, e)));
            spans.push(Span {
                span_id: span.span_id,
                parent_span_id: Some(root_id),
                name: STEP_SPAN_NAME,
                start: span.start,
                end,
                status: span.status,
                attributes: span.attrs,
                events: Vec::new(),
                links: Vec::new(),
            });
        }
        for entry in self.events {
            let index = match entry.target {
                Target::Root => Some(0),
                // Attempts are in order, so their orders are sorted.
                Target::Attempt(order) => orders.binary_search(&order).ok().map(|i| i + 1),
            };
            if let Some(span) = index.and_then(|i| spans.get_mut(i)) {
                span.events.push(entry.event);
            }
        }
        Run {
            task_id: self.task,
            trace_id: self.trace_id,
            end: self.end,
            spans,
            sampled: self.sampled,
            printed: false,
        }
    }

    /// A copy as exported data (for snapshots).
    pub fn to_run(&self) -> Run {
        self.clone().into_run()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn at(ns: u64) -> Stamp {
        Stamp {
            wall_ns: ns as i64,
            mono_ns: ns,
        }
    }

    fn run() -> LiveRun {
        LiveRun::new(Some(Id::Int(1)), [1; 16], [2; 8], at(10), Vec::new(), None)
    }

    #[test]
    fn merge_rules() {
        let mut into: Vec<Attr> = vec![
            (AttrKey::AttemptNumber, AttrValue::Int(2)),
            (AttrKey::ExecutionDuration, AttrValue::Float(0.25)),
            (AttrKey::ExceptionClass, "StandardError".into()),
        ];
        let mut incoming: Vec<Attr> = vec![
            (AttrKey::AttemptNumber, AttrValue::Int(0)),
            (AttrKey::ExecutionDuration, AttrValue::Float(1.5)),
            (AttrKey::ExceptionClass, "Other".into()),
            (AttrKey::Error, "boom".into()),
            (AttrKey::TaskId, AttrValue::Int(9)),
        ];
        merge_attrs(&mut into, &mut incoming);
        let get = |k: AttrKey| into.iter().find(|(x, _)| *x == k).map(|(_, v)| v.clone());
        assert_eq!(get(AttrKey::AttemptNumber), Some(AttrValue::Int(2)));
        // The tracer's own measurement stays.
        assert_eq!(
            get(AttrKey::ExecutionDuration),
            Some(AttrValue::Float(0.25))
        );
        assert_eq!(get(AttrKey::ExceptionClass), Some("StandardError".into()));
        assert_eq!(get(AttrKey::Error), Some("boom".into()));
        assert_eq!(get(AttrKey::TaskId), None);
        let mut incoming: Vec<Attr> = vec![(AttrKey::ErrorClass, "Timeout".into())];
        merge_attrs(&mut into, &mut incoming);
        assert_eq!(
            into.iter()
                .filter(|(k, _)| k.as_str() == "exception_class")
                .count(),
            1
        );
        assert_eq!(
            into.iter().find(|(k, _)| *k == AttrKey::ExceptionClass),
            Some(&(AttrKey::ExceptionClass, "Timeout".into()))
        );
        // The replaced value is left behind to be freed outside the lock.
        assert_eq!(incoming[0].1, "StandardError".into());
    }

    #[test]
    fn evicts_the_oldest_entry_keeping_open_attempts() {
        let mut r = run();
        let (open, _) = r.push_attempt(Id::Int(1), [3; 8], at(11), Vec::new(), 4);
        let (closed, _) = r.push_attempt(Id::Int(2), [4; 8], at(12), Vec::new(), 4);
        let closed = closed.unwrap();
        r.attempt_mut(closed).unwrap().span.end_at(at(13));
        let target = r.attempt_target(closed);
        // Full: root + 2 attempts + 1 event.
        let room = r.push_event(target, at(14), EventName::new(b"x"), Vec::new(), 4);
        assert!(room.fits && room.evicted == 0);
        // The closed attempt (older than the event) goes, with its event.
        let room = r.push_event(Target::Root, at(15), EventName::new(b"y"), Vec::new(), 4);
        assert!(room.fits);
        assert_eq!(room.evicted, 2);
        assert_eq!(r.entries(), 3);
        assert_eq!(r.open_attempt(&Id::Int(1)), open);
        // Next: the root's event is the oldest that may go.
        let room = r.push_event(Target::Root, at(16), EventName::new(b"z"), Vec::new(), 3);
        assert_eq!((room.fits, room.evicted), (true, 1));
        // Only the root and an open attempt left: nothing may go.
        let room = r.push_event(Target::Root, at(17), EventName::new(b"w"), Vec::new(), 2);
        assert!(!room.fits);
        let exported = r.into_run();
        assert_eq!(exported.spans.len(), 2);
        assert_eq!(exported.spans[0].events[0].name.as_str(), "z");
        assert_eq!(exported.spans[1].end, None);
        assert_eq!(exported.spans[1].parent_span_id, Some([2; 8]));
    }

    #[test]
    fn export_ends_open_attempts_with_the_root_and_keeps_event_owners() {
        let mut r = run();
        let (a, _) = r.push_attempt(Id::Text(Arc::from("s")), [3; 8], at(20), Vec::new(), 100);
        let target = r.attempt_target(a.unwrap());
        r.push_event(
            target,
            at(21),
            EventName::new(b"step.before_handle"),
            Vec::new(),
            100,
        );
        r.push_event(Target::Root, at(22), EventName::new(b"w"), Vec::new(), 100);
        r.root.end_at(at(5));
        assert_eq!(r.root.end, Some(at(10)), "never ends before it started");
        r.end = RunEnd::Completed;
        let exported = r.into_run();
        assert_eq!(exported.spans[1].end, Some(at(20)));
        assert_eq!(exported.spans[1].events.len(), 1);
        assert_eq!(exported.spans[0].events.len(), 1);
    }
}
