//! `TaskerTraceNative::Native`: the module functions and constants the Ruby
//! layer (`lib/`) wraps, one file per area:
//!
//! - [`backend`]: `created_at_ns`, `instance_id`
//! - [`otlp`]: `export_otlp`, `push_otlp`
//! - [`lifecycle`]: the lifecycle tracer: `record_lifecycle_event`,
//!   `lifecycle_stats`, `lifecycle_runs`, the filter decisions
//! - [`context`]: the connected path's questions about the calling thread:
//!   `current_attempt`, `thread_span_held`
//! - [`exporter`]: the background exporter: flush, shutdown, stats
//! - [`settings`]: `settings`, `check_setting`, `apply_settings`,
//!   `setting_warning`, `SETTING_NAMES`

use magnus::{Error, RModule};

pub mod backend;
pub mod context;
pub mod exporter;
pub mod lifecycle;
pub mod otlp;
pub mod settings;

/// Defines every module function and constant of `Native`.
pub fn define(native: RModule) -> Result<(), Error> {
    backend::define(native)?;
    otlp::define(native)?;
    lifecycle::define(native)?;
    context::define(native)?;
    exporter::define(native)?;
    settings::define(native)?;
    Ok(())
}
