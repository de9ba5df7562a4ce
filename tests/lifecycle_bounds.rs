//! Bounds, TTL expiry, export (drain exactly once, settling, restore),
//! configuration, reset and the counters.

mod lifecycle_support;

use std::collections::HashSet;
use std::time::Duration;

use lifecycle_support::*;
use tasker_trace_core::model::lifecycle::{
    LifecycleLimits, LifecycleStats, RecordOutcome as O, RunEnd, StatusCode, Tracer,
};

fn run_of(t: &Tracer, task: i64, t0: u64) {
    t.record(start_requested(task, at(t0)));
    t.record(task_completed(task, at(t0 + 1), false));
}

#[test]
fn the_least_recently_active_open_run_is_evicted_first() {
    let t = Tracer::new(limits(2, 100, 100, 3600));
    t.record(start_requested(1, at(0)));
    t.record(start_requested(2, at(1)));
    // Task 1 is active again: task 2 is now the least recently active.
    t.record(ev("workflow.viable_steps_discovered", 1, at(2)));
    assert_eq!(t.record(start_requested(3, at(3))), O::RunOpened);
    let stats = t.stats();
    assert_eq!((stats.open_runs, stats.runs_evicted), (2, 1));
    assert_eq!(t.record(task_completed(2, at(4), false)), O::Orphaned);
    assert_eq!(t.record(task_completed(1, at(5), false)), O::RunClosed);
    assert_eq!(t.record(task_completed(3, at(6), false)), O::RunClosed);
    let tasks: Vec<_> = drain(&t).into_iter().filter_map(|r| r.task_id).collect();
    assert_eq!(tasks, [1.into(), 3.into()]);
}

#[test]
fn span_events_beyond_the_run_bound_push_out_the_oldest() {
    // Root + 3 entries.
    let t = Tracer::new(limits(10, 4, 10, 3600));
    t.record(start_requested(1, at(0)));
    for i in 0..5 {
        let e =
            ev("workflow.viable_steps_discovered", 1, at(1 + i)).with_attr(extra("n"), i as i64);
        assert_eq!(t.record(e), O::EventAdded);
    }
    assert_eq!(t.stats().spans_dropped, 2);
    t.record(task_completed(1, at(10), false));
    let run = only_run(&t);
    let ns: Vec<_> = run.root().unwrap().events.iter().map(|e| e.at).collect();
    assert_eq!(ns, [at(3), at(4), at(5)], "the two oldest went");
}

#[test]
fn a_closed_attempt_goes_with_its_events_and_open_attempts_stay() {
    let t = Tracer::new(limits(10, 5, 10, 3600));
    t.record(start_requested(1, at(0)));
    // Attempt of step 1, closed, with a before_handle event: 2 entries.
    t.record(step_ev("step.before_handle", 1, 1, 1, at(1)));
    t.record(step_ev("step.completed", 1, 1, 1, at(2)));
    // Open attempt of step 2: 1 entry. Root + 3 = 4.
    t.record(step_ev("step.execution_requested", 1, 2, 1, at(3)));
    assert_eq!(
        t.record(ev("workflow.steps_execution_started", 1, at(4))),
        O::EventAdded
    );
    assert_eq!(t.stats().spans_dropped, 0);
    // Full: the oldest entry is the closed attempt of step 1.
    assert_eq!(
        t.record(ev("workflow.steps_execution_started", 1, at(5))),
        O::EventAdded
    );
    assert_eq!(t.stats().spans_dropped, 2, "the attempt and its event");
    let open = t.snapshot(true);
    let run = &open[0];
    assert_eq!(run.attempts().len(), 1);
    assert_eq!(int(&run.attempts()[0], "step_id"), Some(2));
    assert_eq!(run.root().unwrap().events.len(), 2);
    // A late duplicate for the evicted attempt is kept on the root.
    assert_eq!(
        t.record(step_ev("step.completed", 1, 1, 1, at(6))),
        O::OrphanRecorded
    );
}

