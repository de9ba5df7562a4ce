//! The exporter's settings in force (the `otlp_*` settings), their defaults
//! from the environment, and the one way from settings to a [`Transport`]:
//! [`OtlpClient::transport`]. The transport (its HTTP client and kept-alive
//! connections) is built once and reused by every push while the target
//! stays the same; a change of settings or arguments, a changed TLS file, or
//! a fork (a child must never share the parent's connections) builds a new
//! one.

use super::env::{self, DEFAULT_TRACES_ENDPOINT};
use super::http::Transport;
use super::proxy::ProxyVariables;
use super::sender::PushSender;
use super::settings::{Destination, OtlpSettings, PushOverrides};
use super::tls::{check_client_files, check_pem_file, PemRole, Tls};
use crate::support::env::Warning;
use crate::support::fork::{forks, ForkSafeMutex};

/// The target of a push: `overrides` over `settings`, whose endpoint falls
/// back to `environment_endpoint` (a full traces URL), through the proxy
/// `proxy` names. Reads the TLS files now; an unreadable or unusable one is
/// the error.
pub fn target_for(
    settings: &OtlpSettings,
    environment_endpoint: &str,
    proxy: &ProxyVariables,
    overrides: &PushOverrides,
) -> Result<Destination, String> {
    let url = match overrides.endpoint.as_ref().or(settings.endpoint.as_ref()) {
        Some(base) => env::traces_url_from_base(base),
        None => environment_endpoint.to_string(),
    };
    let mut headers = settings.headers.clone();
    env::merge_headers(&mut headers, overrides.headers.clone());
    Ok(Destination {
        url,
        headers,
        timeout: overrides.timeout.unwrap_or(settings.timeout),
        protocol: overrides.protocol.unwrap_or(settings.protocol),
        compression: settings.compression,
        tls: Tls::from_files(
            settings.certificate.as_deref(),
            settings.client_certificate.as_deref(),
            settings.client_key.as_deref(),
        )?,
        proxy: proxy.clone(),
    })
}

/// The settings the environment gives, the traces URL it names (or the
/// default), and a warning for every value that cannot be used (then
/// ignored, as if unset): the TLS files are read and checked too. `get`
/// reads a variable.
pub fn settings_from_environment(
    get: impl Fn(&str) -> Option<String>,
) -> (OtlpSettings, String, Vec<Warning>) {
    let (from_env, mut warnings) = env::otlp_environment(&get);
    let mut settings = from_env.settings;
    let mut file = |path: Option<String>, role: PemRole, variables: env::FileVariables| {
        let path = path?;
        match check_pem_file(&path, role) {
            Ok(()) => Some(path),
            Err(message) => {
                warnings.push(Warning::ignored(
                    env::path_variable(variables, &get),
                    message,
                ));
                None
            }
        }
    };
    settings.certificate = file(
        settings.certificate.take(),
        PemRole::Ca,
        env::CERTIFICATE_VARIABLES,
    );
    settings.client_certificate = file(
        settings.client_certificate.take(),
        PemRole::ClientCertificate,
        env::CLIENT_CERTIFICATE_VARIABLES,
    );
    settings.client_key = file(
        settings.client_key.take(),
        PemRole::ClientKey,
        env::CLIENT_KEY_VARIABLES,
    );
    let (cert, key) = (&settings.client_certificate, &settings.client_key);
    if let Err(message) = check_client_files(cert.as_deref(), key.as_deref()) {
        let variables = if cert.is_some() {
            env::CLIENT_CERTIFICATE_VARIABLES
        } else {
            env::CLIENT_KEY_VARIABLES
        };
        warnings.push(Warning::ignored(
            env::path_variable(variables, &get),
            format!("{message} (no client certificate is sent)"),
        ));
        settings.client_certificate = None;
        settings.client_key = None;
    }
    (settings, from_env.endpoint, warnings)
}

/// The process's exporter: the settings in force, the environment's
/// endpoint, and the transport last built.
pub struct OtlpClient {
    state: ForkSafeMutex<State>,
    /// The thread pushes send through.
    sender: PushSender,
}

