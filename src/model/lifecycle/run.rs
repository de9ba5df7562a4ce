//! Exported runs: plain owned data an OTLP encoder walks, one trace per run.
//!
//! ```text
//! Run
//! ├─ task_id        Id (Integer or String)
//! ├─ trace_id       [u8; 16]
//! ├─ end            RunEnd (Open, Completed, Failed, Pending, Cancelled, ResolvedManually)
//! ├─ sampled        bool: the run's one sampling decision, made when it opens
//! └─ spans          Vec<Span>; spans[0] is the root `tasker.task.execution`,
//!    │              then one `tasker.step.execution` per attempt, by start
//!    ├─ span_id     [u8; 8]
//!    ├─ parent_span_id  the root's: its OpenTelemetry parent (None for a
//!    │                  new trace); an attempt's: the root's span id
//!    ├─ name        &'static str
//!    ├─ start, end  Stamp (wall_ns + mono_ns); end None while open
//!    ├─ status      SpanStatus { code: Unset | Ok | Error, message: Option<Text> }
//!    ├─ attributes  Vec<(AttrKey, AttrValue)>, keys without the service prefix
//!    ├─ events      Vec<SpanEvent { at, name, attributes }>, by arrival
//!    └─ links       Vec<Link { trace_id, span_id }> (root: the task's previous run)
//! ```
//!
//! Shown to Ruby (`TaskerTraceNative.lifecycle_runs`) as one Hash per run with
//! the same names: `{task_id:, trace_id: "<32 hex>", end: :completed, spans:
//! [{span_id: "<16 hex>", parent_span_id: nil | "<16 hex>", name:, start_ns:,
//! end_ns: nil | Integer, status: {code: :unset | :ok | :error, message:},
//! attributes: {"task_id" => 42, ...}, events: [{at_ns:, name:, attributes:}],
//! links: [{trace_id:, span_id:}]}]}` (the binding decides the exact spelling).

use crate::support::clock::Stamp;

use crate::input::lifecycle::attributes::{Attr, AttrValue, Text};
use crate::input::lifecycle::event::{EventName, Id};

/// The root span's name.
pub const TASK_SPAN_NAME: &str = "tasker.task.execution";
/// The one span of a task whose creation failed (`task.failed` without a
/// task id).
pub const TASK_INIT_SPAN_NAME: &str = "tasker.task.initialize";
/// Every attempt span's name.
pub const STEP_SPAN_NAME: &str = "tasker.step.execution";

/// OTLP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        }
    }
}

/// A span's status; only an error carries a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanStatus {
    pub code: StatusCode,
    pub message: Option<Text>,
}

impl SpanStatus {
    pub const UNSET: SpanStatus = SpanStatus {
        code: StatusCode::Unset,
        message: None,
    };
    pub const OK: SpanStatus = SpanStatus {
        code: StatusCode::Ok,
        message: None,
    };

    pub fn error(message: Option<Text>) -> SpanStatus {
        SpanStatus {
            code: StatusCode::Error,
            message,
        }
    }
}

/// A timestamped annotation on a span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    pub at: Stamp,
    pub name: EventName,
    pub attributes: Vec<Attr>,
}

/// A reference to another trace's span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: &'static str,
    pub start: Stamp,
    pub end: Option<Stamp>,
    pub status: SpanStatus,
    pub attributes: Vec<Attr>,
    pub events: Vec<SpanEvent>,
    pub links: Vec<Link>,
}

impl Span {
    /// The attribute stored under the key named `key` (without prefix).
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunEnd {
    /// Still open (only in snapshots that include open runs).
    Open,
    /// `task.completed`: root status OK.
    Completed,
    /// `task.failed`: root status ERROR with the error message.
    Failed,
    /// `task.initialize_requested` while open (re-enqueued): root status UNSET
    /// and a `task.pending` span event.
    Pending,
    /// `task.cancelled`: root status ERROR "cancelled" and a `task.cancelled` event.
    Cancelled,
    /// `task.resolved_manually`: root status OK and a `task.resolved_manually` event.
    ResolvedManually,
}

impl RunEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnd::Open => "open",
            RunEnd::Completed => "completed",
            RunEnd::Failed => "failed",
            RunEnd::Pending => "pending",
            RunEnd::Cancelled => "cancelled",
            RunEnd::ResolvedManually => "resolved_manually",
        }
    }
}

/// One task run: one trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// `None` for a task whose creation failed (it has no id).
    pub task_id: Option<Id>,
    pub trace_id: [u8; 16],
    pub end: RunEnd,
    /// The root first, then the attempts in the order they started.
    pub spans: Vec<Span>,
    /// The head sampling decision, made once when the run opened (see
    /// `State::sampling_decision`): what its children are told. A run left
    /// out there is traced while open (with connected traces its ids go
    /// into the OpenTelemetry context, marked unsampled) and, when it ends,
    /// exported only when a keep rule holds; else dropped, counted as
    /// `sampled_out`.
    pub sampled: bool,
    /// Already drawn by the console exporter (a run put back after a failed
    /// delivery is not drawn twice).
    pub printed: bool,
}

impl Run {
    /// The root span (`tasker.task.execution`).
    pub fn root(&self) -> Option<&Span> {
        self.spans.first()
    }

    /// The attempt spans, in the order they started.
    pub fn attempts(&self) -> &[Span] {
        self.spans.get(1..).unwrap_or(&[])
    }
}

/// A span of a run as the connected path hands it to the binding: what the
/// Ruby layer puts into (or takes out of) the OpenTelemetry context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanRef {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The run's root span id (equal to `span_id` for the root).
    pub root_span_id: [u8; 8],
    /// The run's sampling decision (trace flags bit 0).
    pub sampled: bool,
}

/// What an event did to the spans a publishing thread may hold as its
/// current OpenTelemetry span (see `Tracer::record_connected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanChange {
    /// This span is open and is the event's own (a run opening or merging,
    /// an attempt opening, merging or about to run its handler): current
    /// in the publishing thread from now on.
    Entered(SpanRef),
    /// This attempt ended.
    Ended(SpanRef),
    /// This run ended (its root, and any attempt still open, with it).
    RunEnded(SpanRef),
}
