//! Events shaped like the ones Tasker publishes, with injected clock readings,
//! and helpers to look into exported runs.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tasker_trace_core::input::lifecycle::ToState;
use tasker_trace_core::input::lifecycle::{AttrKey, AttrValue, Id, LifecycleEvent};
use tasker_trace_core::model::lifecycle::{LifecycleLimits, RecordOutcome, Run, Span, Tracer};
use tasker_trace_core::support::clock::Stamp;

/// The wall clock at t = 0 (2026-01-01T00:00:00Z).
pub const WALL_BASE: i64 = 1_767_225_600_000_000_000;

/// A clock reading `ms` milliseconds into the test.
pub fn at(ms: u64) -> Stamp {
    Stamp {
        wall_ns: WALL_BASE + (ms as i64) * 1_000_000,
        mono_ns: ms * 1_000_000,
    }
}

pub fn secs(s: u64) -> Stamp {
    at(s * 1_000)
}

pub fn ev(name: &str, task: impl Into<Id>, t: Stamp) -> LifecycleEvent {
    LifecycleEvent::named(name.as_bytes(), t).with_task(task)
}

/// A step event with the step keys every step payload carries.
pub fn step_ev(
    name: &str,
    task: impl Into<Id>,
    step: impl Into<Id>,
    attempt: i64,
    t: Stamp,
) -> LifecycleEvent {
    ev(name, task, t)
        .with_step(step)
        .with_attr(AttrKey::StepName, "fetch_cart")
        .with_attr(AttrKey::AttemptNumber, attempt)
        .with_attr(AttrKey::RetryLimit, 3)
}

/// The state machine's `task.start_requested` (the transition into
/// in_progress): the one that opens a run.
pub fn start_requested(task: impl Into<Id>, t: Stamp) -> LifecycleEvent {
    ev("task.start_requested", task, t)
        .with_to_state(ToState::InProgress)
        .with_attr(AttrKey::TaskName, "order_fulfillment")
}

/// The initializer's `task.start_requested` (no `to_state`), sent at creation
/// and again after the state machine's in the worker.
pub fn initializer_start(task: impl Into<Id>, t: Stamp) -> LifecycleEvent {
    ev("task.start_requested", task, t)
        .with_attr(AttrKey::TaskName, "order_fulfillment")
        .with_attr(AttrKey::TotalSteps, 3)
}

/// `task.completed` as the state machine (no counts) or the finalizer sends it.
pub fn task_completed(task: impl Into<Id>, t: Stamp, with_counts: bool) -> LifecycleEvent {
    let e = ev("task.completed", task, t).with_attr(AttrKey::TaskName, "order_fulfillment");
    if with_counts {
        e.with_attr(AttrKey::TotalSteps, 3)
            .with_attr(AttrKey::CompletedSteps, 3)
            .with_attr(AttrKey::FailedSteps, 0)
    } else {
        e
    }
}

/// `task.failed`; only the second of the pair carries `error_message`.
pub fn task_failed(task: impl Into<Id>, t: Stamp, message: Option<&'static str>) -> LifecycleEvent {
    let e = ev("task.failed", task, t).with_attr(AttrKey::TaskName, "order_fulfillment");
    match message {
        Some(m) => e
            .with_attr(AttrKey::Error, m)
            .with_attr(AttrKey::TotalSteps, 3)
            .with_attr(AttrKey::FailedSteps, 1),
        None => e,
    }
}

/// The three `step.failed` of one failed attempt all carry the error fields.
pub fn step_failed(
    task: impl Into<Id>,
    step: impl Into<Id>,
    attempt: i64,
    t: Stamp,
) -> LifecycleEvent {
    step_ev("step.failed", task, step, attempt, t)
        .with_attr(AttrKey::Error, "connection refused")
        .with_attr(AttrKey::ErrorClass, "Net::OpenTimeout")
        .with_attr(AttrKey::ExceptionClass, "StandardError")
}