#[test]
fn a_run_full_of_open_attempts_refuses_new_entries() {
    let t = Tracer::new(limits(10, 3, 10, 3600));
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 1, 1, at(1)));
    t.record(step_ev("step.execution_requested", 1, 2, 1, at(2)));
    assert_eq!(
        t.record(step_ev("step.execution_requested", 1, 3, 1, at(3))),
        O::Dropped
    );
    assert_eq!(
        t.record(ev("workflow.steps_execution_started", 1, at(4))),
        O::Dropped
    );
    // Merges and closes need no room.
    assert_eq!(
        t.record(step_ev("step.execution_requested", 1, 2, 1, at(5))),
        O::Merged
    );
    assert_eq!(
        t.record(step_ev("step.completed", 1, 2, 1, at(6))),
        O::AttemptClosed
    );
    let stats = t.stats();
    assert_eq!((stats.events_dropped, stats.spans_dropped), (2, 2));
    t.record(task_completed(1, at(7), false));
    let run = only_run(&t);
    assert_eq!(run.spans.len(), 3);
}

#[test]
fn the_oldest_finished_run_is_dropped_beyond_the_bound() {
    let t = Tracer::new(limits(10, 10, 2, 3600));
    for task in 1..=3 {
        run_of(&t, task, task as u64 * 10);
    }
    let stats = t.stats();
    assert_eq!((stats.finished_runs, stats.finished_runs_dropped), (2, 1));
    let tasks: Vec<_> = drain(&t).into_iter().filter_map(|r| r.task_id).collect();
    assert_eq!(tasks, [2.into(), 3.into()]);
    // The dropped run's late duplicate is late, not merged into anything.
    assert_eq!(t.record(task_completed(1, at(100), true)), O::Late);
}

#[test]
fn runs_expire_a_ttl_after_their_last_activity() {
    let t = Tracer::new(limits(10, 100, 10, 60));
    t.record(start_requested(1, secs(0)));
    t.record(start_requested(2, secs(10)));
    // Activity at 50 s keeps task 1 alive past 60 s.
    t.record(ev("workflow.viable_steps_discovered", 1, secs(50)));
    // An event at 70 s expires task 2 (idle 60 s), checked on the way in.
    assert_eq!(t.record(start_requested(3, secs(70))), O::RunOpened);
    let stats = t.stats();
    assert_eq!((stats.open_runs, stats.runs_expired), (2, 1));
    assert_eq!(t.record(task_completed(2, secs(71), false)), O::Orphaned);
    assert_eq!(t.record(task_completed(1, secs(109), false)), O::RunClosed);
    // Finished runs do not expire; they wait for export.
    assert_eq!(t.expire_at(secs(1_000)), 1, "task 3");
    let runs = t.drain_finished_at(secs(1_000), Duration::ZERO);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].end, RunEnd::Completed);
    assert_eq!(t.stats().runs_expired, 2);
}

#[test]
fn events_waiting_to_be_read_hold_expiry_back_but_not_settling() {
    // The binding leaves step events waiting and reads them later, in
    // order, at their own stamps: until then, runs are expired on the clock
    // no further than the oldest waiting event, which may keep one alive.
    let t = Tracer::new(limits(10, 100, 10, 60));
    t.record(start_requested(1, secs(0)));
    run_of(&t, 2, 1);
    t.hold_expiry(Some(secs(50).mono_ns));
    assert_eq!(
        t.expire_at(secs(100)),
        0,
        "idle 50 s as of the waiting event"
    );
    // Finished runs still settle on the real clock.
    assert_eq!(
        t.drain_finished_at(secs(100), Duration::from_secs(5)).len(),
        1
    );
    assert_eq!(t.stats().open_runs, 1);
    // The waiting event is read: it kept task 1 alive.
    t.record(ev("workflow.viable_steps_discovered", 1, secs(50)));
    t.hold_expiry(None);
    assert_eq!(t.expire_at(secs(100)), 0);
    assert_eq!(t.expire_at(secs(110)), 1);
    // Held at a stamp past the TTL, expiry happens as it would have then.
    t.record(start_requested(3, secs(200)));
    t.hold_expiry(Some(secs(270).mono_ns));
    assert_eq!(t.expire_at(secs(400)), 1);
}

