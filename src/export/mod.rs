//! Export: traces taken from the model, encoded and sent, and what failed
//! put back; and the background exporter that does it on a schedule.

pub mod background;
pub mod combined;
pub mod pipeline;
pub mod settings;
pub mod sources;
pub mod stats;
mod worker;

pub use background::{Exporter, Running, TargetFn, Wait};
pub use pipeline::{
    export, push_finished, push_finished_with, select, span_count, Export, PartialSuccess,
    PushOutcome,
};
pub use settings::{ExporterConfig, Mode, Schedule};
pub use sources::Sources;
pub use stats::{ExportOutcome, ExporterStats, FlushResult, LastError};
