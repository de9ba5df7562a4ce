//! Export: traces taken from the model, encoded and sent, and what was not
//! delivered put back; the background exporter does the same on a schedule.
//!
//! - [`pipeline`]: the one path, take → encode → send → put back, used by
//!   `export_otlp` ([`encode_export`]), `push_otlp` and the background
//!   exporter ([`push`])
//! - [`sources`]: the store and the lifecycle tracer as one export's sources
//! - [`retry_queue`]: what the background exporter could not deliver, and
//!   its backoff between failed exports
//! - [`background`]: the background exporter ([`Exporter`]): lazily started,
//!   fork-aware, flush and shutdown
//! - `state` (private): what its thread and the app's threads share
//! - `worker` (private): its thread's loop
//! - [`settings`]: its settings and their `OTEL_*` defaults
//! - [`stats`]: its counters, flush results, `exporter_stats`
//! - [`console`]: the console sink (each run drawn as a waterfall)
//! - [`announce`]: drops and failing exports announced, a line a minute at most

pub mod announce;
pub mod background;
pub mod console;
pub mod pipeline;
pub mod retry_queue;
pub mod settings;
pub mod sources;
mod state;
pub mod stats;
mod worker;

pub use background::Exporter;
pub use pipeline::{
    deliver, encode_export, push, Batch, Encoded, PushOutcome, Sending, EXPLICIT_SETTLE,
};
pub use settings::{BackgroundSettings, Mode, Schedule};
pub use sources::{Dropped, ExporterTake, Sources};
pub use state::{DestinationFn, Running, Wait};
pub use stats::{ExportOutcome, ExporterStats, FlushResult, LastError};