#[test]
fn expiry_looks_only_at_the_least_recently_active_runs() {
    let t = Tracer::new(limits(100, 100, 100, 60));
    for task in 0..50 {
        t.record(start_requested(task, secs(task as u64)));
    }
    // At 80 s runs idle since 20 s or before have expired: tasks 0..=20.
    assert_eq!(t.expire_at(secs(80)), 21);
    assert_eq!(t.stats().open_runs, 29);
    assert_eq!(t.expire_at(secs(80)), 0);
}

#[test]
fn drain_returns_each_finished_run_exactly_once() {
    let t = tracer();
    for task in 0..10 {
        run_of(&t, task, task as u64);
    }
    t.record(start_requested(99, at(50)));
    let first = drain(&t);
    assert_eq!(first.len(), 10);
    let ids: HashSet<_> = first.iter().map(|r| r.trace_id).collect();
    assert_eq!(ids.len(), 10);
    assert!(drain(&t).is_empty());
    assert_eq!(t.stats().open_runs, 1, "open runs are not drained");
}

#[test]
fn runs_finished_less_than_settled_for_ago_stay_for_their_duplicates() {
    let t = tracer();
    t.record(start_requested(1, at(0)));
    t.record(task_completed(1, at(1_000), false));
    let settle = Duration::from_millis(1_500);
    assert!(t.drain_finished_at(at(2_000), settle).is_empty());
    // The finalizer's task.completed lands meanwhile and restarts the wait.
    assert_eq!(t.record(task_completed(1, at(2_100), true)), O::Merged);
    assert!(t.drain_finished_at(at(3_000), settle).is_empty());
    let runs = t.drain_finished_at(at(3_600), settle);
    assert_eq!(runs.len(), 1);
    assert_eq!(int(runs[0].root().unwrap(), "total_steps"), Some(3));
    // The root ends at the run's last event: the duplicate lies inside it.
    assert_eq!(runs[0].root().unwrap().end, Some(at(2_100)));
}

#[test]
fn restored_runs_come_back_first_within_the_bound() {
    let t = Tracer::new(limits(10, 10, 3, 3600));
    run_of(&t, 1, 0);
    run_of(&t, 2, 10);
    let delivered = drain(&t);
    assert_eq!(delivered.len(), 2);
    run_of(&t, 3, 20);
    t.restore(delivered.clone());
    assert_eq!(t.stats().finished_runs, 3);
    let again = drain(&t);
    assert_eq!(&again[..2], &delivered[..], "restored unchanged, first");
    assert_eq!(again[2].task_id, Some(3.into()));
    // Over the bound: the oldest (restored) runs go first.
    run_of(&t, 4, 30);
    run_of(&t, 5, 40);
    t.restore(again);
    let stats = t.stats();
    assert_eq!((stats.finished_runs, stats.finished_runs_dropped), (3, 2));
    let tasks: Vec<_> = drain(&t).into_iter().filter_map(|r| r.task_id).collect();
    assert_eq!(tasks, [3.into(), 4.into(), 5.into()]);
    // A restored run takes no more merges.
    t.restore(vec![]);
    assert_eq!(t.record(task_completed(5, at(50), true)), O::Late);
}

#[test]
fn snapshots_copy_and_remove_nothing() {
    let t = tracer();
    run_of(&t, 1, 0);
    t.record(start_requested(2, at(5)));
    assert_eq!(t.snapshot(false).len(), 1);
    let all = t.snapshot(true);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].end, RunEnd::Open);
    assert_eq!(all[1].root().unwrap().status.code, StatusCode::Unset);
    // The finished run is still there, and drains as the snapshot showed it.
    assert_eq!(drain(&t), all[..1]);
    assert_eq!(t.snapshot(true).len(), 1);
}

