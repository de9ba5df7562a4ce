//! What describes the process in every request: the [`Resource`], its
//! settings ([`ResourceSettings`], `service_name` and `resource_attributes`)
//! with their defaults from `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES`, the settings in force ([`ResourceConfig`]),
//! the instrumentation scope's name, and the span limits its requests carry.

use super::limits::SpanLimits;
use crate::support::env::{parse_key_values, set, Warning};
use crate::support::fork::ForkSafeMutex;
use crate::value::{Packed, Value};

/// The variable that names the service.
pub const SERVICE_NAME_VARIABLE: &str = "OTEL_SERVICE_NAME";
/// The variable of extra resource attributes.
pub const RESOURCE_ATTRIBUTES_VARIABLE: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// The instrumentation scope's name.
pub const SCOPE_NAME: &str = "tasker_trace_native";

/// The service name when neither a setting nor the environment names one.
pub const DEFAULT_SERVICE_NAME: &str = "tasker";

/// The resource settings' defaults: the service name from `OTEL_SERVICE_NAME`,
/// else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else `"tasker"`; the
/// attributes from `OTEL_RESOURCE_ATTRIBUTES` (without `service.name`, which
/// the service name setting carries). A malformed `OTEL_RESOURCE_ATTRIBUTES`
/// is ignored whole, as the specification asks.
pub fn resource_defaults(
    service_name_variable: Option<&str>,
    resource_attributes_variable: Option<&str>,
) -> (String, Vec<(String, String)>) {
    let mut attributes = set(resource_attributes_variable)
        .and_then(|s| parse_key_values(s).ok())
        .unwrap_or_default();
    let from_attributes = attributes
        .iter()
        .rev()
        .find(|(k, _)| k == "service.name")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty());
    attributes.retain(|(k, _)| k != "service.name");
    // Later entries win, as in a map; keep each key once, at its last place.
    let mut deduped: Vec<(String, String)> = Vec::with_capacity(attributes.len());
    for (k, v) in attributes {
        deduped.retain(|(dk, _)| *dk != k);
        deduped.push((k, v));
    }
    let service = set(service_name_variable)
        .map(str::to_string)
        .or(from_attributes)
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    (service, deduped)
}

/// A warning for a malformed `OTEL_RESOURCE_ATTRIBUTES` (which
/// [`resource_defaults`] ignores whole).
pub fn resource_attributes_warning(value: Option<&str>) -> Option<Warning> {
    let message = parse_key_values(set(value)?).err()?;
    Some(Warning::ignored(RESOURCE_ATTRIBUTES_VARIABLE, message))
}

