//! Which proxy, if any, a request to the collector goes through: the usual
//! variables, read as curl, Go and Ruby's `Net::HTTP` read them, so that a
//! proxy meant for one kind of traffic never carries the other.
//!
//! - An `https://` endpoint uses `https_proxy` (or `HTTPS_PROXY`), an
//!   `http://` one `http_proxy` (or `HTTP_PROXY`); either falls back to
//!   `all_proxy` (or `ALL_PROXY`). A proxy set for https never carries a
//!   plain-http collector's traffic.
//! - `no_proxy` (or `NO_PROXY`) lists hosts reached directly: entries are
//!   trimmed; `*` is every host; a domain (with or without a leading `.` or
//!   `*.`) matches itself and its subdomains; an IP address matches itself,
//!   a CIDR block (`10.0.0.0/8`) the addresses in it; `host:port` matches
//!   that port only.
//! - A loopback host (`localhost`, `127.0.0.0/8`, `::1`) is always reached
//!   directly, as Go's HTTP client does: a sidecar collector is never sent
//!   through an egress proxy.
//!
//! Nothing here reads the process environment: the variables are read
//! with the settings, on an application thread ([`ProxyVariables::read`]),
//! and travel with the destination, so the choice is made from what the
//! settings saw. (ureq's default configuration still reads the proxy
//! variables once when a transport is built, on the thread that builds it;
//! that reading is replaced by this one.)

use std::net::IpAddr;

use super::url::http_authority;

/// The proxy variables of one scheme, in the order they are read.
const HTTPS_VARIABLES: [&str; 4] = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
const HTTP_VARIABLES: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];
const NO_PROXY_VARIABLES: [&str; 2] = ["no_proxy", "NO_PROXY"];

/// The proxy variables as the environment had them when the settings were
/// read: the names set (non-empty) and their values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyVariables {
    set: Vec<(&'static str, String)>,
}

impl ProxyVariables {
    /// None set: every request goes directly.
    pub const NONE: ProxyVariables = ProxyVariables { set: Vec::new() };

    /// Reads every proxy variable through `get`.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> ProxyVariables {
        let names = HTTPS_VARIABLES[..2]
            .iter()
            .chain(HTTP_VARIABLES.iter())
            .chain(NO_PROXY_VARIABLES.iter());
        let set = names
            .filter_map(|&name| get(name).map(|value| (name, value)))
            .collect();
        ProxyVariables { set }
    }

    /// The proxy a request to `url` goes through under these variables
    /// (see [`proxy_for`]).
    pub fn for_url(&self, url: &str) -> Option<(&'static str, String)> {
        proxy_for(url, |name| {
            self.set
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        })
    }
}

impl std::fmt::Debug for ProxyVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A proxy URL may hold a password: the names only.
        let names: Vec<&str> = self.set.iter().map(|(n, _)| *n).collect();
        f.debug_tuple("ProxyVariables").field(&names).finish()
    }
}

/// The proxy a request to `url` goes through: the variable it comes from
/// and its value, or `None` (directly).
pub fn proxy_for(
    url: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    let (https, host, port) = target(url)?;
    let variables = if https {
        HTTPS_VARIABLES
    } else {
        HTTP_VARIABLES
    };
    let (variable, proxy) = variables.iter().find_map(|&name| {
        let value = get(name)?;
        let value = value.trim();
        (!value.is_empty()).then(|| (name, value.to_string()))
    })?;
    if is_loopback(&host) {
        return None;
    }
    let no_proxy = NO_PROXY_VARIABLES.iter().find_map(|&name| get(name));
    if no_proxy.is_some_and(|list| bypasses(&list, &host, port)) {
        return None;
    }
    Some((variable, proxy))
}

/// Whether `https://`, the host (lowercase, without brackets or a trailing
/// dot) and the port of an `http://` or `https://` URL.
fn target(url: &str) -> Option<(bool, String, u16)> {
    let (https, host_port) = http_authority(url.trim())?;
    let (host, port) = split_host_port(host_port);
    let port = match port {
        Some(p) => p.parse().ok()?,
        None if https => 443,
        None => 80,
    };
    Some((https, normal_host(host), port))
}

/// `host[:port]` or `[v6][:port]`, the port as written.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(inner) = s.strip_prefix('[') {
        return match inner.split_once(']') {
            Some((ip, after)) => (ip, after.strip_prefix(':')),
            None => (inner, None),
        };
    }
    match s.rsplit_once(':') {
        // Two colons or more: an IPv6 address without brackets (no_proxy
        // entries are written so), no port.
        Some((host, _)) if host.contains(':') => (s, None),
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    }
}