#[test]
fn lower_limits_take_effect_at_once() {
    let t = tracer();
    for task in 0..5 {
        t.record(start_requested(task, at(task as u64)));
    }
    for task in 10..14 {
        run_of(&t, task, 10 + task as u64);
    }
    let lower = limits(2, 10, 1, 3600);
    t.configure(lower);
    assert_eq!(t.limits(), lower);
    let stats = t.stats();
    assert_eq!((stats.open_runs, stats.runs_evicted), (2, 3));
    assert_eq!((stats.finished_runs, stats.finished_runs_dropped), (1, 3));
    assert_eq!(drain(&t)[0].task_id, Some(13.into()));
    // Zeros are raised to the smallest valid bound instead of wedging.
    t.configure(limits(0, 0, 0, 0));
    assert_eq!(t.stats().open_runs, 1);
    assert_eq!(t.record(start_requested(20, at(100))), O::RunOpened);
}

#[test]
fn reset_forgets_runs_and_counters_but_keeps_limits() {
    let t = Tracer::new(limits(3, 10, 10, 3600));
    run_of(&t, 1, 0);
    t.record(start_requested(2, at(5)));
    t.record(task_completed(7, at(6), false));
    t.reset();
    assert_eq!(t.stats(), LifecycleStats::default());
    assert!(t.snapshot(true).is_empty());
    assert_eq!(t.limits().max_open_runs, 3);
    // History is gone too: a late event is now an orphan.
    assert_eq!(t.record(task_completed(1, at(7), true)), O::Orphaned);
}

#[test]
fn every_event_is_counted_once() {
    let t = Tracer::new(limits(10, 3, 10, 3600));
    let mut events = successful_run(1, 0);
    events.push(task_completed(8, at(200), false));
    events.push(ev("task.initialize_requested", 8, at(201)));
    let n = events.len() as u64;
    record_all(&t, events);
    // Refused by the binding before they became events.
    t.refuse();
    t.refuse();
    let stats = t.stats();
    assert_eq!(stats.events_seen(), n + 2);
    assert_eq!(stats.events_refused, 2);
    // 5 workflow events, 3 attempts, 3 before_handle events: 11 entries,
    // 2 kept besides the root; there is always an older one to evict, so no
    // event is refused.
    assert_eq!((stats.spans_dropped, stats.events_dropped), (9, 0));
    assert_eq!((stats.events_orphaned, stats.events_ignored), (1, 1));
}

#[test]
fn limits_are_validated_with_the_setting_named() {
    let e = LifecycleLimits::from_raw(10, 0, 10, 60.0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "lifecycle_max_spans_per_run must be a positive Integer (got 0)"
    );
    assert_eq!(
        LifecycleLimits::from_raw(10, 10, 10, 0.25).unwrap().ttl,
        Duration::from_millis(250)
    );
}

fn task_ids(runs: &[tasker_trace_core::model::lifecycle::Run]) -> Vec<i64> {
    runs.iter()
        .filter_map(|r| match r.task_id {
            Some(tasker_trace_core::input::lifecycle::Id::Int(i)) => Some(i),
            _ => None,
        })
        .collect()
}

#[test]
fn with_an_exporter_the_oldest_settling_run_is_settled_at_the_bound_not_dropped() {
    let t = Tracer::new(limits(10, 10, 2, 3600));
    t.set_export_settle(Some(Duration::from_secs(1)));
    for task in 1..=3 {
        run_of(&t, task, task as u64 * 10);
    }
    let stats = t.stats();
    assert_eq!((stats.finished_runs, stats.finished_runs_dropped), (3, 0));
    // Run 1 settled early: it takes no more merges; run 3 still does.
    assert_eq!(t.record(task_completed(1, at(40), true)), O::Late);
    assert_eq!(t.record(task_completed(3, at(41), true)), O::Merged);
    // A scheduled take (settle 1 s) gets only the settled run.
    let taken = t.drain_finished_at(at(50), Duration::from_secs(1));
    assert_eq!(task_ids(&taken), [1]);
    assert_eq!(task_ids(&drain(&t)), [2, 3]);
}

