//! What comes in: events as the binding converts them, before any model
//! sees them.
//!
//! - [`backend`]: the drop-in backend's event kinds, finish status and
//!   trace keys
//! - [`lifecycle`]: Tasker's lifecycle events and their attributes

pub mod backend;
pub mod lifecycle;
