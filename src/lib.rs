//! `tasker_trace_core`: the pure-Rust core of the `tasker_trace_native` gem.
//!
//! It knows nothing of Ruby. The binding crate (`ext/tasker_trace_native`)
//! converts Ruby payloads into [`value::Value`] trees, builds an [`store::Event`]
//! and hands it to the process-wide [`store::Backend`]; exports come back out
//! as a [`store::Snapshot`] that the binding turns into Ruby objects.
//!
//! - [`value`]: the owned payload model (bytes and encodings kept, depth-bounded)
//! - [`routing`]: event kinds from names, finish status
//! - [`keys`]: trace keys from payload fields
//! - [`clock`]: wall and monotonic clocks, ISO 8601 formatting, unique instants
//! - [`config`]: limits and their validation
//! - [`store`]: the ordered, bounded trace store and its counters
//! - [`ids`]: OTLP trace and span ids
//! - [`otlp`]: OTLP/HTTP JSON encoding and delivery to a collector
//! - [`lifecycle`]: Tasker lifecycle events as one trace per task run (root and step attempt spans)

pub mod clock;
pub mod config;
pub mod digits;
pub mod ids;
pub mod keys;
pub mod lifecycle;
pub mod otlp;
pub mod routing;
pub mod store;
pub mod value;

pub use config::{Limits, SettingError};
pub use keys::{KeyField, KeySource};
pub use routing::{EventKind, Status};
pub use store::{Backend, Event, Outcome, Record, Snapshot, Stats};
pub use value::{Encoding, Str, Value};
