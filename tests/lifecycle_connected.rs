//! The connected path's model: a run under an OpenTelemetry parent joins its
//! trace, the sampling decision follows the parent's flag, and every event
//! tells which span became current or ended, with the ids that are exported.

mod lifecycle_support;

use lifecycle_support::*;
use tasker_trace_core::input::lifecycle::ParentSpan;
use tasker_trace_core::model::lifecycle::{RecordOutcome, Run, SpanChange, SpanRef, Tracer};

const TRACE: [u8; 16] = [7; 16];
const JOB_SPAN: [u8; 8] = [9; 8];

fn parent(sampled: bool) -> Option<ParentSpan> {
    ParentSpan::new(TRACE, JOB_SPAN, sampled)
}

fn entered(change: Option<SpanChange>) -> SpanRef {
    match change {
        Some(SpanChange::Entered(r)) => r,
        other => panic!("expected a span entered, got {other:?}"),
    }
}

/// Opens task 1's run under an unsampled parent and an attempt of step 5
/// in it: the root and the attempt as entered.
fn open_under_unsampled_parent(t: &Tracer) -> (SpanRef, SpanRef) {
    let root = entered(
        t.record_connected(start_requested(1, at(0)).with_parent(parent(false)))
            .1,
    );
    assert!(!root.sampled);
    let attempt = entered(
        t.record_connected(step_ev("step.execution_requested", 1, 5, 1, at(1)))
            .1,
    );
    (root, attempt)
}

#[test]
fn a_run_under_a_parent_joins_its_trace_and_reports_the_exported_ids() {
    let t = tracer();
    let (outcome, change) = t.record_connected(start_requested(1, at(0)).with_parent(parent(true)));
    assert_eq!(outcome, RecordOutcome::RunOpened);
    let root = entered(change);
    assert_eq!(root.trace_id, TRACE);
    assert_eq!(root.root_span_id, root.span_id);
    assert!(root.sampled);
    // The initializer's copy merges: the root again, whatever its parent.
    let (_, change) = t.record_connected(initializer_start(1, at(1)).with_parent(parent(false)));
    assert_eq!(entered(change), root);

    let (outcome, change) = t.record_connected(step_ev("step.execution_requested", 1, 5, 1, at(2)));
    assert_eq!(outcome, RecordOutcome::AttemptOpened);
    let attempt = entered(change);
    assert_eq!(attempt.root_span_id, root.span_id);
    assert_ne!(attempt.span_id, root.span_id);
    let (_, change) = t.record_connected(step_ev("step.before_handle", 1, 5, 1, at(3)));
    assert_eq!(entered(change), attempt);
    let (outcome, change) = t.record_connected(step_ev("step.completed", 1, 5, 1, at(4)));
    assert_eq!(outcome, RecordOutcome::AttemptClosed);
    assert_eq!(change, Some(SpanChange::Ended(attempt)));
    // A duplicate closing event changes nothing.
    let (_, change) = t.record_connected(step_ev("step.completed", 1, 5, 1, at(5)));
    assert_eq!(change, None);
    let (outcome, change) = t.record_connected(task_completed(1, at(6), false));
    assert_eq!(outcome, RecordOutcome::RunClosed);
    assert_eq!(change, Some(SpanChange::RunEnded(root)));

    let run = only_run(&t);
    assert_eq!(run.trace_id, TRACE);
    assert!(run.sampled);
    assert_eq!(run.spans[0].span_id, root.span_id);
    assert_eq!(run.spans[0].parent_span_id, Some(JOB_SPAN));
    assert_eq!(run.spans[1].span_id, attempt.span_id);
    assert_eq!(run.spans[1].parent_span_id, Some(root.span_id));
}

#[test]
fn without_a_parent_a_run_is_a_new_sampled_trace() {
    let t = tracer();
    let (_, change) = t.record_connected(start_requested(1, at(0)));
    let root = entered(change);
    assert_ne!(root.trace_id, TRACE);
    assert!(root.sampled);
    // A parent with zero ids is no parent.
    assert_eq!(ParentSpan::new([0; 16], JOB_SPAN, true), None);
    assert_eq!(ParentSpan::new(TRACE, [0; 8], true), None);
    t.record(task_completed(1, at(1), false));
    let run = only_run(&t);
    assert_eq!(run.spans[0].parent_span_id, None);
}

#[test]
fn a_run_under_an_unsampled_parent_is_traced_marked_and_not_exported() {
    let t = tracer();
    let (root, attempt) = open_under_unsampled_parent(&t);
    assert!(!attempt.sampled, "its children are marked unsampled");
    assert_eq!(t.snapshot(true).len(), 1, "inspectable while open");
    assert!(!t.snapshot(true)[0].sampled);
    assert!(
        t.export_runs(false, true, std::time::Duration::ZERO)
            .is_empty(),
        "an open unsampled run is not exported"
    );
    let (_, change) = t.record_connected(task_completed(1, at(2), false));
    assert_eq!(change, Some(SpanChange::RunEnded(root)));
    assert!(drain(&t).is_empty());
    let stats = t.stats();
    assert_eq!(stats.sampled_out, 1);
    assert_eq!(stats.finished_runs, 0);
    // The next run (re-enqueued, under a sampled parent) links to it.
    let next = entered(
        t.record_connected(start_requested(1, at(3)).with_parent(parent(true)))
            .1,
    );
    assert!(next.sampled);
    t.record(task_completed(1, at(4), false));
    let run = only_run(&t);
    assert_eq!(run.spans[0].links[0].span_id, root.span_id);
}

