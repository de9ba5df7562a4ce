//! OpenTelemetry's environment variables, as pure functions of their values.
//!
//! The binding reads the variables and passes their values in; nothing here
//! reads the process environment, so every rule is testable on its own.
//!
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the full traces URL, used as is.
//! - `OTEL_EXPORTER_OTLP_ENDPOINT`: a base URL; `/v1/traces` is appended to
//!   its path (a query string is kept after it, a fragment dropped).
//! - `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS`:
//!   `key=value` pairs separated by commas, values percent-encoded.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (default) or `http/json`;
//!   `grpc` is refused.
//! - `OTEL_EXPORTER_OTLP_COMPRESSION`: `gzip` (default) or `none`.
//! - `OTEL_EXPORTER_OTLP_TIMEOUT`: milliseconds per request (default 10000);
//!   0 means no limit; 1 to 99 are taken as milliseconds with a warning (the
//!   OpenTelemetry Ruby SDK reads seconds).
//! - `OTEL_EXPORTER_OTLP_CERTIFICATE`: a PEM file of the only CA(s) trusted.
//! - `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_KEY`:
//!   PEM files of a client certificate chain and its key, for mTLS.
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource.
//!
//! Each exporter variable has an `OTEL_EXPORTER_OTLP_TRACES_*` form that takes
//! precedence. [`otlp_environment`] reads them all through a lookup function
//! and returns typed values plus [`Warning`]s for values it could not use
//! (each is then ignored, as if unset).

use std::time::Duration;

use super::settings::{Compression, OtlpSettings, DEFAULT_TIMEOUT, MAX_TIMEOUT};
use super::url::{http_authority, scheme};
pub use super::url::{shown_url, without_password};
use crate::support::env::{parse_secret_key_values, set, Warning};
use crate::support::protocol::Protocol;

/// Where traces go when nothing else is configured.
pub const DEFAULT_TRACES_ENDPOINT: &str = "http://localhost:4318/v1/traces";
/// The OTLP/HTTP path for traces.
pub const TRACES_PATH: &str = "/v1/traces";

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

/// The base URL with `/v1/traces` appended to its path, without doubling a
/// trailing slash; its query string is kept after the path, as
/// OpenTelemetry's specification says (`http://h/?tenant=a` gives
/// `http://h/v1/traces?tenant=a`). A fragment is dropped: it is never sent.
/// A base whose path already ends in `/v1/traces` is taken as the full URL.
pub fn traces_url_from_base(base: &str) -> String {
    let base = base.trim();
    let base = base.split_once('#').map_or(base, |(before, _)| before);
    let (before_query, query) = base.split_at(base.find('?').unwrap_or(base.len()));
    let path = before_query.trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + TRACES_PATH.len());
    url.push_str(path);
    if !path.ends_with(TRACES_PATH) {
        url.push_str(TRACES_PATH);
    }
    url.push_str(query);
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

/// Checks that `url`, as the user wrote it (a base URL or a full one), is
/// something this exporter can POST to: `http://` or `https://` with a host.
/// The message quotes what was written, its password hidden
/// ([`shown_url`]), and names what is wrong: no scheme, another scheme, no
/// host, whitespace.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let written = url.trim();
    let shown = shown_url(written);
    check_written_endpoint(written, &shown)
}

fn check_written_endpoint(url: &str, shown: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let Some((_, host)) = http_authority(&lower) else {
        return Err(match scheme(url) {
            Some(other) => format!(
                "{shown} has the scheme {other}://; only http:// and https:// are supported"
            ),
            None => format!("{shown} has no scheme (write http://{shown} or https://{shown})"),
        });
    };
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{shown} has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{shown:?} contains whitespace or control characters"
        ));
    }
    check_host_and_port(shown, host)
}

