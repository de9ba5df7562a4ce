//! The trace model: one trace per task run, one span per step attempt, and
//! every duplicate pattern Tasker publishes.

mod lifecycle_support;

use lifecycle_support::*;
use tasker_trace_core::input::lifecycle::{AttrKey, AttrValue, Id, Text};
use tasker_trace_core::model::lifecycle::{
    RecordOutcome as O, RunEnd, StatusCode, STEP_SPAN_NAME, TASK_SPAN_NAME,
};

#[test]
fn a_three_step_run_is_one_trace_with_real_durations() {
    let t = tracer();
    let outcomes = record_all(&t, successful_run(7, 1_000));
    assert_eq!(outcomes[0], O::RunOpened);
    assert!(!outcomes.contains(&O::Orphaned) && !outcomes.contains(&O::Late));
    let run = only_run(&t);
    assert_eq!(run.task_id, Some(Id::Int(7)));
    assert_eq!(run.end, RunEnd::Completed);
    assert_eq!(run.spans.len(), 4);
    let root = run.root().unwrap();
    assert_eq!(root.name, TASK_SPAN_NAME);
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.start, at(1_000));
    assert_eq!(
        root.end,
        Some(at(1_084)),
        "ended by the run's last event (finalization after task.completed)"
    );
    assert_eq!(root.status.code, StatusCode::Ok);
    assert_eq!(int(root, "task_id"), Some(7));
    assert_eq!(
        text(root, "task_name").as_deref(),
        Some("order_fulfillment")
    );
    assert_eq!(int(root, "total_steps"), Some(3), "counts from the second");
    assert_eq!(
        event_names(root),
        [
            "workflow.viable_steps_discovered",
            "workflow.steps_execution_started",
            "workflow.steps_execution_completed",
            "workflow.task_finalization_started",
            "workflow.task_finalization_completed",
        ]
    );
    for (i, span) in run.attempts().iter().enumerate() {
        assert_eq!(span.name, STEP_SPAN_NAME);
        assert_eq!(span.parent_span_id, Some(root.span_id));
        assert_ne!(span.span_id, root.span_id);
        assert_eq!(int(span, "step_id"), Some(70 + i as i64));
        assert_eq!(int(span, "task_id"), Some(7));
        assert_eq!(span.start, at(1_010 + i as u64 * 20));
        assert_eq!(
            duration_ms(span),
            Some(8),
            "first execution_requested to first completed"
        );
        assert_eq!(
            float(span, "execution_duration"),
            Some(0.008),
            "the attempt's own measured seconds"
        );
        assert_eq!(span.status.code, StatusCode::Ok);
        assert_eq!(event_names(span), ["step.before_handle"]);
    }
    assert!(root.links.is_empty());
}

#[test]
fn three_start_requested_make_one_root_span() {
    let t = tracer();
    assert_eq!(t.record(start_requested(1, at(0))), O::RunOpened);
    let second = ev("task.start_requested", 1, at(5)).with_attr(extra("from_state"), "pending");
    assert_eq!(t.record(second), O::Merged);
    let third = ev("task.start_requested", 1, at(6)).with_attr(AttrKey::TaskName, "renamed");
    assert_eq!(t.record(third), O::Merged);
    assert_eq!(t.stats().open_runs, 1);
    t.record(ev("task.completed", 1, at(10)));
    let run = only_run(&t);
    let root = run.root().unwrap();
    assert_eq!(root.start, at(0));
    assert_eq!(text(root, "from_state").as_deref(), Some("pending"));
    assert_eq!(text(root, "task_name").as_deref(), Some("renamed"));
    assert_eq!(root.attributes.len(), 3, "task_id, task_name, from_state");
}

#[test]
fn the_web_process_start_requested_never_finishes_and_expires() {
    // The process that created the task sees initialize and one
    // start_requested, then nothing: that run expires after the TTL.
    let t = tracer();
    assert_eq!(
        t.record(ev("task.initialize_requested", 3, secs(0))),
        O::Ignored
    );
    assert_eq!(t.record(start_requested(3, secs(1))), O::RunOpened);
    assert_eq!(
        t.record(ev("observability.task.enqueue", 3, secs(2))),
        O::EventAdded
    );
    assert_eq!(t.expire_at(secs(3_601)), 0, "idle 3599 s");
    assert_eq!(t.expire_at(secs(3_602)), 1, "idle 3600 s");
    let stats = t.stats();
    assert_eq!((stats.open_runs, stats.runs_expired), (0, 1));
    assert!(t
        .drain_finished_at(secs(4_000), Default::default())
        .is_empty());
    assert_eq!(t.record(task_completed(3, secs(4_000), false)), O::Orphaned);
}

