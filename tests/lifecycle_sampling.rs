//! Sampling: the head decision from the trace id, the keep rules at the
//! end, the counts, and what a run left out records.

mod lifecycle_support;

use std::collections::BTreeSet;
use std::time::Duration;

use lifecycle_support::*;
use tasker_trace_core::input::lifecycle::Id;
use tasker_trace_core::model::lifecycle::{StatusCode, Tracer};
use tasker_trace_core::model::sampling::{ratio_sampled, Sampling};

const RUNS: i64 = 10_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Fails,
    Slow,
    Retried,
    Plain,
}

/// 3% fail, 2% are slow, 5% are retried, the rest are plain.
fn kind(i: i64) -> Kind {
    match i % 100 {
        0..=2 => Kind::Fails,
        3..=4 => Kind::Slow,
        5..=9 => Kind::Retried,
        _ => Kind::Plain,
    }
}

/// One run of task `i`, from `t0` ms: one step; a failing run's step and
/// task fail, a slow run's root lasts 5 s, a retried run's step is on its
/// second attempt. Returns the run's trace id and head decision, read
/// while it is open (a run sampling leaves out is freed when it ends).
fn run_of(t: &Tracer, i: i64, t0: u64) -> ([u8; 16], bool) {
    let k = kind(i);
    t.record(start_requested(i, at(t0)));
    let head = t
        .snapshot(true)
        .into_iter()
        .find(|r| r.task_id == Some(Id::Int(i)))
        .map(|r| (r.trace_id, r.sampled))
        .expect("the run is open");
    let attempt = if k == Kind::Retried { 2 } else { 1 };
    t.record(step_ev(
        "step.execution_requested",
        i,
        i * 10,
        attempt,
        at(t0 + 1),
    ));
    if k == Kind::Fails {
        t.record(step_failed(i, i * 10, attempt, at(t0 + 5)));
        t.record(task_failed(i, at(t0 + 6), None));
        t.record(task_failed(i, at(t0 + 7), Some("boom")));
    } else {
        t.record(step_ev("step.completed", i, i * 10, attempt, at(t0 + 5)));
        let end = if k == Kind::Slow {
            t0 + 5_000
        } else {
            t0 + 100
        };
        t.record(task_completed(i, at(end), true));
    }
    head
}

/// Every run left out at its head, the keep rules for errors and retries
/// as given.
fn head_leaves_out(keep_errors: bool, keep_retried: bool) -> Sampling {
    Sampling {
        ratio: 0.0,
        keep_errors,
        keep_retried,
        ..Sampling::default()
    }
}

/// Steps 1 to 9 of task `task`, one completed attempt each, 10 ms apart:
/// in a small run they evict its oldest attempts.
fn completed_steps(t: &Tracer, task: i64) {
    for i in 1..10 {
        let ms = 10 * i as u64;
        t.record(step_ev("step.execution_requested", task, i, 1, at(ms)));
        t.record(step_ev("step.completed", task, i, 1, at(ms + 1)));
    }
}

fn sampler(ratio: f64) -> Sampling {
    Sampling {
        ratio,
        keep_slower_than: Some(Duration::from_secs(2)),
        ..Sampling::default()
    }
}

/// Runs the 10,000 runs with ids from `seed`; returns the exported task
/// ids, the trace ids of every run by task (from the exports and a copy of
/// every run taken before), and the tracer.
/// Every run's task id, trace id and head decision.
type Heads = Vec<(i64, [u8; 16], bool)>;

fn workload(seed: u64) -> (BTreeSet<i64>, Tracer, Heads) {
    let t = tracer();
    t.seed_ids(seed);
    t.set_sampling(sampler(0.1));
    let mut heads = Vec::new();
    let mut exported = BTreeSet::new();
    for i in 0..RUNS {
        let (trace_id, sampled) = run_of(&t, i, i as u64 * 10_000);
        heads.push((i, trace_id, sampled));
        for run in drain(&t) {
            let Some(Id::Int(task)) = run.task_id else {
                panic!("a run without a task id: {run:?}");
            };
            exported.insert(task);
        }
    }
    (exported, t, heads)
}

