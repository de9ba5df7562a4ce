//! The drop-in trace backend: what `Tasker::Telemetry::TraceBackend` does,
//! natively.
//!
//! - [`store`]: the ordered, bounded trace store, its counters and [`Backend`]
//! - [`limits`]: the store's limits and their validation
//!
//! What comes in (events, their kinds, trace keys) is in
//! [`crate::input::backend`].

pub mod limits;
pub mod store;

pub use limits::Limits;
pub use store::{Backend, Outcome, Record, Snapshot, Stats};
