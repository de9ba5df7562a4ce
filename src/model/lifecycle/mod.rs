//! The lifecycle tracer: Tasker's published lifecycle events made into one
//! trace per task run, with a root span per run and a child span per step
//! attempt, as Tasker's own OpenTelemetry subscriber means them but without
//! its defects (duplicates opening spans, zero-length step spans, error
//! messages lost, runs never ended, unbounded unlocked state).
//!
//! The binding reads each event's payload once, reads the clock once and
//! hands a [`LifecycleEvent`] to [`Tracer::record`]; exporters take finished
//! runs with [`Tracer::drain_finished`] as plain [`Run`] data.
//!
//! [`LifecycleEvent`]: crate::input::lifecycle::LifecycleEvent
//!
//! # Rules
//!
//! | Event | Effect |
//! |---|---|
//! | `task.start_requested` with `to_state` `in_progress` (the state machine's copy, in the process that runs the task), no open run | opens a run: root span `tasker.task.execution`, linked to the task's previous run if remembered |
//! | `task.start_requested` without it (creation, the initializer's copy), no open run | ignored: creation and enqueueing open nothing |
//! | `task.start_requested`, open run | merges its attributes into the root |
//! | `task.completed` / `task.failed` | ends the root: OK / ERROR with the `error` attribute as message |
//! | `task.failed` without a task id (creation failed) | a finished run of one span `tasker.task.initialize`, ERROR with the message |
//! | `task.cancelled` | ends the root: ERROR "cancelled", plus a `task.cancelled` span event |
//! | `task.resolved_manually` | ends the root: OK, plus a `task.resolved_manually` span event |
//! | `task.initialize_requested`, open run (re-enqueued) | ends the root: UNSET, plus a `task.pending` span event |
//! | `task.initialize_requested`, run ended pending and waiting | merges (the finalizer's copy brings the counts) |
//! | `step.execution_requested` / `step.before_handle`, no open attempt of the step | opens an attempt span `tasker.step.execution` (`before_handle` is also a span event on it) |
//! | `step.execution_requested`, open attempt | merges into it |
//! | `step.before_handle`, open attempt | span event on it |
//! | `step.completed` / `step.failed` / `step.cancelled` / `step.resolved_manually` | ends the open attempt with the same statuses as the task's, and sets `execution_duration` to its measured seconds; on an ended attempt, merges (duplicates) |
//! | the same with no attempt of that step in the run | orphaned: a span event on the root, with `step_id` |
//! | `observability.step.backoff` | span event on the step's open attempt, else on the root |
//! | `task.before_transition`, `step.initialize_requested`, `observability.task.enqueue`, `step.retry_requested` | span event on the open run's root; with no open run, ignored (never attached to a finished run) |
//! | `workflow.*`, `observability.task.*`, other names | span event on the root |
//!
//! - A finished run waits for export and still takes duplicates: closing
//!   events merge (the second `task.completed` brings the counts, the second
//!   `task.failed` the error message, the second `task.initialize_requested`
//!   the counts of a pending run), attempts still open can close, span
//!   events are added; nothing opens. Its root ends at the latest event it
//!   took, so finalization events that arrive before export lie inside it.
//!   After export, events of that run count as late. Events of a task with
//!   no run known count as orphaned; events without a task id as ignored.
//! - Attempt spans start when their first opening event arrives and end when
//!   their first closing event does (the native clock, real durations;
//!   Tasker's `execution_duration` is never used). An attempt still open
//!   when its run is exported ends with the root (UNSET). A span event never
//!   lies before its span's start.
//! - Merging: `attempt_number` keeps the highest, `exception_class` comes
//!   from `error_class` when present, else from the first `exception_class`;
//!   other keys take the newest value.
//! - Bounds ([`LifecycleLimits`]): open runs (the least recently active is
//!   evicted), spans and span events per run (the oldest span event or closed
//!   attempt goes; open attempts and the root stay, else the new entry is
//!   refused), finished runs waiting (the oldest is dropped; failed
//!   creations count as runs); an open run idle for the TTL expires. All of
//!   it is counted in [`LifecycleStats`] and nothing evicted, expired or
//!   dropped is exported.
//! - The task's previous run is remembered (for links and to tell late events
//!   from orphans) for up to `max_open_runs + max_finished_runs` tasks.

mod limits;
mod model;
mod open_runs;
mod run;
mod thread_views;
mod tracer;

pub use limits::{
    LifecycleLimits, ATTRIBUTE_PREFIX_EXPECTED, DEFAULT_ATTRIBUTE_PREFIX, DEFAULT_LIFECYCLE_TTL,
    DEFAULT_MAX_FINISHED_RUNS, DEFAULT_MAX_OPEN_RUNS, DEFAULT_MAX_SPANS_PER_RUN,
    POSITIVE_INTEGER_EXPECTED, TTL_EXPECTED,
};
pub use model::{LifecycleStats, RecordOutcome};
pub use run::{
    Link, Run, RunEnd, Span, SpanChange, SpanEvent, SpanRef, SpanStatus, StatusCode,
    STEP_SPAN_NAME, TASK_INIT_SPAN_NAME, TASK_SPAN_NAME,
};
pub use thread_views::Answer;
pub use tracer::{ExportRuns, Tracer, TracerTake};
