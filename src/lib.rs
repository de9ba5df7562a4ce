//! `tasker_trace_core`: the pure-Rust core of the `tasker_trace_native` gem.
//!
//! It knows nothing of Ruby. The binding crate (`ext/tasker_trace_native`)
//! converts each Ruby payload straight into a packed [`value::Packed`]
//! buffer, builds an [`backend::Event`] and hands it to the process-wide
//! [`backend::Backend`]; exports come back out as a [`backend::Snapshot`]
//! that the binding turns into Ruby objects.
//!
//! - [`backend`]: the drop-in trace backend: store, routing, keys, limits
//! - [`lifecycle`]: Tasker's lifecycle events as one trace per task run
//!   (root and step attempt spans), the native lifecycle tracer
//! - [`value`]: the owned payload model (bytes and encodings kept, depth-bounded)
//! - [`otlp`]: OTLP/HTTP export (protobuf or JSON) and delivery to any OTLP
//!   backend (https, mTLS, gzip, retries)
//! - [`exporter`]: the background exporter: a native thread that sends
//!   finished traces and runs to a collector on a schedule, fork-aware
//! - [`settings`]: the setting error every entry point shares, resource settings
//! - [`clock`]: wall and monotonic clocks, ISO 8601 formatting, unique instants
//! - [`fork`]: fork-safe locks (held over `fork` by a `pthread_atfork` handler)
//! - [`ids`]: OTLP trace and span ids
//! - [`digits`]: decimal digits written on the stack

pub mod backend;
pub mod clock;
pub mod digits;
pub mod exporter;
pub mod fork;
pub mod ids;
pub mod lifecycle;
pub mod otlp;
pub mod settings;
pub mod value;

pub use backend::{
    Backend, Event, EventKind, KeyField, KeySource, Limits, Outcome, Record, Snapshot, Stats,
    Status,
};
pub use settings::SettingError;
pub use value::{Encoding, Str, Value};
