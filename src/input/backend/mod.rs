//! The drop-in backend's input: what kind of event a name is, how a
//! finished trace ended, and the trace key a payload gives.
//!
//! - [`event`]: one event, ready to be stored
//! - [`routing`]: event kinds from names, finish status
//! - [`keys`]: trace keys from payload fields

pub mod event;
pub mod keys;
pub mod routing;

pub use event::Event;
pub use keys::{KeyField, KeySource};
pub use routing::{Route, Status};
