//! OpenTelemetry's environment variables, as pure functions of their values.
//!
//! The binding reads the variables and passes their values in; nothing here
//! reads the process environment, so every rule is testable on its own.
//!
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the full traces URL, used as is.
//! - `OTEL_EXPORTER_OTLP_ENDPOINT`: a base URL; `/v1/traces` is appended.
//! - `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS`:
//!   `key=value` pairs separated by commas, values percent-encoded.
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource.

/// Where traces go when nothing else is configured.
pub const DEFAULT_TRACES_ENDPOINT: &str = "http://localhost:4318/v1/traces";
/// The OTLP/HTTP path for traces.
pub const TRACES_PATH: &str = "/v1/traces";
/// The service name when neither a setting nor the environment names one.
pub const DEFAULT_SERVICE_NAME: &str = "tasker";

/// Where an endpoint came from, to name it in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointSource {
    /// The `endpoint:` argument.
    Argument,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    TracesVariable,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    BaseVariable,
    /// Nothing set: the default.
    Default,
}

impl EndpointSource {
    /// The argument or variable name.
    pub fn name(self) -> &'static str {
        match self {
            EndpointSource::Argument => "endpoint",
            EndpointSource::TracesVariable => "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            EndpointSource::BaseVariable => "OTEL_EXPORTER_OTLP_ENDPOINT",
            EndpointSource::Default => "the default endpoint",
        }
    }
}

/// An empty or blank variable counts as unset, as OpenTelemetry SDKs treat it.
fn set(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// `<base>/v1/traces`, without doubling a trailing slash. A base that already
/// ends in `/v1/traces` is taken as the full URL.
pub fn traces_url_from_base(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        return base.to_string();
    }
    let mut url = String::with_capacity(base.len() + TRACES_PATH.len());
    url.push_str(base);
    url.push_str(TRACES_PATH);
    url
}

/// The traces URL: the argument (a base URL), else the traces variable as is,
/// else the base variable plus `/v1/traces`, else the default.
pub fn traces_endpoint(
    argument: Option<&str>,
    traces_variable: Option<&str>,
    base_variable: Option<&str>,
) -> (String, EndpointSource) {
    if let Some(a) = argument {
        return (traces_url_from_base(a), EndpointSource::Argument);
    }
    if let Some(t) = set(traces_variable) {
        return (t.to_string(), EndpointSource::TracesVariable);
    }
    if let Some(b) = set(base_variable) {
        return (traces_url_from_base(b), EndpointSource::BaseVariable);
    }
    (DEFAULT_TRACES_ENDPOINT.to_string(), EndpointSource::Default)
}

/// Checks that `url` is something this exporter can POST to: `http://` with a
/// host. TLS is not built in, so `https://` is refused with advice.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(rest) = lower.strip_prefix("http://") {
        rest
    } else if lower.starts_with("https://") {
        return Err(format!(
            "{url} is https; this build sends plain http only (no TLS built in): \
             send to an OpenTelemetry Collector or agent on the host or network over http"
        ));
    } else {
        return Err(format!("{url} is not an http:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{url} has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains whitespace or control characters"));
    }
    Ok(())
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_digit);
            let lo = bytes.get(i + 2).copied().and_then(hex_digit);
            match (hi, lo) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => return Err(format!("bad percent-escape in {s:?}")),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// Parses `key1=value1,key2=value2` (the format of `OTEL_RESOURCE_ATTRIBUTES`
/// and `OTEL_EXPORTER_OTLP_HEADERS`): entries are trimmed, empty entries are
/// skipped, keys and values are percent-decoded, and a value may contain `=`.
/// Any malformed entry makes the whole value an error, as the specification
/// asks (a half-applied set of headers or attributes would mislead).
pub fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for entry in s.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((k, v)) = entry.split_once('=') else {
            return Err(format!("entry {entry:?} has no '='"));
        };
        let key = percent_decode(k.trim())?;
        if key.is_empty() {
            return Err(format!("entry {entry:?} has an empty key"));
        }
        let value = percent_decode(v.trim())?;
        out.push((key, value));
    }
    Ok(out)
}

