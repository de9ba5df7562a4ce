//! Repeated step events: a copy that would change nothing is counted and
//! skipped; anything that could make a copy change something is recorded.

mod lifecycle_support;

use lifecycle_support::*;
use tasker_trace_core::input::lifecycle::repeat::{text_hash, RepeatKey, Word, REPEAT_VALUES};
use tasker_trace_core::input::lifecycle::EventKind;
use tasker_trace_core::model::lifecycle::{RecordOutcome, Tracer};

fn key(kind: EventKind, task: i64, step: i64, attempt: i64) -> RepeatKey {
    let mut values = [Word::Absent; REPEAT_VALUES];
    values[0] = Word::Text(text_hash(b"fetch_cart"), 10);
    values[1] = Word::Int(3);
    RepeatKey {
        kind,
        task,
        step,
        attempt: Word::Int(attempt),
        values,
        thread: 1,
    }
}

fn opened(t: &Tracer, task: i64) {
    assert_eq!(
        t.record(start_requested(task, at(0))),
        RecordOutcome::RunOpened
    );
}

/// Records task 1's step 5 `step.execution_requested` at `ms` with its key.
fn exec_recorded(t: &Tracer, ms: u64) -> (RepeatKey, RecordOutcome) {
    let exec = key(EventKind::StepExecutionRequested, 1, 5, 0);
    let outcome = t.record_keyed(
        step_ev("step.execution_requested", 1, 5, 0, at(ms)),
        Some(exec),
    );
    (exec, outcome)
}

#[test]
fn a_copy_of_the_event_just_recorded_is_counted_and_changes_nothing() {
    let t = tracer();
    opened(&t, 1);
    let (exec, outcome) = exec_recorded(&t, 1);
    assert_eq!(outcome, RecordOutcome::AttemptOpened);
    let before = t.stats().events_recorded;
    assert!(t.repeated(&exec, at(2)));
    assert!(t.repeated(&exec, at(3)));
    assert_eq!(t.stats().events_recorded, before + 2);
    let done = key(EventKind::StepCompleted, 1, 5, 1);
    assert!(
        !t.repeated(&done, at(4)),
        "another kind is recorded in full"
    );
    t.record_keyed(step_ev("step.completed", 1, 5, 1, at(4)), Some(done));
    assert!(t.repeated(&key(EventKind::StepCompleted, 1, 5, 0), at(5)));
    assert!(
        !t.repeated(&exec, at(6)),
        "only the last event is remembered"
    );
    t.record(task_completed(1, at(7), true));
    let run = only_run(&t);
    assert_eq!(run.spans.len(), 2);
    assert_eq!(int(&run.spans[1], "attempt_number"), Some(1));
    assert_eq!(duration_ms(&run.spans[1]), Some(3));
}

#[test]
fn a_copy_that_would_change_a_value_is_not_taken() {
    let t = tracer();
    opened(&t, 1);
    let (exec, _) = exec_recorded(&t, 1);
    let mut renamed = exec;
    renamed.values[0] = Word::Text(text_hash(b"charge"), 6);
    assert!(!t.repeated(&renamed, at(2)));
    let mut other_thread = exec;
    other_thread.thread = 2;
    assert!(!t.repeated(&other_thread, at(2)));
    assert!(t.repeated(&exec, at(2)));
}

#[test]
fn anything_else_recorded_or_changed_in_between_forgets_the_event() {
    let t = tracer();
    opened(&t, 1);
    let (exec, _) = exec_recorded(&t, 1);
    t.record(step_ev("step.before_handle", 1, 5, 0, at(2)));
    assert!(!t.repeated(&exec, at(3)));

    exec_recorded(&t, 4);
    t.reset();
    assert!(!t.repeated(&exec, at(5)));
}

#[test]
fn only_events_on_an_open_run_that_opened_merged_or_closed_an_attempt_are_remembered() {
    let t = tracer();
    // No run: the step event is an orphan.
    let orphan = key(EventKind::StepCompleted, 9, 90, 1);
    t.record_keyed(step_ev("step.completed", 9, 90, 1, at(1)), Some(orphan));
    assert!(!t.repeated(&orphan, at(2)));

    // A finished run takes copies in full (its root ends at its last event).
    opened(&t, 1);
    t.record(step_ev("step.execution_requested", 1, 5, 0, at(1)));
    t.record(task_completed(1, at(2), false));
    let late = key(EventKind::StepCompleted, 1, 5, 1);
    t.record_keyed(step_ev("step.completed", 1, 5, 1, at(3)), Some(late));
    assert!(!t.repeated(&late, at(4)));

    // A key of a kind that never repeats is not remembered.
    opened(&t, 2);
    let handle = key(EventKind::StepBeforeHandle, 2, 6, 0);
    t.record_keyed(step_ev("step.before_handle", 2, 6, 0, at(5)), Some(handle));
    assert!(!t.repeated(&handle, at(6)));
}

#[test]
fn a_copy_long_after_the_event_is_recorded_in_full() {
    let t = tracer();
    opened(&t, 1);
    let (exec, _) = exec_recorded(&t, 1);
    assert!(!t.repeated(&exec, at(1_001)));
    assert!(t.repeated(&exec, at(1_000)));
}

#[test]
fn a_copy_with_a_higher_attempt_number_raises_it_as_a_merge_would() {
    let t = tracer();
    opened(&t, 1);
    t.record(step_ev("step.execution_requested", 1, 5, 0, at(1)));
    let first = key(EventKind::StepCompleted, 1, 5, 0);
    assert_eq!(
        t.record_keyed(step_ev("step.completed", 1, 5, 0, at(2)), Some(first)),
        RecordOutcome::AttemptClosed
    );
    assert!(t.repeated(&key(EventKind::StepCompleted, 1, 5, 2), at(3)));
    assert!(t.repeated(&key(EventKind::StepCompleted, 1, 5, 1), at(4)));
    // A reader sees it merged.
    let open = t.snapshot(true);
    assert_eq!(int(&open[0].spans[1], "attempt_number"), Some(2));
    // So does the run when the next event comes first.
    let t = tracer();
    opened(&t, 1);
    exec_recorded(&t, 1);
    assert!(t.repeated(&key(EventKind::StepExecutionRequested, 1, 5, 1), at(2)));
    t.record(step_ev("step.completed", 1, 5, 0, at(3)));
    t.record(task_completed(1, at(4), false));
    let run = only_run(&t);
    assert_eq!(int(&run.spans[1], "attempt_number"), Some(1));
    assert_eq!(t.stats().events_recorded, 5);
}