fn normal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a `no_proxy` list sends `host:port` directly.
fn bypasses(list: &str, host: &str, port: u16) -> bool {
    let ip = host.parse::<IpAddr>().ok();
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        if let Some((network, bits)) = entry.split_once('/') {
            return match (ip, network.parse::<IpAddr>(), bits.parse::<u8>()) {
                (Some(ip), Ok(network), Ok(bits)) => in_network(ip, network, bits),
                _ => false,
            };
        }
        let (name, entry_port) = split_host_port(entry);
        if entry_port.is_some_and(|p| p.parse::<u16>().ok() != Some(port)) {
            return false;
        }
        let name = name.trim_start_matches("*.").trim_start_matches('.');
        let name = normal_host(name);
        if name.is_empty() {
            return false;
        }
        match (ip, name.parse::<IpAddr>()) {
            (Some(ip), Ok(entry_ip)) => ip == entry_ip,
            (None, Err(_)) => {
                host == name
                    || host
                        .strip_suffix(name.as_str())
                        .is_some_and(|sub| sub.ends_with('.'))
            }
            _ => false,
        }
    })
}

fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn via(url: &str, pairs: &[(&str, &str)]) -> Option<String> {
        proxy_for(url, vars(pairs)).map(|(_, p)| p)
    }

    #[test]
    fn each_scheme_uses_its_own_variable_then_all_proxy() {
        let https_only = [("HTTPS_PROXY", "http://egress:3128")];
        assert_eq!(via("http://collector:4318/v1/traces", &https_only), None);
        assert_eq!(
            via("https://collector/v1/traces", &https_only).as_deref(),
            Some("http://egress:3128")
        );
        let http_only = [("http_proxy", "http://p:1")];
        assert_eq!(via("https://collector/v1/traces", &http_only), None);
        assert_eq!(
            proxy_for("http://collector/v1/traces", vars(&http_only)),
            Some(("http_proxy", "http://p:1".to_string()))
        );
        let all = [("ALL_PROXY", "http://all:1"), ("https_proxy", " ")];
        assert_eq!(
            via("https://collector/", &all).as_deref(),
            Some("http://all:1")
        );
        assert_eq!(via("http://collector/", &[]), None);
    }

    #[test]
    fn loopback_hosts_never_go_through_a_proxy() {
        let p = [("http_proxy", "http://p:1"), ("https_proxy", "http://p:1")];
        for url in [
            "http://localhost:4318/v1/traces",
            "http://LOCALHOST./v1/traces",
            "https://127.0.0.1:4318/v1/traces",
            "http://127.1.2.3/",
            "http://[::1]:4318/",
            "http://user:pw@localhost/",
        ] {
            assert_eq!(via(url, &p), None, "{url}");
        }
        assert!(via("http://10.0.0.1/", &p).is_some());
    }

    #[test]
    fn no_proxy_entries_are_trimmed_and_match_domains_ips_networks_and_ports() {
        let p = |no_proxy: &'static str| [("https_proxy", "http://p:1"), ("NO_PROXY", no_proxy)];
        let direct = |url: &str, no_proxy: &'static str| via(url, &p(no_proxy)).is_none();
        assert!(direct(
            "https://collector.internal/",
            "a.example, collector.internal"
        ));
        assert!(direct(
            "https://otel.svc.cluster.local/",
            "localhost, .cluster.local"
        ));
        assert!(direct("https://otel.svc.cluster.local/", "cluster.local"));
        assert!(direct("https://cluster.local/", ".cluster.local"));
        assert!(direct("https://x.example.com/", "*.example.com"));
        assert!(!direct("https://badexample.com/", "example.com"));
        assert!(direct("https://10.1.2.3:4318/", "10.0.0.0/8"));
        assert!(!direct("https://11.1.2.3/", "10.0.0.0/8"));
        assert!(direct("https://[fd00::5]/", "fd00::/8"));
        assert!(direct("https://192.168.1.9/", "192.168.1.9"));
        assert!(direct("https://collector:4318/", "collector:4318"));
        assert!(!direct("https://collector:4319/", "collector:4318"));
        assert!(direct("https://collector/", "collector:443"));
        assert!(direct("https://anything/", " * "));
        assert!(!direct("https://collector/", ""));
        assert!(!direct("https://collector/", ", ,."));
        // The lowercase variable is read first, as curl does.
        let both = [
            ("https_proxy", "http://p:1"),
            ("no_proxy", "collector"),
            ("NO_PROXY", "other"),
        ];
        assert_eq!(via("https://collector/", &both), None);
    }

    #[test]
    fn variables_read_once_decide_later_and_never_show_their_values() {
        let env = [
            ("http_proxy", "http://user:secret@proxy:3128"),
            ("no_proxy", "skip.example"),
            ("UNRELATED", "x"),
        ];
        let read = ProxyVariables::read(vars(&env));
        // What was read decides, whatever the environment says later.
        assert_eq!(
            read.for_url("http://collector.example:4318/v1/traces"),
            Some(("http_proxy", "http://user:secret@proxy:3128".to_string()))
        );
        assert_eq!(read.for_url("http://skip.example:4318/"), None);
        assert_eq!(read.for_url("https://collector.example/"), None);
        assert_eq!(
            ProxyVariables::NONE.for_url("http://collector.example/"),
            None
        );
        let shown = format!("{read:?}");
        assert_eq!(shown, r#"ProxyVariables(["http_proxy", "no_proxy"])"#);
    }
}