struct State {
    settings: OtlpSettings,
    /// The traces URL the environment gave (or the default), for settings
    /// without an endpoint.
    environment_endpoint: String,
    /// The proxy variables, read with the environment's settings.
    environment_proxy: ProxyVariables,
    cached: Option<Built>,
}

/// A transport and what it was built for.
struct Built {
    target: Destination,
    /// [`forks`] when it was built: a child builds its own.
    forks: u64,
    transport: Transport,
}

impl Default for OtlpClient {
    fn default() -> Self {
        OtlpClient::new()
    }
}

impl OtlpClient {
    /// Default settings, the default endpoint, nothing built yet.
    pub const fn new() -> OtlpClient {
        OtlpClient {
            state: ForkSafeMutex::new(State {
                settings: OtlpSettings::DEFAULT,
                environment_endpoint: String::new(),
                environment_proxy: ProxyVariables::NONE,
                cached: None,
            }),
            sender: PushSender::new(),
        }
    }

    /// Makes this process-wide exporter's lock fork-safe (see [`crate::support::fork`]).
    pub fn register_for_fork(&'static self) -> bool {
        self.state.register() & self.sender.register_for_fork()
    }

    /// The thread pushes send through (started at the first push).
    pub fn push_sender(&self) -> &PushSender {
        &self.sender
    }

    /// Sets the traces URL the environment gives (see
    /// [`settings_from_environment`]), for settings without an endpoint.
    pub fn set_environment_endpoint(&self, endpoint: String) {
        let old = std::mem::replace(&mut self.state.lock().environment_endpoint, endpoint);
        drop(old);
    }

    /// Sets the proxy variables as the environment has them (read with the
    /// other variables, on an application thread).
    pub fn set_environment_proxy(&self, proxy: ProxyVariables) {
        let old = std::mem::replace(&mut self.state.lock().environment_proxy, proxy);
        drop(old);
    }

    /// The settings in force (a copy).
    pub fn settings(&self) -> OtlpSettings {
        self.state.lock().settings.clone()
    }

    /// Puts settings in force; the next push builds a transport for them.
    pub fn set_settings(&self, settings: OtlpSettings) {
        let old = std::mem::replace(&mut self.state.lock().settings, settings);
        drop(old);
    }

    /// The target a push with `overrides` sends to (TLS files read now).
    pub fn target(&self, overrides: &PushOverrides) -> Result<Destination, String> {
        let (settings, endpoint, proxy) = {
            let state = self.state.lock();
            (
                state.settings.clone(),
                state.environment_endpoint.clone(),
                state.environment_proxy.clone(),
            )
        };
        let endpoint = if endpoint.is_empty() {
            DEFAULT_TRACES_ENDPOINT.to_string()
        } else {
            endpoint
        };
        target_for(&settings, &endpoint, &proxy, overrides)
    }

    /// The transport for a push with `overrides` (the default: the settings
    /// alone): the one built last when its target is the same and no fork
    /// came since, else a new one, kept for the next push. The error says
    /// why no transport could be built (a TLS file, the URL).
    pub fn transport(&self, overrides: &PushOverrides) -> Result<Transport, String> {
        let target = self.target(overrides)?;
        let now = forks();
        {
            let state = self.state.lock();
            if let Some(built) = &state.cached {
                if built.forks == now && built.target == target {
                    return Ok(built.transport.clone());
                }
            }
        }
        // Built without the lock: reading certificates and setting up TLS
        // take a while, and a concurrent push may build its own meanwhile.
        let transport = Transport::new(target.clone())?;
        let replaced = self.state.lock().cached.replace(Built {
            target,
            forks: now,
            transport: transport.clone(),
        });
        // Closes the old client's connections (in a child: its copies of
        // the parent's sockets, which the parent keeps) outside the lock.
        drop(replaced);
        Ok(transport)
    }
}

#[cfg(test)]
mod tests {
    use super::super::settings::Compression;
    use super::*;
    use crate::support::protocol::Protocol;
    use std::time::Duration;

    fn overrides() -> PushOverrides {
        PushOverrides::default()
    }

