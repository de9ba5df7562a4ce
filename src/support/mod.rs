//! Leaf modules every stage uses.
//!
//! - [`clock`]: wall and monotonic clocks, ISO 8601 formatting, unique instants
//! - [`fork`]: fork-safe locks (held over `fork` by a `pthread_atfork` handler)
//! - [`thread`]: native threads: named, with signals blocked
//! - [`interrupt`]: a host's interrupt poll for threads that wait in the core
//! - [`ids`]: OTLP trace and span ids
//! - [`digits`]: decimal digits written on the stack
//! - [`env`](mod@env): environment values: unset, `key=value` lists, warnings
//! - [`protocol`]: the OTLP/HTTP wire format and the request size limit
//! - [`setting_error`]: the error every setting shares
//! - [`warnings`]: warnings about settings and variables, each given once

pub mod clock;
pub mod digits;
pub mod env;
pub mod fork;
pub mod ids;
pub mod interrupt;
pub mod protocol;
pub mod setting_error;
pub mod thread;
pub mod tsc;
pub mod warnings;

pub use setting_error::SettingError;