#[test]
fn three_execution_requested_open_one_attempt() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    let outcomes = record_all(
        &t,
        vec![
            step_ev("step.execution_requested", 1, 5, 1, at(10)),
            step_ev("step.execution_requested", 1, 5, 1, at(11)).with_attr(extra("queue"), "x"),
            step_ev("step.execution_requested", 1, 5, 1, at(12)),
        ],
    );
    assert_eq!(outcomes, [O::AttemptOpened, O::Merged, O::Merged]);
    t.record(step_ev("step.completed", 1, 5, 1, at(20)));
    t.record(task_completed(1, at(30), true));
    let run = only_run(&t);
    assert_eq!(run.attempts().len(), 1);
    let a = &run.attempts()[0];
    assert_eq!(a.start, at(10));
    assert_eq!(text(a, "queue").as_deref(), Some("x"));
    assert_eq!(text(a, "step_name").as_deref(), Some("fetch_cart"));
    assert_eq!(int(a, "retry_limit"), Some(3));
}

#[test]
fn three_completed_close_once_and_keep_the_highest_attempt_number() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    let outcomes = record_all(&t, successful_attempt(1, 5, 2, 10, 40));
    assert_eq!(
        outcomes,
        [
            O::AttemptOpened,
            O::Merged,
            O::Merged,
            O::EventAdded,
            O::AttemptClosed,
            O::Merged,
            O::Merged
        ]
    );
    t.record(task_completed(1, at(100), true));
    let run = only_run(&t);
    assert_eq!(run.spans.len(), 2, "no span per duplicate");
    let a = &run.attempts()[0];
    assert_eq!(a.end, Some(at(53)), "ended by the first step.completed");
    assert_eq!(int(a, "attempt_number"), Some(2), "not the first one's 0");
    assert_eq!(
        float(a, "execution_duration"),
        Some(0.043),
        "measured (10 ms to 53 ms), not Tasker's figure"
    );
    assert_eq!(a.status.code, StatusCode::Ok);
}

#[test]
fn three_failed_give_one_error_span_with_the_message() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 5, 1, at(10)));
    let outcomes = record_all(
        &t,
        vec![
            step_failed(1, 5, 0, at(20)),
            step_failed(1, 5, 1, at(21)),
            step_failed(1, 5, 1, at(22)),
        ],
    );
    assert_eq!(outcomes, [O::AttemptClosed, O::Merged, O::Merged]);
    t.record(task_failed(1, at(30), None));
    let run = only_run(&t);
    let a = &run.attempts()[0];
    assert_eq!(run.spans.len(), 2);
    assert_eq!(a.end, Some(at(20)));
    assert_eq!(a.status.code, StatusCode::Error);
    assert_eq!(a.status.message, Some(Text::Static("connection refused")));
    assert_eq!(text(a, "error").as_deref(), Some("connection refused"));
    assert_eq!(
        text(a, "exception_class").as_deref(),
        Some("Net::OpenTimeout"),
        "error_class wins over exception_class (always StandardError)"
    );
    assert_eq!(
        a.attributes
            .iter()
            .filter(|(k, _)| k.as_str() == "exception_class")
            .count(),
        1
    );
    assert_eq!(int(a, "attempt_number"), Some(1));
}

#[test]
fn exception_class_alone_is_kept() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.before_handle", 1, 5, 1, at(1)));
    t.record(
        step_ev("step.failed", 1, 5, 1, at(2)).with_attr(AttrKey::ExceptionClass, "StandardError"),
    );
    t.record(task_failed(1, at(3), Some("x")));
    let run = only_run(&t);
    let a = &run.attempts()[0];
    assert_eq!(text(a, "exception_class").as_deref(), Some("StandardError"));
    assert_eq!(
        a.status.message, None,
        "no error_message, no made-up message"
    );
}

#[test]
fn two_task_completed_take_the_counts_from_the_second() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    assert_eq!(t.record(task_completed(1, at(50), false)), O::RunClosed);
    let stats = t.stats();
    assert_eq!((stats.open_runs, stats.finished_runs), (0, 1));
    assert_eq!(t.record(task_completed(1, at(51), true)), O::Merged);
    let run = only_run(&t);
    let root = run.root().unwrap();
    assert_eq!(root.end, Some(at(51)), "the run's last event");
    assert_eq!(root.status.code, StatusCode::Ok);
    assert_eq!(int(root, "completed_steps"), Some(3));
    assert_eq!(int(root, "failed_steps"), Some(0));
    assert_eq!(t.stats().events_recorded, 3);
}