/// An IPv6 host in brackets, or a host without them, then an optional
/// port from 1 to 65535: what every push would otherwise fail on.
fn check_host_and_port(url: &str, host_port: &str) -> Result<(), String> {
    let port = match host_port.strip_prefix('[') {
        Some(inner) => {
            let Some((ip, after)) = inner.split_once(']') else {
                return Err(format!("{url} has an IPv6 host without its closing ]"));
            };
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{url} has [{ip}], not an IPv6 address"));
            }
            match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(format!("{url} has {after:?} after its IPv6 host")),
            }
        }
        None => host_port.rsplit_once(':').map(|(_, port)| port),
    };
    match port {
        Some(p) if !matches!(p.parse::<u16>(), Ok(n) if n > 0) || p.starts_with('+') => Err(
            format!("{url} has the port {p:?}, not a port number (1 to 65535)"),
        ),
        _ => Ok(()),
    }
}

/// Headers from the generic and the traces-specific variables; a traces header
/// replaces a generic one of the same name (names compare case-insensitively).
pub fn headers_from_env(
    generic: Option<&str>,
    traces: Option<&str>,
) -> Result<Vec<(String, String)>, (&'static str, String)> {
    let mut headers = match set(generic) {
        Some(g) => parse_secret_key_values(g).map_err(|e| ("OTEL_EXPORTER_OTLP_HEADERS", e))?,
        None => Vec::new(),
    };
    if let Some(t) = set(traces) {
        let specific =
            parse_secret_key_values(t).map_err(|e| ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", e))?;
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

/// A header name must be an HTTP token; a value may hold tab, printable
/// ASCII and bytes 0x80 to 0xFF (non-ASCII text), no other control
/// character. Both are checked as the HTTP client checks them when it
/// builds a request, so a header accepted here is never one that every
/// request would then fail on. The message names the header, never its
/// value (often a credential).
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    use ureq::http::{HeaderName, HeaderValue};
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty()
        || !name.bytes().all(token)
        || HeaderName::from_bytes(name.as_bytes()).is_err()
    {
        return Err(format!("{name:?} is not a valid header name"));
    }
    if HeaderValue::from_bytes(value.as_bytes()).is_err() {
        let control = value
            .bytes()
            .find(|&b| (b < 0x20 && b != b'\t') || b == 0x7f);
        return Err(match control {
            Some(b) => format!(
                "the value of header {name:?} contains the control character 0x{b:02X} (a \
                 value may hold tab, printable ASCII and non-ASCII text only)"
            ),
            None => format!("the value of header {name:?} is not a valid header value"),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The exporter's settings.

/// `OTEL_EXPORTER_OTLP_PROTOCOL`'s value.
pub fn parse_protocol(v: &str) -> Result<Protocol, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "http/json" => Ok(Protocol::HttpJson),
        "grpc" => Err(
            "grpc is not supported by this exporter (OTLP/HTTP only): send to the \
             collector's OTLP/HTTP port, 4318, with http/protobuf"
                .to_string(),
        ),
        other => Err(format!(
            "{other:?} is not a protocol (http/protobuf or http/json)"
        )),
    }
}

/// `OTEL_EXPORTER_OTLP_COMPRESSION`'s value.
pub fn parse_compression(v: &str) -> Result<Compression, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "gzip" => Ok(Compression::Gzip),
        "none" => Ok(Compression::None),
        other => Err(format!("{other:?} is not a compression (gzip or none)")),
    }
}

/// `OTEL_EXPORTER_OTLP_TIMEOUT`'s value: whole milliseconds; 0 means no limit
/// ([`MAX_TIMEOUT`], as is anything longer).
pub fn parse_timeout_ms(v: &str) -> Result<Duration, String> {
    let t = v.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{t:?} is not a whole number of milliseconds"));
    }
    let ms = t.parse::<u64>().unwrap_or(u64::MAX);
    if ms == 0 {
        return Ok(MAX_TIMEOUT);
    }
    Ok(Duration::from_millis(ms).min(MAX_TIMEOUT))
}

/// A variable's name and value.
type Var<'a> = (&'static str, Option<&'a str>);

/// The first usable value of `vars` (the traces variable, then the generic
/// one), with warnings for the unusable ones before it.
fn first_valid<T>(
    vars: [Var<'_>; 2],
    parse: impl Fn(&str) -> Result<T, String>,
    warnings: &mut Vec<Warning>,
) -> Option<T> {
    for (variable, value) in vars {
        if let Some(v) = set(value) {
            match parse(v) {
                Ok(t) => return Some(t),
                Err(message) => warnings.push(Warning::ignored(variable, message)),
            }
        }
    }
    None
}

/// The protocol: the traces variable, else the generic one, else http/protobuf.
pub fn protocol(
    traces: Option<&str>,
    generic: Option<&str>,
    warnings: &mut Vec<Warning>,
) -> Protocol {
    first_valid(
        [
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", traces),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", generic),
        ],
        parse_protocol,
        warnings,
    )
    .unwrap_or_default()
}

/// The compression: the traces variable, else the generic one, else gzip.
pub fn compression(
    traces: Option<&str>,
    generic: Option<&str>,
    warnings: &mut Vec<Warning>,
) -> Compression {
    first_valid(
        [
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", traces),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", generic),
        ],
        parse_compression,
        warnings,
    )
    .unwrap_or_default()
}

