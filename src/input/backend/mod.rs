//! The drop-in backend's input: what kind of event a name is, how a
//! finished trace ended, and the trace key a payload gives.
//!
//! - [`routing`]: event kinds from names, finish status
//! - [`keys`]: trace keys from payload fields

pub mod keys;
pub mod routing;

pub use keys::{KeyField, KeySource};
pub use routing::{Route, Status};