/// Headers from the generic and the traces-specific variables; a traces header
/// replaces a generic one of the same name (names compare case-insensitively).
pub fn headers_from_env(
    generic: Option<&str>,
    traces: Option<&str>,
) -> Result<Vec<(String, String)>, (&'static str, String)> {
    let mut headers = match set(generic) {
        Some(g) => parse_key_values(g).map_err(|e| ("OTEL_EXPORTER_OTLP_HEADERS", e))?,
        None => Vec::new(),
    };
    if let Some(t) = set(traces) {
        let specific = parse_key_values(t).map_err(|e| ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", e))?;
        merge_headers(&mut headers, specific);
    }
    for (name, value) in &headers {
        check_header(name, value).map_err(|e| ("OTEL_EXPORTER_OTLP_HEADERS", e))?;
    }
    Ok(headers)
}

/// Adds `extra` to `headers`; an extra header replaces one of the same name.
pub fn merge_headers(headers: &mut Vec<(String, String)>, extra: Vec<(String, String)>) {
    for (name, value) in extra {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        headers.push((name, value));
    }
}

/// A header name must be an HTTP token; a value must not break the header line.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!(
            "the value of header {name:?} contains CR, LF or NUL"
        ));
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_precedence_follows_opentelemetry() {
        assert_eq!(
            traces_endpoint(None, None, None),
            (
                "http://localhost:4318/v1/traces".to_string(),
                EndpointSource::Default
            )
        );
        assert_eq!(
            traces_endpoint(None, None, Some("http://collector:4318")).0,
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_endpoint(None, None, Some("http://collector:4318/")).0,
            "http://collector:4318/v1/traces"
        );
        // The traces variable is used as is, and wins over the base one.
        assert_eq!(
            traces_endpoint(None, Some("http://a:1/custom"), Some("http://b:2")),
            (
                "http://a:1/custom".to_string(),
                EndpointSource::TracesVariable
            )
        );
        // The argument wins over both and is a base URL.
        assert_eq!(
            traces_endpoint(Some("http://c:3"), Some("http://a:1/x"), Some("http://b:2")),
            ("http://c:3/v1/traces".to_string(), EndpointSource::Argument)
        );
        assert_eq!(
            traces_endpoint(Some("http://c:3/v1/traces"), None, None).0,
            "http://c:3/v1/traces"
        );
        // Blank variables count as unset.
        assert_eq!(
            traces_endpoint(None, Some("  "), Some("")).1,
            EndpointSource::Default
        );
    }

    #[test]
    fn endpoints_must_be_plain_http_with_a_host() {
        assert!(check_endpoint("http://localhost:4318/v1/traces").is_ok());
        assert!(check_endpoint("HTTP://127.0.0.1:1/v1/traces").is_ok());
        assert!(check_endpoint("https://x/v1/traces")
            .unwrap_err()
            .contains("no TLS"));
        assert!(check_endpoint("ftp://x").is_err());
        assert!(check_endpoint("http:///v1/traces").is_err());
        assert!(check_endpoint("http://:4318/v1/traces").is_err());
        assert!(check_endpoint("http://a b/v1/traces").is_err());
    }

    #[test]
    fn key_values_are_trimmed_and_percent_decoded() {
        assert_eq!(
            parse_key_values(" a=1 , b = x%20y ,,c=k=v").unwrap(),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "x y".to_string()),
                ("c".to_string(), "k=v".to_string()),
            ]
        );
        assert!(parse_key_values("a=1,b").is_err());
        assert!(parse_key_values("=1").is_err());
        assert!(parse_key_values("a=%zz").is_err());
        assert!(parse_key_values("a=%ff").is_err());
        assert_eq!(parse_key_values("").unwrap(), vec![]);
    }

    #[test]
    fn headers_merge_case_insensitively_and_are_checked() {
        let h = headers_from_env(
            Some("Authorization=Basic%20abc,x-a=1"),
            Some("AUTHORIZATION=Bearer t"),
        )
        .unwrap();
        assert_eq!(
            h,
            vec![
                ("x-a".to_string(), "1".to_string()),
                ("AUTHORIZATION".to_string(), "Bearer t".to_string()),
            ]
        );
        assert_eq!(
            headers_from_env(Some("bad header=1"), None).unwrap_err().0,
            "OTEL_EXPORTER_OTLP_HEADERS"
        );
        assert_eq!(
            headers_from_env(None, Some("x")).unwrap_err().0,
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
        );
        assert!(check_header("x-ok", "a\r\nb").is_err());
        assert!(check_header("", "a").is_err());
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