/// Below this many milliseconds, a timeout variable gets a word: the
/// OpenTelemetry Ruby SDK reads these variables in seconds, so `10` there
/// means ten seconds and here (as the specification says) ten milliseconds.
pub const SECONDS_LIKE_TIMEOUT_MS: u64 = 100;

/// The timeout: the traces variable, else the generic one, else 10 s. A
/// value from 1 to 99 is taken as milliseconds, with a warning that says so.
pub fn timeout(
    traces: Option<&str>,
    generic: Option<&str>,
    warnings: &mut Vec<Warning>,
) -> Duration {
    let vars = [
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", traces),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", generic),
    ];
    for (variable, value) in vars {
        let Some(v) = set(value) else { continue };
        match parse_timeout_ms(v) {
            Ok(d) => {
                let ms = d.as_millis();
                if (1..u128::from(SECONDS_LIKE_TIMEOUT_MS)).contains(&ms) {
                    warnings.push(Warning::used(
                        variable,
                        format!(
                            "{variable}={v} is {ms} ms (the variable is in milliseconds; \
                             the OpenTelemetry Ruby SDK reads seconds)"
                        ),
                    ));
                }
                return d;
            }
            Err(message) => warnings.push(Warning::ignored(variable, message)),
        }
    }
    DEFAULT_TIMEOUT
}

/// A file path: the traces variable, else the generic one (blank is unset).
pub fn path(traces: Option<&str>, generic: Option<&str>) -> Option<String> {
    set(traces).or(set(generic)).map(str::to_string)
}

/// The variables of a TLS file, the traces form first.
pub type FileVariables = [&'static str; 2];

pub const CERTIFICATE_VARIABLES: FileVariables = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];
pub const CLIENT_CERTIFICATE_VARIABLES: FileVariables = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
];
pub const CLIENT_KEY_VARIABLES: FileVariables = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
];

/// The variable a file path is taken from ([`path`]'s choice), for messages.
pub fn path_variable(
    variables: FileVariables,
    get: impl Fn(&str) -> Option<String>,
) -> &'static str {
    let [traces, generic] = variables;
    if set(get(traces).as_deref()).is_some() {
        traces
    } else {
        generic
    }
}

/// Everything the OTLP exporter takes from the environment, typed: the
/// traces URL and the other settings (whose `endpoint`, a setting's base
/// URL, is `None`: the URL here applies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpEnvironment {
    pub endpoint: String,
    pub endpoint_source: EndpointSource,
    pub settings: OtlpSettings,
}

