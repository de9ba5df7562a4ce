//! Leaf modules every stage uses.
//!
//! - [`clock`]: wall and monotonic clocks, ISO 8601 formatting, unique instants
//! - [`fork`]: fork-safe locks (held over `fork` by a `pthread_atfork` handler)
//! - [`ids`]: OTLP trace and span ids
//! - [`digits`]: decimal digits written on the stack
//! - [`setting_error`]: the error every setting shares

pub mod clock;
pub mod digits;
pub mod fork;
pub mod ids;
pub mod setting_error;

pub use setting_error::SettingError;