/// One successful attempt as Tasker publishes it: 3x execution_requested,
/// before_handle, 3x completed (attempt_number 0 in the first), from `t0` ms,
/// one millisecond apart, the handler taking `work_ms`.
pub fn successful_attempt(
    task: impl Into<Id> + Clone,
    step: impl Into<Id> + Clone,
    attempt: i64,
    t0: u64,
    work_ms: u64,
) -> Vec<LifecycleEvent> {
    let s = |name: &str, n: i64, t: u64| step_ev(name, task.clone(), step.clone(), n, at(t));
    vec![
        s("step.execution_requested", attempt, t0),
        s("step.execution_requested", attempt, t0 + 1),
        s("step.execution_requested", attempt, t0 + 2),
        s("step.before_handle", attempt, t0 + 3),
        s("step.completed", 0, t0 + 3 + work_ms).with_attr(AttrKey::ExecutionDuration, 0),
        s("step.completed", attempt, t0 + 4 + work_ms).with_attr(AttrKey::ExecutionDuration, 1),
        s("step.completed", attempt, t0 + 5 + work_ms).with_attr(AttrKey::ExecutionDuration, 1),
    ]
}

/// A whole successful run of a 3-step task in the worker, from `t0` ms:
/// 2x start_requested, workflow events, three steps, 2x task.completed.
pub fn successful_run(task: i64, t0: u64) -> Vec<LifecycleEvent> {
    let mut events = vec![
        start_requested(task, at(t0)),
        initializer_start(task, at(t0 + 1)),
        ev("workflow.viable_steps_discovered", task, at(t0 + 2)),
        ev("workflow.steps_execution_started", task, at(t0 + 3)),
    ];
    for step in 0..3 {
        events.extend(successful_attempt(
            task,
            task * 10 + step,
            1,
            t0 + 10 + step as u64 * 20,
            5,
        ));
    }
    events.push(ev("workflow.steps_execution_completed", task, at(t0 + 80)));
    events.push(ev("workflow.task_finalization_started", task, at(t0 + 81)));
    events.push(task_completed(task, at(t0 + 82), false));
    events.push(task_completed(task, at(t0 + 83), true));
    events.push(ev(
        "workflow.task_finalization_completed",
        task,
        at(t0 + 84),
    ));
    events
}

pub fn record_all(tracer: &Tracer, events: Vec<LifecycleEvent>) -> Vec<RecordOutcome> {
    events.into_iter().map(|e| tracer.record(e)).collect()
}

pub fn tracer() -> Tracer {
    Tracer::new(LifecycleLimits::default())
}

pub fn limits(open: usize, spans: usize, finished: usize, ttl_s: u64) -> LifecycleLimits {
    LifecycleLimits {
        max_open_runs: open,
        max_spans_per_run: spans,
        max_finished_runs: finished,
        ttl: Duration::from_secs(ttl_s),
    }
}

/// Drains everything finished, as an explicit export does.
pub fn drain(tracer: &Tracer) -> Vec<Run> {
    tracer.drain_finished(Duration::ZERO)
}

pub fn only_run(tracer: &Tracer) -> Run {
    let mut runs = drain(tracer);
    assert_eq!(
        runs.len(),
        1,
        "expected exactly one finished run: {runs:#?}"
    );
    runs.remove(0)
}

pub fn int(span: &Span, key: &str) -> Option<i64> {
    match span.attr(key) {
        Some(AttrValue::Int(n)) => Some(*n),
        _ => None,
    }
}

/// A Float attribute, rounded to microseconds.
pub fn float(span: &Span, key: &str) -> Option<f64> {
    match span.attr(key) {
        Some(AttrValue::Float(x)) => Some((x * 1e6).round() / 1e6),
        _ => None,
    }
}

pub fn text(span: &Span, key: &str) -> Option<String> {
    match span.attr(key) {
        Some(AttrValue::Str(t)) => Some(t.to_string()),
        _ => None,
    }
}

pub fn event_names(span: &Span) -> Vec<String> {
    span.events
        .iter()
        .map(|e| e.name.as_str().to_string())
        .collect()
}

pub fn extra(name: &str) -> AttrKey {
    AttrKey::Extra(Arc::from(name))
}

/// Milliseconds a span lasted on the monotonic clock.
pub fn duration_ms(span: &Span) -> Option<u64> {
    span.end
        .map(|e| (e.mono_ns - span.start.mono_ns) / 1_000_000)
}