    #[test]
    fn the_endpoint_is_the_argument_else_the_setting_else_the_environment() {
        let settings = OtlpSettings::DEFAULT;
        let env_url = "http://env:4318/custom";
        assert_eq!(
            target_for(&settings, env_url, &ProxyVariables::NONE, &overrides())
                .unwrap()
                .url,
            env_url
        );
        let set = OtlpSettings {
            endpoint: Some("https://set:4318/".into()),
            ..OtlpSettings::DEFAULT
        };
        assert_eq!(
            target_for(&set, env_url, &ProxyVariables::NONE, &overrides())
                .unwrap()
                .url,
            "https://set:4318/v1/traces"
        );
        let arg = PushOverrides {
            endpoint: Some("http://arg:1/v1/traces".into()),
            ..overrides()
        };
        assert_eq!(
            target_for(&set, env_url, &ProxyVariables::NONE, &arg)
                .unwrap()
                .url,
            "http://arg:1/v1/traces"
        );
    }

    #[test]
    fn arguments_override_settings_and_add_headers() {
        let settings = OtlpSettings {
            headers: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            protocol: Protocol::HttpJson,
            compression: Compression::None,
            timeout: Duration::from_secs(3),
            ..OtlpSettings::DEFAULT
        };
        let plain = target_for(
            &settings,
            DEFAULT_TRACES_ENDPOINT,
            &ProxyVariables::NONE,
            &overrides(),
        )
        .unwrap();
        assert_eq!(
            (plain.protocol, plain.compression, plain.timeout),
            (
                Protocol::HttpJson,
                Compression::None,
                Duration::from_secs(3)
            )
        );
        let given = PushOverrides {
            headers: vec![("B".into(), "3".into())],
            timeout: Some(Duration::from_millis(250)),
            protocol: Some(Protocol::HttpProtobuf),
            ..overrides()
        };
        let t = target_for(
            &settings,
            DEFAULT_TRACES_ENDPOINT,
            &ProxyVariables::NONE,
            &given,
        )
        .unwrap();
        assert_eq!(
            t.headers,
            vec![("a".to_string(), "1".to_string()), ("B".into(), "3".into())]
        );
        assert_eq!(t.timeout, Duration::from_millis(250));
        assert_eq!(t.protocol, Protocol::HttpProtobuf);
        assert_eq!(t.compression, Compression::None, "not an argument");
    }

    #[test]
    fn a_missing_tls_file_is_the_error_of_the_target() {
        let settings = OtlpSettings {
            certificate: Some("/nonexistent/ca.pem".into()),
            ..OtlpSettings::DEFAULT
        };
        let e = target_for(
            &settings,
            DEFAULT_TRACES_ENDPOINT,
            &ProxyVariables::NONE,
            &overrides(),
        )
        .unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn the_environment_gives_defaults_and_warns_about_what_it_cannot_use() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                "/nonexistent/key.pem",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ];
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let (settings, endpoint, warnings) = settings_from_environment(get);
        assert_eq!(endpoint, "http://collector:4318/v1/traces");
        assert_eq!(
            settings,
            OtlpSettings {
                protocol: Protocol::HttpJson,
                timeout: Duration::from_millis(1500),
                ..OtlpSettings::DEFAULT
            }
        );
        let named: Vec<&str> = warnings.iter().map(|w| w.variable).collect();
        assert_eq!(
            named,
            [
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            ]
        );
        assert!(warnings[1].message.contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn one_transport_serves_while_the_target_stays_the_same() {
        let client = OtlpClient::new();
        let http = |port: u16| PushOverrides {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            ..overrides()
        };
        let first = client.transport(&http(1)).unwrap();
        let again = client.transport(&http(1)).unwrap();
        assert!(std::ptr::eq(first.target(), again.target()), "reused");
        let other = client.transport(&http(2)).unwrap();
        assert!(!std::ptr::eq(first.target(), other.target()), "rebuilt");
        client.set_settings(OtlpSettings {
            timeout: Duration::from_secs(1),
            ..OtlpSettings::DEFAULT
        });
        let changed = client.transport(&http(2)).unwrap();
        assert!(!std::ptr::eq(other.target(), changed.target()));
        assert_eq!(changed.target().timeout, Duration::from_secs(1));
        assert_eq!(
            client.transport(&overrides()).unwrap().target().url,
            DEFAULT_TRACES_ENDPOINT
        );
    }
}
