//! Events from many threads: steps of one task in parallel, thousands of runs
//! at once, and draining while recording. Nothing may be lost or doubled.

mod lifecycle_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use lifecycle_support::*;
use tasker_trace_core::input::lifecycle::{AttrValue, Id, LifecycleEvent};
use tasker_trace_core::model::lifecycle::{RecordOutcome as O, Run, RunEnd, StatusCode, Tracer};
use tasker_trace_core::support::clock::Stamp;

const THREADS: i64 = 8;

/// Records with the real clock, as the binding does.
fn record_now(t: &Tracer, mut e: LifecycleEvent) -> O {
    e.at = Stamp::now();
    t.record(e)
}

/// Checks one run's shape: root first, attempts children of it, ids unique.
fn check_shape(run: &Run) {
    let root = run.root().unwrap();
    assert_eq!(root.parent_span_id, None);
    assert_eq!(int(root, "task_id").map(Id::Int), run.task_id.clone());
    let mut ids = HashSet::new();
    assert!(ids.insert(root.span_id));
    for a in run.attempts() {
        assert_eq!(a.parent_span_id, Some(root.span_id));
        assert!(ids.insert(a.span_id), "span ids unique in a run");
        let (start, end) = (a.start, a.end.unwrap());
        assert!(end.mono_ns >= start.mono_ns);
    }
}

#[test]
fn steps_of_one_task_from_eight_threads() {
    const STEPS: i64 = 20;
    let t = Arc::new(tracer());
    record_now(&t, start_requested(1, at(0)));
    let workers: Vec<_> = (0..THREADS)
        .map(|k| {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                for i in 0..STEPS {
                    let step = k * 100 + i;
                    let s = |name: &str, n| step_ev(name, 1, step, n, at(0));
                    for _ in 0..3 {
                        record_now(&t, s("step.execution_requested", 1));
                    }
                    record_now(&t, s("step.before_handle", 1));
                    for _ in 0..3 {
                        record_now(&t, step_failed(1, step, 1, at(0)));
                    }
                    assert_eq!(record_now(&t, s("step.retry_requested", 1)), O::EventAdded);
                    for e in successful_attempt(1, step, 2, 0, 0) {
                        record_now(&t, e);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    record_now(&t, task_completed(1, at(0), false));
    record_now(&t, task_completed(1, at(0), true));
    let run = only_run(&t);
    check_shape(&run);
    assert_eq!(run.attempts().len(), (THREADS * STEPS * 2) as usize);
    let mut by_step: HashMap<i64, Vec<_>> = HashMap::new();
    for a in run.attempts() {
        by_step
            .entry(int(a, "step_id").unwrap())
            .or_default()
            .push(a);
    }
    assert_eq!(by_step.len(), (THREADS * STEPS) as usize);
    for attempts in by_step.values() {
        let [failed, ok] = &attempts[..] else {
            panic!("two attempts per step: {attempts:#?}");
        };
        assert_eq!(failed.status.code, StatusCode::Error);
        assert_eq!(ok.status.code, StatusCode::Ok);
        assert!(ok.start.mono_ns >= failed.end.unwrap().mono_ns);
        assert_eq!(failed.events.len(), 1);
        assert_eq!(ok.events.len(), 1);
    }
    let root = run.root().unwrap();
    assert_eq!(
        root.events.len(),
        (THREADS * STEPS) as usize,
        "retry events"
    );
    let stats = t.stats();
    assert_eq!(stats.events_seen(), stats.events_recorded);
    assert_eq!(stats.spans_dropped, 0);
}

/// Task id of run `j` of thread `k`.
fn task_of(k: i64, j: i64) -> i64 {
    k * 10_000 + j
}

#[test]
fn thousands_of_runs_from_eight_threads_lose_nothing() {
    const RUNS: i64 = 500;
    let t = Arc::new(tracer());
    let workers: Vec<_> = (0..THREADS)
        .map(|k| {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                // Interleave a few runs per thread so runs overlap in time.
                for chunk in (0..RUNS).collect::<Vec<_>>().chunks(4) {
                    let mut streams: Vec<_> = chunk
                        .iter()
                        .map(|&j| successful_run(task_of(k, j), 0).into_iter())
                        .collect();
                    loop {
                        let mut any = false;
                        for s in streams.iter_mut() {
                            if let Some(e) = s.next() {
                                any = true;
                                let outcome = record_now(&t, e);
                                assert!(
                                    !matches!(outcome, O::Orphaned | O::Late | O::Dropped),
                                    "{outcome:?}"
                                );
                            }
                        }
                        if !any {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let runs = drain(&t);
    assert_eq!(runs.len(), (THREADS * RUNS) as usize);
    let traces: HashSet<_> = runs.iter().map(|r| r.trace_id).collect();
    assert_eq!(traces.len(), runs.len(), "each trace id distinct");
    let tasks: HashSet<_> = runs.iter().map(|r| r.task_id.clone()).collect();
    assert_eq!(tasks.len(), runs.len());
    for run in &runs {
        check_shape(run);
        assert_eq!(run.end, RunEnd::Completed);
        assert_eq!(run.spans.len(), 4);
        let Some(Id::Int(task)) = run.task_id else {
            panic!("integer task ids");
        };
        let steps: Vec<_> = run.attempts().iter().map(|a| int(a, "step_id")).collect();
        assert_eq!(steps, [0, 1, 2].map(|s| Some(task * 10 + s)));
        let root = run.root().unwrap();
        assert_eq!(root.attr("total_steps"), Some(&AttrValue::Int(3)));
        assert_eq!(root.events.len(), 5);
    }
    let stats = t.stats();
    assert_eq!(stats.events_seen(), stats.events_recorded);
    assert_eq!((stats.open_runs, stats.finished_runs), (0, 0));
}

#[test]
fn draining_while_recording_exports_each_run_once() {
    const RUNS: i64 = 300;
    let t = Arc::new(tracer());
    let done = Arc::new(AtomicBool::new(false));
    let drainer = {
        let (t, done) = (Arc::clone(&t), Arc::clone(&done));
        thread::spawn(move || {
            let mut got = Vec::new();
            let mut round = 0_u64;
            loop {
                let last = done.load(Ordering::Acquire);
                let batch = t.drain_finished(Duration::ZERO);
                round += 1;
                // Every fifth delivery fails and puts its runs back.
                if !last && round % 5 == 0 {
                    t.restore(batch);
                } else {
                    got.extend(batch);
                }
                if last {
                    return got;
                }
                thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|k| {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                for j in 0..RUNS {
                    for e in successful_run(task_of(k, j), 0) {
                        record_now(&t, e);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let runs = drainer.join().unwrap();
    let stats = t.stats();
    assert_eq!(
        runs.len(),
        (THREADS * RUNS) as usize,
        "restored runs came back"
    );
    let tasks: HashSet<_> = runs.iter().map(|r| r.task_id.clone()).collect();
    assert_eq!(tasks.len(), runs.len(), "no run exported twice");
    let traces: HashSet<_> = runs.iter().map(|r| r.trace_id).collect();
    assert_eq!(traces.len(), runs.len());
    for run in &runs {
        check_shape(run);
        assert_eq!(run.spans.len(), 4);
    }
    // Every event was counted once; those for runs already exported as late.
    let per_run = successful_run(0, 0).len() as u64;
    assert_eq!(stats.events_seen(), (THREADS * RUNS) as u64 * per_run);
    assert_eq!(stats.finished_runs_dropped, 0);
    assert_eq!(stats.events_orphaned + stats.events_dropped, 0);
}