#[test]
fn two_task_failed_take_the_message_from_the_second() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    assert_eq!(t.record(task_failed(1, at(50), None)), O::RunClosed);
    assert_eq!(
        t.snapshot(false)[0].root().unwrap().status.message,
        None,
        "not \"Unknown error\""
    );
    assert_eq!(
        t.record(task_failed(1, at(51), Some("step fetch_cart failed"))),
        O::Merged
    );
    let run = only_run(&t);
    let root = run.root().unwrap();
    assert_eq!(run.end, RunEnd::Failed);
    assert_eq!(root.end, Some(at(51)), "the run's last event");
    assert_eq!(root.status.code, StatusCode::Error);
    assert_eq!(
        root.status.message.as_deref(),
        Some("step fetch_cart failed")
    );
    assert_eq!(
        text(root, "error").as_deref(),
        Some("step fetch_cart failed")
    );
    assert_eq!(int(root, "failed_steps"), Some(1));
}

#[test]
fn a_retry_is_a_new_attempt_span_and_an_event_on_the_task_span() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 5, 1, at(10)));
    for ms in [20, 21, 22] {
        t.record(step_failed(1, 5, 1, at(ms)));
    }
    let retry =
        step_ev("step.retry_requested", 1, 5, 1, at(30)).with_attr(extra("previous_attempts"), 1);
    assert_eq!(t.record(retry), O::EventAdded);
    let outcomes = record_all(&t, successful_attempt(1, 5, 2, 100, 10));
    assert_eq!(outcomes[0], O::AttemptOpened, "a new attempt, not a merge");
    t.record(task_completed(1, at(200), false));
    t.record(task_completed(1, at(201), true));
    let run = only_run(&t);
    let [first, second] = run.attempts() else {
        panic!("two attempts expected: {run:#?}");
    };
    assert_ne!(first.span_id, second.span_id);
    assert_eq!(first.status.code, StatusCode::Error);
    assert_eq!((first.start, first.end), (at(10), Some(at(20))));
    assert_eq!(second.status.code, StatusCode::Ok);
    assert_eq!((second.start, second.end), (at(100), Some(at(113))));
    assert_eq!(int(second, "attempt_number"), Some(2));
    let root = run.root().unwrap();
    assert_eq!(event_names(root), ["step.retry_requested"]);
    let retry = &root.events[0];
    assert_eq!(retry.at, at(30));
    let attr = |k: &str| retry.attributes.iter().find(|(x, _)| x.as_str() == k);
    assert_eq!(attr("step_id").map(|(_, v)| v), Some(&AttrValue::Int(5)));
    assert_eq!(
        attr("previous_attempts").map(|(_, v)| v),
        Some(&AttrValue::Int(1))
    );
}

#[test]
fn before_handle_opens_an_attempt_and_is_an_event_on_it() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    assert_eq!(
        t.record(step_ev("step.before_handle", 1, 5, 1, at(10))),
        O::AttemptOpened
    );
    assert_eq!(
        t.record(step_ev("step.before_handle", 1, 5, 1, at(11))),
        O::EventAdded
    );
    t.record(step_ev("step.completed", 1, 5, 1, at(20)));
    t.record(task_completed(1, at(30), false));
    let run = only_run(&t);
    let a = &run.attempts()[0];
    assert_eq!(a.start, at(10));
    assert_eq!(text(a, "step_name").as_deref(), Some("fetch_cart"));
    assert_eq!(event_names(a), ["step.before_handle", "step.before_handle"]);
    assert_eq!(a.events[0].at, at(10));
}

#[test]
fn backoff_goes_on_the_open_attempt_else_on_the_task_span() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 5, 1, at(10)));
    let backoff = |ms| {
        step_ev("observability.step.backoff", 1, 5, 1, at(ms))
            .with_attr(extra("backoff_seconds"), 30)
            .with_attr(extra("backoff_type"), "server_requested")
    };
    assert_eq!(t.record(backoff(15)), O::EventAdded);
    t.record(step_failed(1, 5, 1, at(20)));
    assert_eq!(t.record(backoff(25)), O::EventAdded);
    t.record(task_failed(1, at(30), Some("x")));
    let run = only_run(&t);
    let a = &run.attempts()[0];
    assert_eq!(event_names(a), ["observability.step.backoff"]);
    let payload = &a.events[0].attributes;
    assert!(payload.contains(&(extra("backoff_seconds"), AttrValue::Int(30))));
    assert!(payload.contains(&(extra("backoff_type"), "server_requested".into())));
    assert!(
        !payload.iter().any(|(k, _)| *k == AttrKey::StepId),
        "on its own attempt, the step id is the span's"
    );
    assert_eq!(a.attr("backoff_seconds"), None);
    let root = run.root().unwrap();
    assert_eq!(event_names(root), ["observability.step.backoff"]);
    assert!(root.events[0]
        .attributes
        .contains(&(AttrKey::StepId, AttrValue::Int(5))));
}