#[test]
fn every_failing_slow_and_retried_run_is_kept_and_a_tenth_of_the_rest() {
    let (exported, t, heads) = workload(42);
    assert_eq!(heads.len(), RUNS as usize);
    for i in 0..RUNS {
        if kind(i) != Kind::Plain {
            assert!(
                exported.contains(&i),
                "run {i} ({:?}) not exported",
                kind(i)
            );
        }
    }
    let plain = (0..RUNS).filter(|&i| kind(i) == Kind::Plain).count() as f64;
    let plain_exported = exported.iter().filter(|&&i| kind(i) == Kind::Plain).count() as f64;
    // Binomial(9,000, 0.1): mean 900, sigma 28.5; within 5 sigma.
    let sigma = (plain * 0.1 * 0.9).sqrt();
    assert!(
        (plain_exported - plain * 0.1).abs() < 5.0 * sigma,
        "{plain_exported} of {plain} plain runs exported"
    );
    // The head decision is the trace id's, and the plain runs exported are
    // exactly the ones it sampled.
    for (task, trace_id, sampled) in &heads {
        assert_eq!(*sampled, ratio_sampled(trace_id, 0.1));
        if kind(*task) == Kind::Plain {
            assert_eq!(exported.contains(task), *sampled, "task {task}");
        }
    }
    let stats = t.stats();
    assert_eq!(stats.sampled_out, (plain - plain_exported) as u64);
    // The rescued runs (left out at the head, kept by a rule) have two
    // spans each: the root and one attempt.
    let rescued = |k: Kind| {
        heads
            .iter()
            .filter(|(task, _, sampled)| kind(*task) == k && !sampled)
            .count() as u64
            * 2
    };
    assert_eq!(stats.kept_spans.errors, rescued(Kind::Fails));
    assert_eq!(stats.kept_spans.slow, rescued(Kind::Slow));
    assert_eq!(stats.kept_spans.retried, rescued(Kind::Retried));
    assert!(stats.kept_spans.errors > 0 && stats.kept_spans.retried > 0);
}

#[test]
fn the_same_trace_ids_make_the_same_decisions() {
    let (a, _, heads_a) = workload(7);
    let (b, _, heads_b) = workload(7);
    assert_eq!(heads_a, heads_b);
    assert_eq!(a, b);
    let (c, _, _) = workload(8);
    assert_ne!(a, c, "other ids, other decisions");
}

#[test]
fn without_keep_rules_a_run_left_out_records_only_its_end() {
    let t = tracer();
    t.set_sampling(Sampling {
        ratio: 0.0,
        keep_errors: false,
        keep_retried: false,
        keep_slower_than: None,
        parent_based: false,
    });
    record_all(&t, successful_run(1, 0));
    t.record(start_requested(2, at(1_000)));
    t.record(step_ev("step.execution_requested", 2, 20, 1, at(1_001)));
    t.record(step_failed(2, 20, 1, at(1_002)));
    // While open, the run holds its root only.
    let open = t.snapshot(true);
    assert_eq!(open.len(), 1);
    assert!(!open[0].sampled);
    assert_eq!(open[0].spans.len(), 1, "the root only: {:?}", open[0]);
    t.record(task_failed(2, at(1_003), Some("boom")));
    // Both are freed and counted when they end, before any export.
    assert!(t.snapshot(true).is_empty());
    let stats = t.stats();
    assert_eq!(stats.sampled_out, 2);
    assert_eq!(stats.finished_runs, 0);
    assert!(drain(&t).is_empty());
    assert_eq!(t.stats().sampled_out, 2);
    // With a rule on, a run left out is recorded in full (the rule may
    // keep it at the end).
    t.set_sampling(head_leaves_out(true, true));
    t.record(start_requested(3, at(2_000)));
    t.record(step_ev("step.execution_requested", 3, 30, 1, at(2_001)));
    t.record(step_failed(3, 30, 1, at(2_002)));
    t.record(task_failed(3, at(2_003), Some("boom")));
    let kept = only_run(&t);
    assert!(!kept.sampled);
    assert_eq!(kept.spans.len(), 2);
    assert_eq!(t.stats().kept_spans.errors, 2);
}

#[test]
fn a_run_left_out_waits_for_the_attempts_open_at_its_end() {
    let t = tracer();
    t.set_sampling(head_leaves_out(true, false));
    // Task 1's step is still running when the task ends (pending); its
    // failure arrives after: the run is a failure, kept whole.
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 10, 1, at(1)));
    t.record(ev("task.initialize_requested", 1, at(2)));
    assert!(
        t.snapshot(true).is_empty(),
        "undecided, not waiting for export"
    );
    assert_eq!(t.stats().sampled_out, 0);
    t.record(step_failed(1, 10, 1, at(3)));
    let kept = t.snapshot(false);
    assert_eq!(kept.len(), 1, "kept by its late failure: {kept:#?}");
    assert_eq!(kept[0].spans.len(), 2);
    assert_eq!(kept[0].spans[1].status.code, StatusCode::Error);
    assert_eq!(t.stats().kept_spans.errors, 2);
    assert_eq!(drain(&t).len(), 1);
    // Task 2's late closing event is a success: left out, counted when an
    // export takes what waits.
    t.record(start_requested(2, at(10)));
    t.record(step_ev("step.execution_requested", 2, 20, 1, at(11)));
    t.record(task_completed(2, at(12), false));
    t.record(step_ev("step.completed", 2, 20, 1, at(13)));
    assert!(t.snapshot(true).is_empty());
    assert!(drain(&t).is_empty());
    assert_eq!(t.stats().sampled_out, 1);
    assert_eq!(t.stats().events_late, 0);
    // Task 3's next run opens before its step's end arrives: the first run
    // takes no more events and is left out then.
    t.record(start_requested(3, at(20)));
    t.record(step_ev("step.execution_requested", 3, 30, 1, at(21)));
    t.record(ev("task.initialize_requested", 3, at(22)));
    t.record(start_requested(3, at(23)));
    assert_eq!(t.stats().sampled_out, 2);
    t.record(step_failed(3, 30, 1, at(24)));
    t.record(task_completed(3, at(25), false));
    assert!(drain(&t).is_empty(), "the failure went to no run");
    assert_eq!(t.stats().sampled_out, 3);
}

