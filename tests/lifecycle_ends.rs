//! How runs and attempts end besides completing: re-enqueue (pending, then a
//! linked run), cancellation, manual resolution; and events that find no run
//! (orphaned, ignored) or come after their run was exported (late).

mod lifecycle_support;

use lifecycle_support::*;
use tasker_trace_core::input::lifecycle::ToState;
use tasker_trace_core::input::lifecycle::{AttrKey, AttrValue, LifecycleEvent};
use tasker_trace_core::model::lifecycle::{
    RecordOutcome as O, RunEnd, StatusCode, TASK_INIT_SPAN_NAME,
};

#[test]
fn a_re_enqueued_run_ends_pending_and_the_next_run_links_to_it() {
    let t = tracer();
    t.record(start_requested(9, at(0)));
    t.record(step_ev("step.execution_requested", 9, 1, 1, at(5)));
    t.record(step_ev("step.completed", 9, 1, 1, at(8)));
    assert_eq!(
        t.record(ev("task.initialize_requested", 9, at(10))),
        O::RunClosed
    );
    assert_eq!(
        t.record(ev("workflow.task_reenqueue_requested", 9, at(11))),
        O::EventAdded,
        "lands on the ended run while it waits"
    );
    assert_eq!(t.record(start_requested(9, at(100))), O::RunOpened);
    t.record(task_completed(9, at(150), false));
    let runs = drain(&t);
    let [first, second] = &runs[..] else {
        panic!("two runs expected: {runs:#?}");
    };
    let first_root = first.root().unwrap();
    assert_eq!(first.end, RunEnd::Pending);
    assert_eq!(first_root.status.code, StatusCode::Unset);
    // The root ends at the run's last event, the re-enqueue inside it.
    assert_eq!(first_root.end, Some(at(11)));
    assert_eq!(
        event_names(first_root),
        ["task.pending", "workflow.task_reenqueue_requested"]
    );
    assert_ne!(first.trace_id, second.trace_id);
    let second_root = second.root().unwrap();
    assert_eq!(second_root.links.len(), 1);
    assert_eq!(second_root.links[0].trace_id, first.trace_id);
    assert_eq!(second_root.links[0].span_id, first_root.span_id);
    assert!(first_root.links.is_empty());
}

#[test]
fn a_run_after_a_finished_and_exported_run_links_to_it() {
    let t = tracer();
    t.record(start_requested(4, at(0)));
    t.record(task_failed(4, at(1), Some("x")));
    let failed = only_run(&t);
    t.record(start_requested(4, at(10)));
    t.record(task_completed(4, at(11), false));
    let retried = only_run(&t);
    assert_eq!(retried.root().unwrap().links[0].trace_id, failed.trace_id);
}

#[test]
fn a_cancelled_task_is_an_error_and_its_open_attempt_ends_with_it() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 5, 1, at(10)));
    t.record(step_ev("step.execution_requested", 1, 6, 1, at(11)));
    assert_eq!(t.record(ev("task.cancelled", 1, at(20))), O::RunClosed);
    let run = only_run(&t);
    let root = run.root().unwrap();
    assert_eq!(run.end, RunEnd::Cancelled);
    assert_eq!(root.status.code, StatusCode::Error);
    assert_eq!(root.status.message.as_deref(), Some("cancelled"));
    assert_eq!(event_names(root), ["task.cancelled"]);
    for a in run.attempts() {
        assert_eq!(a.end, Some(at(20)), "ended with the run");
        assert_eq!(a.status.code, StatusCode::Unset);
    }
}

#[test]
fn a_manually_resolved_task_is_ok_with_an_event() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    assert_eq!(
        t.record(ev("task.resolved_manually", 1, at(20))),
        O::RunClosed
    );
    assert_eq!(t.record(ev("task.resolved_manually", 1, at(21))), O::Merged);
    let run = only_run(&t);
    assert_eq!(run.end, RunEnd::ResolvedManually);
    let root = run.root().unwrap();
    assert_eq!(root.status.code, StatusCode::Ok);
    assert_eq!(event_names(root), ["task.resolved_manually"]);
}

