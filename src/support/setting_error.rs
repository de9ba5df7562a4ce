//! What every setting shares: the error that names a setting given a value
//! it does not take.
//!
//! The store's limits live beside the store ([`crate::model::backend::limits`]); the
//! binding's `settings.rs` is the one place where Ruby values become settings.

use std::fmt;

/// A setting given a value it does not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingError {
    pub setting: &'static str,
    pub expected: &'static str,
    pub got: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} must be {} (got {})",
            self.setting, self.expected, self.got
        )
    }
}

impl std::error::Error for SettingError {}
