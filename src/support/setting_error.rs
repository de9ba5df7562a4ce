//! What every setting shares: the error that names a setting given a value
//! it does not take, and the resource settings OTLP requests carry.
//!
//! The store's limits live beside the store ([`crate::model::backend::limits`]); the
//! binding's `settings.rs` is the one place where Ruby values become settings.

use std::fmt;

use crate::value::Value;

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

/// `service_name` and `resource_attributes`: what describes the process in
/// every OTLP request.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceSettings {
    pub service_name: String,
    /// Extra resource attributes, each key once, in the order given.
    pub attributes: Vec<(String, Value)>,
}

impl ResourceSettings {
    /// The defaults from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
    /// (their values as given, `None` when unset).
    pub fn from_env_values(
        service_name: Option<&str>,
        resource_attributes: Option<&str>,
    ) -> ResourceSettings {
        let (service_name, attrs) =
            crate::transport::env::resource_defaults(service_name, resource_attributes);
        ResourceSettings {
            service_name,
            attributes: attrs
                .into_iter()
                .map(|(k, v)| (k, Value::string(&v)))
                .collect(),
        }
    }
}