#[test]
fn undecided_runs_are_bounded_by_max_finished_runs() {
    let t = Tracer::new(limits(100, 100, 2, 3600));
    t.set_sampling(head_leaves_out(true, true));
    for i in 0..5 {
        t.record(start_requested(i, at(i as u64 * 10)));
        t.record(step_ev(
            "step.execution_requested",
            i,
            i * 10,
            1,
            at(i as u64 * 10 + 1),
        ));
        t.record(task_completed(i, at(i as u64 * 10 + 2), false));
    }
    // Three went past the bound: left out, counted.
    assert_eq!(t.stats().sampled_out, 3);
    // The two kept undecided still take their late failures.
    t.record(step_failed(4, 40, 1, at(100)));
    t.record(step_failed(0, 0, 1, at(101)));
    let runs = drain(&t);
    assert_eq!(
        runs.iter().map(|r| r.task_id.clone()).collect::<Vec<_>>(),
        vec![Some(Id::Int(4))]
    );
    assert_eq!(t.stats().sampled_out, 4);
}

#[test]
fn a_failed_attempt_evicted_for_room_still_keeps_its_run() {
    // Room for the root and a few entries: the failed first attempt is
    // evicted by the later ones, and the run ends pending (root UNSET).
    let t = Tracer::new(limits(100, 5, 100, 3600));
    t.set_sampling(head_leaves_out(true, false));
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 0, 1, at(1)));
    t.record(step_failed(1, 0, 1, at(2)));
    completed_steps(&t, 1);
    t.record(ev("task.initialize_requested", 1, at(200)));
    let runs = drain(&t);
    assert_eq!(runs.len(), 1, "the run had a failed attempt: kept");
    assert!(runs[0].spans.len() <= 5);
    assert!(t.stats().spans_dropped > 0);
    assert_eq!(t.stats().sampled_out, 0);
}

#[test]
fn with_the_background_exporter_an_undecided_run_is_decided_once_it_settled() {
    let t = tracer();
    t.set_export_settle(Some(Duration::from_secs(1)));
    t.set_sampling(head_leaves_out(true, false));
    // Task 1's step ends after the task, within the settle time: kept.
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 10, 1, at(1)));
    t.record(task_completed(1, at(2), false));
    t.record(step_failed(1, 10, 1, at(500)));
    // Task 2's never does: left out once it settled.
    t.record(start_requested(2, at(600)));
    t.record(step_ev("step.execution_requested", 2, 20, 1, at(601)));
    t.record(task_completed(2, at(602), false));
    assert!(t
        .drain_finished_at(at(1_000), Duration::from_secs(1))
        .is_empty());
    assert_eq!(t.stats().sampled_out, 0, "task 2's run is still settling");
    let runs = t.drain_finished_at(at(2_000), Duration::from_secs(1));
    assert_eq!(
        runs.iter().map(|r| r.task_id.clone()).collect::<Vec<_>>(),
        vec![Some(Id::Int(1))]
    );
    assert_eq!(t.stats().sampled_out, 1);
    // Its step's end, once it settled, is late.
    t.record(step_failed(2, 20, 1, at(2_100)));
    assert_eq!(t.stats().events_late, 1);
    assert!(t.drain_finished_at(at(5_000), Duration::ZERO).is_empty());
}

#[test]
fn a_retried_attempt_evicted_for_room_still_keeps_its_run() {
    let t = Tracer::new(limits(100, 5, 100, 3600));
    t.set_sampling(head_leaves_out(false, true));
    // The run after a retry: its first attempt is the retried step's
    // second (attempt_number 2), evicted by the later ones.
    t.record(start_requested(1, at(0)));
    t.record(step_ev("step.execution_requested", 1, 0, 2, at(1)));
    t.record(step_ev("step.completed", 1, 0, 2, at(2)));
    completed_steps(&t, 1);
    t.record(task_completed(1, at(200), false));
    assert_eq!(drain(&t).len(), 1, "the run had a retried step: kept");
    assert!(t.stats().spans_dropped > 0);
    assert_eq!(t.stats().sampled_out, 0);
}