#[test]
fn an_attempt_ended_by_another_thread_or_with_its_run_is_reported() {
    let t = tracer();
    let root = entered(t.record_connected(start_requested(1, at(0))).1);
    let a = entered(
        t.record_connected(step_ev("step.execution_requested", 1, 5, 1, at(1)))
            .1,
    );
    // The run is re-enqueued while the attempt is open: the run ends; the
    // attempt ends with it (the Ruby layer detaches it by its root).
    let (outcome, change) = t.record_connected(ev("task.initialize_requested", 1, at(2)));
    assert_eq!(outcome, RecordOutcome::RunClosed);
    assert_eq!(change, Some(SpanChange::RunEnded(root)));
    assert_eq!(a.root_span_id, root.span_id);
    // The attempt's closing event arrives late, while the run waits: ended.
    let (_, change) = t.record_connected(step_ev("step.failed", 1, 5, 1, at(3)));
    assert!(matches!(change, Some(SpanChange::Ended(r)) if r.span_id == a.span_id));
}

#[test]
fn a_failed_run_under_an_unsampled_parent_is_kept_by_the_error_rule() {
    // The head follows the parent (the default sampler is parent-based);
    // the keep rules, on by default, can still add the run when it ends.
    let t = tracer();
    let (root, attempt) = open_under_unsampled_parent(&t);
    assert!(!attempt.sampled, "its children were told: unsampled");
    t.record_connected(step_failed(1, 5, 1, at(2)));
    t.record_connected(task_failed(1, at(3), None));
    let (_, change) = t.record_connected(task_failed(1, at(4), Some("boom")));
    assert_eq!(change, None, "the duplicate ends nothing");
    let stats = t.stats();
    assert_eq!(stats.sampled_out, 0);
    assert_eq!(stats.kept_spans.errors, 2, "the root and the attempt");
    let run = only_run(&t);
    assert_eq!(run.trace_id, TRACE);
    assert!(!run.sampled, "the head decision stays what it was");
    assert_eq!(run.spans[0].span_id, root.span_id);
    assert_eq!(run.spans[0].parent_span_id, Some(JOB_SPAN));
    assert_eq!(run.spans[1].span_id, attempt.span_id);
    // With the error rule off, the same run is dropped when it ends.
    let t = tracer();
    t.set_sampling(tasker_trace_core::model::sampling::Sampling {
        keep_errors: false,
        ..Default::default()
    });
    t.record_connected(start_requested(1, at(0)).with_parent(parent(false)));
    t.record_connected(step_ev("step.execution_requested", 1, 5, 1, at(1)));
    t.record_connected(step_failed(1, 5, 1, at(2)));
    t.record_connected(task_failed(1, at(3), Some("boom")));
    assert!(drain(&t).is_empty());
    assert_eq!(t.stats().sampled_out, 1);
}

/// Task 2's run opening under `current` (the span its thread has current)
/// in a tracer holding one open run, task 1's, which its opening evicts;
/// task 2's run once finished.
fn second_run_evicting_the_first(t: &Tracer, current: Option<ParentSpan>) -> Run {
    let (outcome, change) = t.record_connected(start_requested(2, at(10)).with_parent(current));
    assert_eq!(outcome, RecordOutcome::RunOpened);
    assert_eq!(t.stats().runs_evicted, 1);
    let root = entered(change);
    t.record(task_completed(2, at(11), false));
    let run = only_run(t);
    assert_eq!(run.spans[0].span_id, root.span_id);
    assert_eq!(run.trace_id, root.trace_id);
    run
}

fn as_parent(span: SpanRef) -> Option<ParentSpan> {
    ParentSpan::new(span.trace_id, span.span_id, span.sampled)
}

#[test]
fn a_run_whose_opening_evicts_the_run_current_in_its_thread_is_not_its_child() {
    // Task 1's root is still current in the thread (its run never ended)
    // when task 2 opens there and evicts it: task 2 takes task 1's parent,
    // the job's span, as the context below task 1's would have been.
    let t = Tracer::new(limits(1, 100, 100, 3600));
    let first = entered(
        t.record_connected(start_requested(1, at(0)).with_parent(parent(true)))
            .1,
    );
    let run = second_run_evicting_the_first(&t, as_parent(first));
    assert_eq!(run.trace_id, TRACE);
    assert_eq!(run.spans[0].parent_span_id, Some(JOB_SPAN));
    assert!(run.sampled);

    // The same from one of task 1's open attempts.
    let t = Tracer::new(limits(1, 100, 100, 3600));
    t.record_connected(start_requested(1, at(0)).with_parent(parent(true)));
    let attempt = entered(
        t.record_connected(step_ev("step.execution_requested", 1, 5, 1, at(1)))
            .1,
    );
    let run = second_run_evicting_the_first(&t, as_parent(attempt));
    assert_eq!(run.spans[0].parent_span_id, Some(JOB_SPAN));

    // Task 1 had no parent: task 2 is a new trace.
    let t = Tracer::new(limits(1, 100, 100, 3600));
    let first = entered(t.record_connected(start_requested(1, at(0))).1);
    let run = second_run_evicting_the_first(&t, as_parent(first));
    assert_ne!(run.trace_id, first.trace_id);
    assert_eq!(run.spans[0].parent_span_id, None);

    // A parent that is not task 1's stays the parent.
    let t = Tracer::new(limits(1, 100, 100, 3600));
    t.record_connected(start_requested(1, at(0)).with_parent(parent(true)));
    let other = ParentSpan::new([3; 16], [4; 8], true);
    let run = second_run_evicting_the_first(&t, other);
    assert_eq!(run.trace_id, [3; 16]);
    assert_eq!(run.spans[0].parent_span_id, Some([4; 8]));
}