/// Reads the exporter's variables through `get` (the process environment in
/// the binding, a map in tests). Unusable values become warnings and count as
/// unset: a bad traces variable falls back to the generic one, then to the
/// default. A malformed headers variable is ignored whole.
pub fn otlp_environment(get: impl Fn(&str) -> Option<String>) -> (OtlpEnvironment, Vec<Warning>) {
    let var = |name: &str| get(name);
    let mut warnings = Vec::new();
    let traces_endpoint_var = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base_endpoint_var = var("OTEL_EXPORTER_OTLP_ENDPOINT");
    let mut traces_endpoint_value = traces_endpoint_var.as_deref();
    let mut base_endpoint_value = base_endpoint_var.as_deref();
    let (endpoint, endpoint_source) = loop {
        let (url, source) = traces_endpoint(None, traces_endpoint_value, base_endpoint_value);
        // The value as written is checked, never the URL made from it.
        let written = match source {
            EndpointSource::TracesVariable => traces_endpoint_value,
            EndpointSource::BaseVariable => base_endpoint_value,
            _ => None,
        };
        match check_endpoint(written.map_or(url.as_str(), str::trim)) {
            Ok(()) => break (url, source),
            Err(message) => {
                warnings.push(Warning::ignored(source.name(), message));
                match source {
                    EndpointSource::TracesVariable => traces_endpoint_value = None,
                    EndpointSource::BaseVariable => base_endpoint_value = None,
                    // The default is valid; an argument is not read here.
                    _ => break (DEFAULT_TRACES_ENDPOINT.to_string(), EndpointSource::Default),
                }
            }
        }
    };
    let mut headers = Vec::new();
    for variable in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        let value = var(variable);
        let Some(v) = set(value.as_deref()) else {
            continue;
        };
        let parsed = parse_secret_key_values(v).and_then(|pairs| {
            for (name, value) in &pairs {
                check_header(name, value)?;
            }
            Ok(pairs)
        });
        match parsed {
            Ok(pairs) => merge_headers(&mut headers, pairs),
            Err(message) => warnings.push(Warning::ignored(variable, message)),
        }
    }
    let protocol = protocol(
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").as_deref(),
        var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref(),
        &mut warnings,
    );
    let compression = compression(
        var("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION").as_deref(),
        var("OTEL_EXPORTER_OTLP_COMPRESSION").as_deref(),
        &mut warnings,
    );
    let timeout = timeout(
        var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").as_deref(),
        var("OTEL_EXPORTER_OTLP_TIMEOUT").as_deref(),
        &mut warnings,
    );
    let file =
        |[traces, generic]: FileVariables| path(var(traces).as_deref(), var(generic).as_deref());
    let settings = OtlpEnvironment {
        endpoint,
        endpoint_source,
        settings: OtlpSettings {
            endpoint: None,
            headers,
            protocol,
            compression,
            timeout,
            certificate: file(CERTIFICATE_VARIABLES),
            client_certificate: file(CLIENT_CERTIFICATE_VARIABLES),
            client_key: file(CLIENT_KEY_VARIABLES),
        },
    };
    (settings, warnings)
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
    fn the_traces_path_goes_after_the_base_path_before_its_query() {
        for (base, url) in [
            ("http://h:1", "http://h:1/v1/traces"),
            ("http://h:1/", "http://h:1/v1/traces"),
            ("http://h:1/base/", "http://h:1/base/v1/traces"),
            ("http://h:1/v1/traces", "http://h:1/v1/traces"),
            ("http://h:1/v1/traces/", "http://h:1/v1/traces"),
            (" http://h:1/base ", "http://h:1/base/v1/traces"),
            ("http://h:1/?tenant=a", "http://h:1/v1/traces?tenant=a"),
            (
                "http://h:1?tenant=a&x=b/c",
                "http://h:1/v1/traces?tenant=a&x=b/c",
            ),
            (
                "http://h:1/base/?tenant=a",
                "http://h:1/base/v1/traces?tenant=a",
            ),
            (
                "http://h:1/v1/traces?tenant=a",
                "http://h:1/v1/traces?tenant=a",
            ),
            ("http://h:1/?", "http://h:1/v1/traces?"),
            // A fragment is never sent: dropped, with or without a query.
            ("http://h:1/#frag", "http://h:1/v1/traces"),
            ("http://h:1/base#a/b?c", "http://h:1/base/v1/traces"),
            ("http://h:1/?tenant=a#frag", "http://h:1/v1/traces?tenant=a"),
        ] {
            assert_eq!(traces_url_from_base(base), url, "{base}");
        }
        // The argument, the setting and the base variable are base URLs;
        // the traces variable is a full URL, used as is.
        assert_eq!(
            traces_endpoint(None, None, Some("http://h:1/?tenant=a")).0,
            "http://h:1/v1/traces?tenant=a"
        );
        assert_eq!(
            traces_endpoint(Some("http://h:1#x"), None, None).0,
            "http://h:1/v1/traces"
        );
        assert_eq!(
            traces_endpoint(None, Some("http://h:1/custom?tenant=a"), None).0,
            "http://h:1/custom?tenant=a"
        );
    }

    #[test]
    fn endpoints_must_be_http_or_https_with_a_host() {
        assert!(check_endpoint("http://localhost:4318/v1/traces").is_ok());
        assert!(check_endpoint("HTTP://127.0.0.1:1/v1/traces").is_ok());
        assert!(check_endpoint("https://collector.example:4318/v1/traces").is_ok());
        assert!(check_endpoint("https:///v1/traces").is_err());
        assert!(check_endpoint("ftp://x").is_err());
        assert!(check_endpoint("http:///v1/traces").is_err());
        assert!(check_endpoint("http://:4318/v1/traces").is_err());
        assert!(check_endpoint("http://a b/v1/traces").is_err());
        assert!(check_endpoint("http://[::1]:4318/v1/traces").is_ok());
        assert!(check_endpoint("http://[::1]/v1/traces").is_ok());
        assert!(check_endpoint("http://user@collector:443").is_ok());
        for (bad, why) in [
            ("http://[::1", "without its closing ]"),
            ("http://[nope]:4318", "not an IPv6 address"),
            ("http://[::1]x:4318", "after its IPv6 host"),
            ("http://127.0.0.1:99999/v1/traces", "not a port number"),
            ("http://127.0.0.1:0", "not a port number"),
            ("http://collector:http/v1/traces", "not a port number"),
            ("http://collector:/v1/traces", "not a port number"),
            ("http://collector:+80", "not a port number"),
        ] {
            let e = check_endpoint(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // The message quotes what was written and says what is wrong.
        assert_eq!(
            check_endpoint("collector:4318").unwrap_err(),
            "collector:4318 has no scheme (write http://collector:4318 or https://collector:4318)"
        );
        assert_eq!(
            check_endpoint("http://").unwrap_err(),
            "http:// has no host"
        );
        assert_eq!(
            check_endpoint("ftp://x").unwrap_err(),
            "ftp://x has the scheme ftp://; only http:// and https:// are supported"
        );
    }

    #[test]
    fn an_endpoints_password_is_never_shown() {
        for (url, shown) in [
            (
                "http://otel:hunter2@collector:4318/v1/traces",
                "http://otel:***@collector:4318/v1/traces",
            ),
            ("HTTPS://u:p@h", "HTTPS://u:***@h"),
            ("http://u:@h/x", "http://u:***@h/x"),
            // The last @ of the authority ends the userinfo; the first :
            // of the userinfo ends the user name.
            ("http://u:p@ss:w@h:1/a@b", "http://u:***@h:1/a@b"),
            ("http://u@x:p@h?q=a:b@c", "http://u@x:***@h?q=a:b@c"),
            // Without a scheme, as a mistyped endpoint may be written.
            ("u:p@collector:4318", "u:***@collector:4318"),
            // Nothing to hide: no userinfo, or no password in it.
            (
                "http://collector:4318/v1/traces",
                "http://collector:4318/v1/traces",
            ),
            (
                "http://token@collector/v1/traces",
                "http://token@collector/v1/traces",
            ),
            ("http://h/a:b@c", "http://h/a:b@c"),
            ("http://h?a:b@c", "http://h?a:b@c"),
            ("http://h#a:b@c", "http://h#a:b@c"),
            ("collector:4318", "collector:4318"),
            ("", ""),
            (" http://u:p@h ", " http://u:***@h "),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
        }
        let url = "http://otel:s3cret@h:1";
        assert_eq!(
            without_password("bad uri: http://otel:s3cret@h:1/v1/traces (x)", url),
            "bad uri: http://otel:***@h:1/v1/traces (x)"
        );
        assert_eq!(without_password("no url here", url), "no url here");
        assert_eq!(
            without_password("otel:s3cret@h", "http://h:1"),
            "otel:s3cret@h"
        );
        // Messages about an endpoint as written hide it too.
        for bad in [
            "collector:s3cret@h:4318",
            "ftp://u:s3cret@h",
            "http://u:s3cret@",
            "http://u:s3cret@h b",
            "http://u:s3cret@h:99999",
            "http://u:s3cret@[::1",
        ] {
            let e = check_endpoint(bad).unwrap_err();
            assert!(!e.contains("s3cret"), "{bad}: {e}");
            assert!(e.contains(":***@"), "{bad}: {e}");
        }
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
    fn header_values_are_checked_as_the_http_client_checks_them() {
        // Every byte the HTTP client refuses in a value is refused here,
        // and every byte it takes is taken: 0x00-0x08, 0x0A-0x1F and 0x7F
        // are refused; tab, 0x20-0x7E and non-ASCII text are taken.
        for b in 0u8..0x80 {
            let value = format!("acme{}", char::from(b));
            let client = ureq::http::HeaderValue::from_bytes(value.as_bytes()).is_ok();
            let refused = (b < 0x20 && b != b'\t') || b == 0x7f;
            assert_eq!(client, !refused, "byte 0x{b:02X}");
            assert_eq!(
                check_header("x-tenant", &value).is_ok(),
                client,
                "byte 0x{b:02X}"
            );
        }
        assert!(check_header("x-tenant", "caf\u{e9} \u{1f600}\tok").is_ok());
        assert_eq!(
            check_header("x-tenant", "acme\u{7f}").unwrap_err(),
            "the value of header \"x-tenant\" contains the control character 0x7F (a value may \
             hold tab, printable ASCII and non-ASCII text only)"
        );
        assert!(check_header("x-tenant", "acme\u{1}")
            .unwrap_err()
            .contains("0x01"));
    }

    #[test]
    fn a_headers_variable_with_a_control_character_is_ignored_whole() {
        for value in ["x-tenant=acme%01,x-ok=1", "x-ok=1,x-tenant=acme%7F"] {
            let (s, w) = settings(&[
                ("OTEL_EXPORTER_OTLP_HEADERS", value),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-b=2"),
            ]);
            assert_eq!(
                s.settings.headers,
                vec![("x-b".to_string(), "2".to_string())],
                "{value}"
            );
            assert_eq!(w.len(), 1, "{w:?}");
            assert_eq!(w[0].variable, "OTEL_EXPORTER_OTLP_HEADERS");
            assert!(w[0].message.contains("control character"), "{}", w[0]);
            assert!(!w[0].message.contains("acme"), "{}", w[0]);
        }
        assert!(headers_from_env(Some("x-tenant=acme%01"), None).is_err());
    }

    fn settings(vars: &[(&str, &str)]) -> (OtlpEnvironment, Vec<Warning>) {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        otlp_environment(|name| map.get(name).cloned())
    }

    #[test]
    fn exporter_defaults() {
        let (s, w) = settings(&[]);
        assert!(w.is_empty());
        assert_eq!(
            s,
            OtlpEnvironment {
                endpoint: DEFAULT_TRACES_ENDPOINT.to_string(),
                endpoint_source: EndpointSource::Default,
                settings: OtlpSettings {
                    endpoint: None,
                    headers: vec![],
                    protocol: Protocol::HttpProtobuf,
                    compression: Compression::Gzip,
                    timeout: Duration::from_secs(10),
                    certificate: None,
                    client_certificate: None,
                    client_key: None,
                },
            }
        );
    }

    #[test]
    fn traces_variables_take_precedence() {
        let (s, w) = settings(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "NONE"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "750"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/generic/cert.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/traces/key.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/generic/key.pem"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://base:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "B=3"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.settings.protocol, Protocol::HttpJson);
        assert_eq!(s.settings.compression, Compression::None);
        assert_eq!(s.settings.timeout, Duration::from_millis(750));
        assert_eq!(s.settings.certificate.as_deref(), Some("/traces/ca.pem"));
        assert_eq!(
            s.settings.client_certificate.as_deref(),
            Some("/generic/cert.pem")
        );
        assert_eq!(s.settings.client_key.as_deref(), Some("/traces/key.pem"));
        assert_eq!(s.endpoint, "https://base:4318/v1/traces");
        assert_eq!(s.endpoint_source, EndpointSource::BaseVariable);
        assert_eq!(
            s.settings.headers,
            vec![
                ("a".to_string(), "1".to_string()),
                ("B".to_string(), "3".to_string())
            ]
        );
    }

    #[test]
    fn timeouts_are_milliseconds_and_zero_is_no_limit() {
        assert_eq!(parse_timeout_ms("10000"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout_ms(" 1 "), Ok(Duration::from_millis(1)));
        assert_eq!(parse_timeout_ms("0"), Ok(MAX_TIMEOUT));
        assert_eq!(parse_timeout_ms("99999999999999999999999"), Ok(MAX_TIMEOUT));
        for bad in ["10s", "1.5", "-1", "", "ten"] {
            assert!(parse_timeout_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_timeout_below_100_is_milliseconds_with_a_warning() {
        let (s, w) = settings(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10")]);
        assert_eq!(s.settings.timeout, Duration::from_millis(10));
        assert_eq!(
            w.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "OTEL_EXPORTER_OTLP_TIMEOUT=10 is 10 ms (the variable is in milliseconds; \
              the OpenTelemetry Ruby SDK reads seconds)"
            ]
        );
        let (s, w) = settings(&[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", " 99 ")]);
        assert_eq!(s.settings.timeout, Duration::from_millis(99));
        assert!(w[0].to_string().starts_with(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT=99 is 99 ms (the variable is in milliseconds;"
        ));
        for quiet in ["100", "0", "10000"] {
            assert!(settings(&[("OTEL_EXPORTER_OTLP_TIMEOUT", quiet)])
                .1
                .is_empty());
        }
    }

    #[test]
    fn unusable_values_warn_name_their_variable_and_fall_back() {
        let (s, w) = settings(&[
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "5s"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "broken"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "ok=1"),
        ]);
        assert_eq!(
            s.settings.protocol,
            Protocol::HttpJson,
            "the generic value is used"
        );
        assert_eq!(s.settings.compression, Compression::Gzip);
        assert_eq!(s.settings.timeout, Duration::from_secs(10));
        assert_eq!(s.endpoint, DEFAULT_TRACES_ENDPOINT);
        assert_eq!(
            s.settings.headers,
            vec![("ok".to_string(), "1".to_string())]
        );
        let named: Vec<_> = w.iter().map(|w| w.variable).collect();
        assert_eq!(
            named,
            [
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_HEADERS",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            ]
        );
        let grpc = w[3].to_string();
        assert!(
            grpc.contains("4318") && grpc.contains("http/protobuf"),
            "{grpc}"
        );
    }

    #[test]
    fn protocol_and_compression_names() {
        assert_eq!(parse_protocol(" HTTP/JSON "), Ok(Protocol::HttpJson));
        assert_eq!(parse_protocol("http/protobuf"), Ok(Protocol::HttpProtobuf));
        assert!(parse_protocol("http").is_err());
        assert_eq!(parse_compression("Gzip"), Ok(Compression::Gzip));
        assert_eq!(parse_compression("none"), Ok(Compression::None));
        assert!(parse_compression("deflate").is_err());
        assert_eq!(path(Some(" "), Some("/a")), Some("/a".to_string()));
        assert_eq!(path(None, None), None);
    }
}