#[test]
fn with_an_exporter_settled_runs_have_their_own_bound_oldest_dropped() {
    let t = Tracer::new(limits(10, 10, 2, 3600));
    t.set_export_settle(Some(Duration::from_secs(1)));
    for task in 1..=6 {
        run_of(&t, task, task as u64 * 10);
    }
    let stats = t.stats();
    assert_eq!((stats.finished_runs, stats.finished_runs_dropped), (4, 2));
    assert_eq!(task_ids(&drain(&t)), [3, 4, 5, 6]);
}

#[test]
fn with_an_exporter_a_run_idle_for_the_settle_time_is_settled_at_the_next_finish() {
    let t = Tracer::new(limits(10, 10, 100, 3600));
    t.set_export_settle(Some(Duration::from_secs(1)));
    run_of(&t, 1, 0);
    run_of(&t, 2, 2_000);
    assert_eq!(t.record(task_completed(1, at(2_100), true)), O::Late);
    assert_eq!(t.record(task_completed(2, at(2_100), true)), O::Merged);
    let taken = t.drain_finished_at(at(2_200), Duration::from_secs(1));
    assert_eq!(task_ids(&taken), [1]);
    // Turned off, one bound covers every waiting run again.
    t.set_export_settle(None);
    assert_eq!(task_ids(&drain(&t)), [2]);
}

#[test]
fn an_export_that_takes_everything_swaps_the_finished_runs_out() {
    let t = tracer();
    for task in 1..=3 {
        run_of(&t, task, task as u64 * 10);
    }
    assert_eq!(task_ids(&drain(&t)), [1, 2, 3]);
    assert_eq!(t.record(task_completed(2, at(100), true)), O::Late);
    assert_eq!(
        t.record(ev("task.initialize_requested", 3, at(101))),
        O::Ignored
    );
    // The task's next run opens as usual.
    assert_eq!(t.record(start_requested(3, at(102))), O::RunOpened);
}

#[test]
fn dropped_runs_roots_are_told_once_newest_last() {
    let t = Tracer::new(limits(1, 100, 100, 60));
    t.record(start_requested(1, at(0)));
    let first = t.snapshot(true)[0].root().unwrap().span_id;
    assert_eq!(t.dropped_roots_since(0), (0, vec![]));
    // Evicted past max_open_runs.
    t.record(start_requested(2, at(1)));
    let second = t.snapshot(true)[0].root().unwrap().span_id;
    assert_eq!(t.dropped_roots_since(0), (1, vec![first]));
    // Expired past the TTL.
    assert_eq!(t.expire_at(secs(1_000)), 1);
    assert_eq!(t.dropped_roots_since(0), (2, vec![first, second]));
    assert_eq!(t.dropped_roots_since(1), (2, vec![second]));
    assert_eq!(t.dropped_roots_since(2), (2, vec![]));
    // A finished run is not dropped.
    run_of(&t, 3, 2_000_000_000_000);
    assert_eq!(t.dropped_roots_since(2), (2, vec![]));
}

#[test]
fn a_fork_child_discards_its_parents_finished_runs_and_keeps_its_own_in_place() {
    let t = Tracer::new(limits(10, 100, 100, 3600));
    t.set_export_settle(Some(Duration::from_secs(1)));
    run_of(&t, 1, 0); // the parent's: ended at 1 ms
                      // The child's own, ended after the fork at 3 ms, still settling.
    t.record(start_requested(2, at(5)));
    t.record(task_completed(2, at(6), false));
    assert_eq!(t.discard_finished_before(at(3).mono_ns), 1);
    // The finalizer's duplicate still merges into the child's run.
    assert_eq!(t.record(task_completed(2, at(7), true)), O::Merged);
    let stats = t.stats();
    assert_eq!((stats.finished_runs, stats.events_late), (1, 0));
    let run = only_run(&t);
    assert_eq!(run.task_id, Some(2.into()));
}