#[test]
fn step_cancel_and_manual_resolution_end_the_open_attempt() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 5, 1, at(10)));
    t.record(step_ev("step.execution_requested", 1, 6, 1, at(10)));
    assert_eq!(
        t.record(ev("step.cancelled", 1, at(20)).with_step(5)),
        O::AttemptClosed
    );
    assert_eq!(
        t.record(ev("step.resolved_manually", 1, at(21)).with_step(6)),
        O::AttemptClosed
    );
    // A failed attempt resolved later keeps its status; the action is noted
    // on the task span (after the attempt ended), naming the step.
    t.record(step_ev("step.execution_requested", 1, 7, 1, at(22)));
    t.record(step_failed(1, 7, 1, at(23)));
    assert_eq!(
        t.record(ev("step.resolved_manually", 1, at(24)).with_step(7)),
        O::Merged
    );
    t.record(task_completed(1, at(30), false));
    let run = only_run(&t);
    let [cancelled, resolved, failed] = run.attempts() else {
        panic!("three attempts expected: {run:#?}");
    };
    assert_eq!(cancelled.end, Some(at(20)));
    assert_eq!(cancelled.status.code, StatusCode::Error);
    assert_eq!(cancelled.status.message.as_deref(), Some("cancelled"));
    assert_eq!(event_names(cancelled), ["step.cancelled"]);
    assert_eq!(resolved.status.code, StatusCode::Ok);
    assert_eq!(event_names(resolved), ["step.resolved_manually"]);
    assert_eq!(failed.status.code, StatusCode::Error);
    assert!(event_names(failed).is_empty());
    let root = run.root().unwrap();
    assert_eq!(event_names(root), ["step.resolved_manually"]);
    assert_eq!(
        root.events[0].attributes,
        [(AttrKey::StepId, AttrValue::Int(7))]
    );
}

#[test]
fn events_of_unknown_tasks_are_orphaned_and_not_exported() {
    let t = tracer();
    let outcomes = record_all(
        &t,
        vec![
            step_ev("step.execution_requested", 1, 5, 1, at(0)),
            step_ev("step.completed", 1, 5, 1, at(1)),
            task_completed(1, at(2), true),
            ev("workflow.viable_steps_discovered", 1, at(3)),
        ],
    );
    assert_eq!(outcomes, [O::Orphaned; 4]);
    assert_eq!(t.stats().events_orphaned, 4);
    assert!(t.snapshot(true).is_empty());
}

#[test]
fn a_closing_step_event_without_an_attempt_is_kept_on_the_task_span() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    assert_eq!(
        t.record(step_ev("step.completed", 1, 5, 1, at(10))),
        O::OrphanRecorded
    );
    assert_eq!(
        t.record(ev("step.failed", 1, at(11))),
        O::OrphanRecorded,
        "no step id at all"
    );
    t.record(task_completed(1, at(20), false));
    let run = only_run(&t);
    assert!(run.attempts().is_empty());
    let root = run.root().unwrap();
    assert_eq!(event_names(root), ["step.completed", "step.failed"]);
    assert!(root.events[0]
        .attributes
        .contains(&(AttrKey::StepId, AttrValue::Int(5))));
    assert_eq!(t.stats().events_orphaned, 2);
}

#[test]
fn events_without_a_task_and_initialize_without_a_run_are_ignored() {
    let t = tracer();
    let no_task = LifecycleEvent::named(b"workflow.viable_steps_discovered", at(0));
    assert_eq!(t.record(no_task), O::Ignored);
    assert_eq!(
        t.record(ev("task.initialize_requested", 1, at(1))),
        O::Ignored
    );
    assert_eq!(t.stats().events_ignored, 2);
    assert_eq!(t.stats().open_runs, 0);
}

#[test]
fn late_duplicates_after_export_are_counted_and_reopen_nothing() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 5, 1, at(1)));
    t.record(step_ev("step.completed", 1, 5, 0, at(2)));
    t.record(task_completed(1, at(3), false));
    assert_eq!(drain(&t).len(), 1);
    let outcomes = record_all(
        &t,
        vec![
            task_completed(1, at(4), true),
            step_ev("step.completed", 1, 5, 1, at(5)),
            step_ev("step.execution_requested", 1, 5, 1, at(6)),
            ev("workflow.task_finalization_completed", 1, at(7)),
        ],
    );
    assert_eq!(outcomes, [O::Late; 4]);
    let stats = t.stats();
    assert_eq!(
        (stats.events_late, stats.open_runs, stats.finished_runs),
        (4, 0, 0)
    );
    assert!(drain(&t).is_empty());
}

#[test]
fn a_finished_run_still_closes_its_open_attempts_but_opens_none() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 5, 1, at(1)));
    t.record(task_completed(1, at(10), false));
    assert_eq!(
        t.record(step_ev("step.completed", 1, 5, 1, at(11))),
        O::AttemptClosed
    );
    assert_eq!(
        t.record(step_ev("step.execution_requested", 1, 6, 1, at(12))),
        O::Late
    );
    let run = only_run(&t);
    assert_eq!(run.attempts().len(), 1);
    assert_eq!(run.attempts()[0].end, Some(at(11)));
    assert_eq!(run.attempts()[0].status.code, StatusCode::Ok);
}