/// What describes the process in every request.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// `service.name`.
    pub service_name: String,
    /// `host.name` (the backend's instance id).
    pub host_name: String,
    /// `process.pid`.
    pub pid: u32,
    /// The gem version: `telemetry.sdk.version` and the scope's version.
    pub version: String,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES` or the setting).
    /// They replace the detected ones of the same key, except `service.name`.
    pub attributes: Vec<(String, Value)>,
    /// The span limits the spans of these requests are cut to (they never
    /// cut the resource's own attributes).
    pub span_limits: SpanLimits,
}

impl Resource {
    /// The resource attributes in order, each key once: `service.name`, the
    /// extra ones, then the detected ones that the extra ones do not replace.
    pub fn attribute_values(&self) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = Vec::with_capacity(self.attributes.len() + 6);
        out.push((
            "service.name".to_string(),
            Value::string(&self.service_name),
        ));
        for (k, v) in &self.attributes {
            if !out.iter().any(|(seen, _)| seen == k) {
                out.push((k.clone(), v.clone()));
            }
        }
        let detected = [
            ("host.name", Value::string(&self.host_name)),
            ("process.pid", Value::Int(i64::from(self.pid))),
            ("telemetry.sdk.name", Value::string(SCOPE_NAME)),
            ("telemetry.sdk.language", Value::string("ruby")),
            ("telemetry.sdk.version", Value::string(&self.version)),
        ];
        for (k, v) in detected {
            if !out.iter().any(|(seen, _)| seen == k) {
                out.push((k.to_string(), v));
            }
        }
        out
    }

    /// The attributes packed, to be streamed like a payload.
    pub(crate) fn packed_attributes(&self) -> Packed {
        Packed::from_value(&Value::Hash(
            self.attribute_values()
                .into_iter()
                .map(|(k, v)| (Value::string(&k), v))
                .collect(),
        ))
    }
}

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
        let (service_name, attrs) = resource_defaults(service_name, resource_attributes);
        ResourceSettings {
            service_name,
            attributes: attrs
                .into_iter()
                .map(|(k, v)| (k, Value::string(&v)))
                .collect(),
        }
    }
}

impl ResourceSettings {
    /// The `service.name` among the extra attributes, when it is a
    /// non-empty String or Symbol: the service's name when `service_name`
    /// is not given (as in `OTEL_RESOURCE_ATTRIBUTES` when
    /// `OTEL_SERVICE_NAME` is unset).
    pub fn service_name_attribute(&self) -> Option<String> {
        let (_, value) = self
            .attributes
            .iter()
            .rev()
            .find(|(k, _)| k == "service.name")?;
        let text = match value {
            Value::Str(s) => s.as_utf8(),
            Value::Sym(s) => s.as_utf8(),
            _ => None,
        }?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    }
}

/// The resource settings in force, process-wide (the binding keeps one in a
/// static; its lock is fork-safe once registered).
pub struct ResourceConfig {
    settings: ForkSafeMutex<ResourceSettings>,
}

impl Default for ResourceConfig {
    /// The defaults without any environment.
    fn default() -> Self {
        ResourceConfig {
            settings: ForkSafeMutex::new(ResourceSettings::from_env_values(None, None)),
        }
    }
}

impl ResourceConfig {
    /// Makes the process-wide resource settings' lock fork-safe.
    pub fn register_for_fork(&'static self) -> bool {
        self.settings.register()
    }

    /// The resource settings in force (a copy).
    pub fn get(&self) -> ResourceSettings {
        self.settings.lock().clone()
    }

    /// Puts resource settings in force.
    pub fn set(&self, settings: ResourceSettings) {
        let old = std::mem::replace(&mut *self.settings.lock(), settings);
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_name_attribute_is_a_non_empty_string_or_symbol() {
        let with = |v: Value| ResourceSettings {
            service_name: "tasker".into(),
            attributes: vec![
                ("team".into(), Value::string("a")),
                ("service.name".into(), v),
            ],
        };
        let name = |v: Value| with(v).service_name_attribute();
        assert_eq!(name(Value::string("orders")).as_deref(), Some("orders"));
        assert_eq!(name(Value::symbol("orders")).as_deref(), Some("orders"));
        assert_eq!(name(Value::string(" ")), None);
        assert_eq!(name(Value::Int(1)), None);
        assert_eq!(
            ResourceSettings::from_env_values(None, None).service_name_attribute(),
            None
        );
    }

    #[test]
    fn resource_attributes_are_unique_and_ordered() {
        let r = Resource {
            service_name: "svc".into(),
            host_name: "h".into(),
            pid: 7,
            version: "1.2.3".into(),
            attributes: vec![
                ("service.name".into(), Value::string("ignored")),
                ("host.name".into(), Value::string("pod")),
                ("team".into(), Value::string("a")),
            ],
            span_limits: SpanLimits::NONE,
        };
        let keys: Vec<_> = r.attribute_values().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "service.name",
                "host.name",
                "team",
                "process.pid",
                "telemetry.sdk.name",
                "telemetry.sdk.language",
                "telemetry.sdk.version"
            ]
        );
        let values = r.attribute_values();
        assert_eq!(values[0].1, Value::string("svc"));
        assert_eq!(values[1].1, Value::string("pod"));
    }

    #[test]
    fn a_malformed_resource_attributes_variable_is_a_warning() {
        let warning = resource_attributes_warning(Some("broken")).expect("a warning");
        assert_eq!(warning.variable, "OTEL_RESOURCE_ATTRIBUTES");
        assert_eq!(resource_attributes_warning(Some("a=1")), None);
        assert_eq!(resource_attributes_warning(None), None);
    }

    #[test]
    fn resource_defaults_follow_the_service_name_precedence() {
        assert_eq!(
            resource_defaults(None, None),
            ("tasker".to_string(), vec![])
        );
        let (name, attrs) = resource_defaults(
            None,
            Some("service.name=billing,deployment.environment=prod,team=a,team=b"),
        );
        assert_eq!(name, "billing");
        assert_eq!(
            attrs,
            vec![
                ("deployment.environment".to_string(), "prod".to_string()),
                ("team".to_string(), "b".to_string()),
            ]
        );
        assert_eq!(
            resource_defaults(Some("orders"), Some("service.name=billing")).0,
            "orders"
        );
        // A malformed value is ignored whole.
        assert_eq!(
            resource_defaults(None, Some("a=1,broken")),
            ("tasker".to_string(), vec![])
        );
    }
}
