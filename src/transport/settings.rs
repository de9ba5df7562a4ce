//! Where and how requests are sent: the `otlp_*` settings, a push's
//! overrides, and the [`Destination`] a transport is built for.

use std::time::Duration;

use super::proxy::ProxyVariables;
use super::tls::Tls;
use crate::support::protocol::Protocol;

/// The default timeout of one request (every attempt and wait included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest timeout; "no limit" (a timeout of 0 in the environment) is this.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Compression of request bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// `Content-Encoding: gzip`: the default.
    #[default]
    Gzip,
    None,
}

/// Where and how to send. Two targets are equal when they send the same
/// way (TLS files compared by their contents).
#[derive(Clone, PartialEq, Eq)]
pub struct Destination {
    /// The full traces URL (`http://host:4318/v1/traces`, or `https://`).
    pub url: String,
    /// Extra headers (authorization, tenant ids ...). `Content-Type`,
    /// `Content-Encoding` and `Content-Length` are set by the transport; headers
    /// of those names here are ignored.
    pub headers: Vec<(String, String)>,
    /// The budget of one request: every attempt and every wait fit in it.
    pub timeout: Duration,
    pub protocol: Protocol,
    pub compression: Compression,
    pub tls: Tls,
    /// The proxy variables read with the settings.
    pub proxy: ProxyVariables,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values and the URL's password often are credentials:
        // header names only, the URL as messages show it.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Destination")
            .field("url", &self.shown_url())
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("protocol", &self.protocol)
            .field("compression", &self.compression)
            .field("tls", &self.tls)
            .field("proxy", &self.proxy)
            .finish()
    }
}

impl Destination {
    /// The URL as messages show it: its password, if any, as `***`.
    pub fn shown_url(&self) -> std::borrow::Cow<'_, str> {
        super::url::shown_url(&self.url)
    }

    /// `url` with the defaults: http/protobuf, gzip, 10 s, no headers, the
    /// platform's certificates.
    pub fn new(url: impl Into<String>) -> Destination {
        Destination {
            url: url.into(),
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            protocol: Protocol::default(),
            compression: Compression::default(),
            tls: Tls::default(),
            proxy: ProxyVariables::NONE,
        }
    }
}

/// The `otlp_*` settings: where pushes go and how they are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    /// `otlp_endpoint`: a base URL (`/v1/traces` is appended unless it ends
    /// so), or `None`: the environment's endpoint, else the default.
    pub endpoint: Option<String>,
    /// `otlp_headers`, sent with every request.
    pub headers: Vec<(String, String)>,
    pub protocol: Protocol,
    pub compression: Compression,
    /// The budget of one request, retries and waits included.
    pub timeout: Duration,
    /// PEM file paths: the only CA(s) trusted; a client certificate and key.
    pub certificate: Option<String>,
    pub client_certificate: Option<String>,
    pub client_key: Option<String>,
}

impl OtlpSettings {
    /// The defaults without any environment: http/protobuf, gzip, 10 s.
    pub const DEFAULT: OtlpSettings = OtlpSettings {
        endpoint: None,
        headers: Vec::new(),
        protocol: Protocol::HttpProtobuf,
        compression: Compression::Gzip,
        timeout: DEFAULT_TIMEOUT,
        certificate: None,
        client_certificate: None,
        client_key: None,
    };
}

impl Default for OtlpSettings {
    fn default() -> Self {
        OtlpSettings::DEFAULT
    }
}

/// What one push gives on top of the settings (`push_otlp`'s arguments);
/// the default is the settings alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushOverrides {
    /// A base URL, as `otlp_endpoint`.
    pub endpoint: Option<String>,
    /// Added to the settings' headers, replacing those of the same name.
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub protocol: Option<Protocol>,
}