#[test]
fn events_after_a_newer_run_expired_do_not_go_to_the_older_waiting_run() {
    let t = tracer();
    t.record(start_requested(1, secs(0)));
    t.record(ev("task.initialize_requested", 1, secs(1)));
    // The next run opens and is never finished: it expires.
    t.record(start_requested(1, secs(2)));
    assert_eq!(t.expire_at(secs(3_602)), 1);
    assert_eq!(
        t.record(step_ev("step.completed", 1, 5, 1, secs(3_603))),
        O::Late
    );
    let runs = drain(&t);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].end, RunEnd::Pending);
    assert_eq!(event_names(runs[0].root().unwrap()), ["task.pending"]);
}

#[test]
fn creation_and_enqueueing_open_nothing() {
    let t = tracer();
    let outcomes = record_all(
        &t,
        vec![
            initializer_start(3, at(0)),
            ev("observability.task.enqueue", 3, at(1)),
            ev("task.before_transition", 3, at(2)).with_to_state(ToState::InProgress),
        ],
    );
    assert_eq!(outcomes, [O::Ignored; 3]);
    assert!(
        t.snapshot(true).is_empty(),
        "no open run for a task not run"
    );
    // The worker's transition into in_progress opens the run, there.
    assert_eq!(t.record(start_requested(3, at(40))), O::RunOpened);
    assert_eq!(t.record(initializer_start(3, at(41))), O::Merged);
    let runs = t.snapshot(true);
    assert_eq!(runs[0].root().unwrap().start, at(40));
}

#[test]
fn a_pending_run_takes_its_counts_from_the_second_initialize_requested() {
    let t = tracer();
    t.record(start_requested(2, at(0)));
    t.record(initializer_start(2, at(1)).with_attr(AttrKey::CompletedSteps, 0));
    let first = ev("task.initialize_requested", 2, at(10)).with_to_state(ToState::Other);
    assert_eq!(t.record(first), O::RunClosed);
    let second = ev("task.initialize_requested", 2, at(12))
        .with_attr(AttrKey::TotalSteps, 5)
        .with_attr(AttrKey::CompletedSteps, 2)
        .with_attr(AttrKey::FailedSteps, 1);
    assert_eq!(t.record(second), O::Merged);
    assert_eq!(
        t.record(ev("workflow.task_finalization_completed", 2, at(13))),
        O::EventAdded
    );
    // The next run's preamble is not the ended run's.
    let retry = step_ev("step.initialize_requested", 2, 21, 1, at(20));
    assert_eq!(t.record(retry), O::Ignored);
    let before = ev("task.before_transition", 2, at(21)).with_to_state(ToState::InProgress);
    assert_eq!(t.record(before), O::Ignored);
    let run = only_run(&t);
    let root = run.root().unwrap();
    assert_eq!(run.end, RunEnd::Pending);
    assert_eq!(
        (
            int(root, "total_steps"),
            int(root, "completed_steps"),
            int(root, "failed_steps")
        ),
        (Some(5), Some(2), Some(1))
    );
    assert_eq!(root.end, Some(at(13)), "its last event");
    assert_eq!(
        event_names(root),
        ["task.pending", "workflow.task_finalization_completed"]
    );
    assert!(root.events.iter().all(|e| e.at.mono_ns <= at(13).mono_ns));
}

#[test]
fn a_failed_creation_is_a_one_span_trace() {
    let t = tracer();
    let failed = LifecycleEvent::named(b"task.failed", at(5))
        .with_attr(AttrKey::TaskName, "order_processing")
        .with_attr(AttrKey::Error, "context is invalid");
    assert_eq!(t.record(failed), O::RunClosed);
    // Other events without a task id stay ignored.
    let before = LifecycleEvent::named(b"task.before_transition", at(6));
    assert_eq!(t.record(before), O::Ignored);
    let stats = t.stats();
    assert_eq!((stats.finished_runs, stats.events_recorded), (1, 1));
    let run = only_run(&t);
    assert_eq!(run.task_id, None);
    assert_eq!(run.end, RunEnd::Failed);
    let [root] = &run.spans[..] else {
        panic!("one span expected: {run:#?}");
    };
    assert_eq!(root.name, TASK_INIT_SPAN_NAME);
    assert_eq!((root.start, root.end), (at(5), Some(at(5))));
    assert_eq!(root.status.code, StatusCode::Error);
    assert_eq!(root.status.message.as_deref(), Some("context is invalid"));
    assert_eq!(text(root, "task_name").as_deref(), Some("order_processing"));
}

#[test]
fn failed_creations_are_bounded_like_runs() {
    let t = tracer();
    t.configure(limits(10, 10, 2, 3600));
    for ms in 0..5 {
        t.record(LifecycleEvent::named(b"task.failed", at(ms)));
    }
    let stats = t.stats();
    assert_eq!((stats.finished_runs, stats.finished_runs_dropped), (2, 3));
}
