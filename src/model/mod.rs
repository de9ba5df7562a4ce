//! The two bounded sources of traces: the drop-in backend's store and the
//! lifecycle tracer.
//!
//! - [`backend`]: the ordered, bounded trace store
//! - [`lifecycle`]: one trace per task run, with its bounds
//! - [`sampling`]: which runs leave the process (head ratio, keep rules)
//! - [`source`]: what both give an export ([`Source`]): take, put back, counts

pub mod backend;
pub mod lifecycle;
pub mod sampling;
pub mod source;

pub use source::{Source, Take, Taken};