#[test]
fn workflow_observability_and_unknown_events_are_task_span_events() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    for (i, name) in [
        "workflow.viable_steps_discovered",
        "observability.task.enqueue",
        "workflow.task_reenqueue_delayed",
        "custom.something_happened",
    ]
    .into_iter()
    .enumerate()
    {
        let e = ev(name, 1, at(1 + i as u64)).with_attr(extra("count"), 2);
        assert_eq!(t.record(e), O::EventAdded, "{name}");
    }
    t.record(ev("observability.step.skip", 1, at(9)).with_step(5));
    t.record(task_completed(1, at(10), false));
    let run = only_run(&t);
    let root = run.root().unwrap();
    assert_eq!(root.events.len(), 5);
    assert_eq!(
        root.events[2].name.as_str(),
        "workflow.task_reenqueue_delayed"
    );
    assert_eq!(
        root.events[0].attributes,
        [(extra("count"), AttrValue::Int(2))]
    );
    assert_eq!(
        root.events[4].attributes,
        [(AttrKey::StepId, AttrValue::Int(5))]
    );
    assert_eq!(root.attr("count"), None);
}

#[test]
fn integer_and_string_ids_are_the_same_task_and_step() {
    let t = tracer();
    t.record(start_requested(42, at(0)));
    assert_eq!(
        t.record(step_ev("step.execution_requested", "42", "7", 1, at(1))),
        O::AttemptOpened
    );
    assert_eq!(
        t.record(step_ev("step.completed", 42, 7, 1, at(2))),
        O::AttemptClosed
    );
    t.record(task_completed("42", at(3), false));
    let run = only_run(&t);
    assert_eq!(run.task_id, Some(Id::Int(42)));
    assert_eq!(int(&run.attempts()[0], "step_id"), Some(7));
    // Non-numeric ids stay strings.
    t.record(start_requested("a-uuid", at(10)));
    t.record(step_ev("step.before_handle", "a-uuid", "s-1", 1, at(11)));
    t.record(task_completed("a-uuid", at(12), false));
    let run = only_run(&t);
    assert_eq!(
        text(run.root().unwrap(), "task_id").as_deref(),
        Some("a-uuid")
    );
    assert_eq!(text(&run.attempts()[0], "step_id").as_deref(), Some("s-1"));
}

#[test]
fn typed_and_extra_attributes_are_stored_on_their_span() {
    let t = tracer();
    let start = start_requested(1, at(0))
        .with_attr(extra("priority"), 2.5)
        .with_attr(extra("urgent"), true)
        .with_attr(extra("api_key"), "[FILTERED]")
        .with_attr(
            extra("tags"),
            AttrValue::Array(vec![AttrValue::from("eu"), AttrValue::Int(1)].into()),
        )
        // Identity comes from the ids, never from the attributes.
        .with_attr(AttrKey::TaskId, 999);
    t.record(start);
    t.record(task_completed(1, at(1), false));
    let run = only_run(&t);
    let root = run.root().unwrap();
    assert_eq!(root.attr("priority"), Some(&AttrValue::Float(2.5)));
    assert_eq!(root.attr("urgent"), Some(&AttrValue::Bool(true)));
    assert_eq!(text(root, "api_key").as_deref(), Some("[FILTERED]"));
    assert!(matches!(root.attr("tags"), Some(AttrValue::Array(a)) if a.len() == 2));
    assert_eq!(int(root, "task_id"), Some(1));
    assert_eq!(
        root.attributes
            .iter()
            .filter(|(k, _)| *k == AttrKey::TaskId)
            .count(),
        1
    );
}

#[test]
fn open_runs_show_in_snapshots_as_they_stand() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 5, 1, at(1)));
    assert!(t.snapshot(false).is_empty());
    let open = t.snapshot(true);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].end, RunEnd::Open);
    assert_eq!(open[0].root().unwrap().end, None);
    assert_eq!(open[0].attempts()[0].end, None);
    assert_eq!(t.stats().open_runs, 1, "a snapshot removes nothing");
}
