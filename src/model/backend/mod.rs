//! The drop-in trace backend: what `Tasker::Telemetry::TraceBackend` does,
//! natively.
//!
//! - [`store`]: the ordered, bounded trace store, its counters and [`Backend`]
//! - [`routing`]: event kinds from names, finish status
//! - [`keys`]: trace keys from payload fields
//! - [`limits`]: the store's limits and their validation

pub mod keys;
pub mod limits;
pub mod routing;
pub mod store;

pub use keys::{KeyField, KeySource};
pub use limits::Limits;
pub use routing::{EventKind, Status};
pub use store::{Backend, Event, Outcome, Record, Snapshot, Stats};
