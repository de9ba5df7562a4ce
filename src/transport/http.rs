//! POSTing encoded requests to an OTLP/HTTP receiver: a blocking client (no
//! async runtime) built once per [`Transport`] and reused across pushes,
//! https with rustls (ring provider) and the platform's certificate store or
//! a configured CA, mTLS, gzip, retries with backoff and `Retry-After`, one
//! deadline per request, cancellation of retries from another thread, and
//! the response's partial success.
//!
//! Nothing here knows spans or the trace store: the caller encodes a body,
//! calls [`Transport::send`] (or sends through the push thread, see
//! [`super::sender`]) and puts back what was not delivered.

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::env;
use super::response::{self, PartialSuccess};
use super::retry::jitter;
pub use super::retry::{
    backoff, parse_http_date, parse_retry_after, retry_wait, Cancel, INITIAL_BACKOFF, MAX_BACKOFF,
    RETRYABLE_STATUSES,
};
use super::settings::{Compression, Destination, MAX_TIMEOUT};
use super::tls::{tls_config, tls_message};
pub use super::tls::{PemFile, Tls};
use crate::support::clock::monotonic_now_ns;
use crate::support::protocol::MAX_REQUEST_BODY;

/// A response body longer than this is an error (not retried).
pub const MAX_RESPONSE_BODY: u64 = 4 * 1024 * 1024;
/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("tasker_trace_native/", env!("CARGO_PKG_VERSION"));

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver accepted the request (2xx). `partial` is the response's
    /// partial success, if it had one (rejected spans are not retried, as
    /// the specification says). `note` says what could not be read of an
    /// accepted response (a body over [`MAX_RESPONSE_BODY`]): the request
    /// still counts as delivered and is never sent again.
    Sent {
        status: u16,
        attempts: u32,
        partial: Option<PartialSuccess>,
        note: Option<String>,
    },
    /// Not delivered. `status` is the last HTTP status, if any response came.
    /// `too_large`: the collector refused the request as too large, with a
    /// 413 or with the 400 the OpenTelemetry Collector answers (`http:
    /// request body too large`) when a body passes its
    /// `max_request_body_size`.
    Failed {
        status: Option<u16>,
        too_large: bool,
        attempts: u32,
        error: String,
    },
}

// ---------------------------------------------------------------------------
// The transport.

/// A target and its HTTP client, built once and reused for every push
/// (connections are kept alive between pushes). Cloning is cheap and the
/// clones share the client and its connections.
#[derive(Clone)]
pub struct Transport {
    target: Arc<Destination>,
    agent: ureq::Agent,
    request_limit: usize,
    /// The largest request the collector is known to take: lowered when it
    /// answers 413 (see [`Transport::too_large`]); shared by the clones.
    learned_limit: Arc<AtomicUsize>,
    /// Until when (monotonic nanoseconds, 0: no such time) the collector
    /// last asked to be left alone (`Retry-After`); see
    /// [`Transport::asked_to_wait`].
    asked_until_ns: Arc<AtomicU64>,
}

/// The longest wait a `Retry-After` can ask of the background exporter's
/// next attempt (a flush still tries at once).
pub const MAX_ASKED_WAIT: Duration = Duration::from_secs(600);

/// The smallest request size limit a 413 can teach: a request of less than
/// twice this the collector refuses as too large is not split further (what
/// it carried is rejected).
pub const MIN_LEARNED_LIMIT: usize = 64 * 1024;

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What one attempt gave.
enum Attempt {
    Status {
        status: u16,
        retry_after: Option<Duration>,
        content_type: Option<String>,
        /// Where a redirect points (its `Location`).
        location: Option<String>,
        body: Vec<u8>,
        /// The body was over [`MAX_RESPONSE_BODY`] and was not read.
        over_limit: bool,
    },
    Transport {
        error: String,
        retryable: bool,
    },
}

impl Transport {
    /// Checks the URL and the TLS files' contents and builds the client.
    pub fn new(target: Destination) -> Result<Transport, String> {
        env::check_endpoint(&target.url)?;
        let timeout = target.timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
        // The proxy variables of the endpoint's scheme only, and loopback
        // and `no_proxy` hosts directly (ureq's own reading takes
        // `HTTPS_PROXY` for http too, and reads `no_proxy` untrimmed), as
        // read with the settings.
        let proxy = match target.proxy.for_url(&target.url) {
            None => None,
            Some((variable, value)) => Some(ureq::Proxy::new(&value).map_err(|_| {
                format!("{variable} is not a proxy URL ({})", env::shown_url(&value))
            })?),
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(proxy)
            .timeout_global(Some(timeout))
            .user_agent(USER_AGENT)
            .tls_config(tls_config(&target.tls)?)
            .build();
        Ok(Transport {
            target: Arc::new(target),
            agent: ureq::Agent::new_with_config(config),
            request_limit: MAX_REQUEST_BODY,
            learned_limit: Arc::new(AtomicUsize::new(MAX_REQUEST_BODY)),
            asked_until_ns: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn target(&self) -> &Destination {
        &self.target
    }

    /// Most bytes of one (uncompressed) request body: 16 MiB, or less once
    /// the collector refused a request as too large.
    pub fn request_limit(&self) -> usize {
        self.request_limit
            .min(self.learned_limit.load(Ordering::Relaxed))
    }

    /// How long the collector's last `Retry-After` still asks to wait (at
    /// most [`MAX_ASKED_WAIT`]), when a request failed with one since the
    /// last delivery: the background exporter waits at least that long
    /// before its next attempt, as the specification asks.
    pub fn asked_to_wait(&self) -> Option<Duration> {
        let until = self.asked_until_ns.load(Ordering::Relaxed);
        let now = monotonic_now_ns();
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// The collector refused a request of `len` (uncompressed) bytes as too
    /// large (413): later requests are cut at half of it, but never below
    /// [`MIN_LEARNED_LIMIT`]. Whether the limit went down, so that what the
    /// request carried can go again in smaller requests (a lifecycle run or
    /// a trace is never split: one alone over the limit is refused again,
    /// until the limit is down to its floor).
    pub fn too_large(&self, len: usize) -> bool {
        if len <= MIN_LEARNED_LIMIT {
            return false;
        }
        let half = (len / 2).max(MIN_LEARNED_LIMIT);
        self.learned_limit.fetch_min(half, Ordering::Relaxed) > half
    }

    /// A smaller request limit, for tests of the splitting.
    #[doc(hidden)]
    pub fn with_request_limit(mut self, limit: usize) -> Transport {
        self.request_limit = limit;
        self
    }

    /// Sends `body` (an encoded `ExportTraceServiceRequest` in the target's
    /// protocol) on this thread, compressed as the target says.
    ///
    /// Statuses 429, 502, 503 and 504 and connection failures are retried
    /// with backoff, waiting what `Retry-After` asks where given, while the
    /// timeout allows; a wait that would pass it is not started. Any other
    /// status (400 and 413 among them) or a TLS failure ends the request at
    /// once. Any 2xx is success, whatever its body: one over 4 MiB is not
    /// read (the delivery's `note` says so), and one that does not decode
    /// only loses the partial-success details.
    ///
    /// `cancel` ends a backoff wait and stops further attempts, but not a
    /// request on the wire (that ends at the timeout). To wait for a request
    /// in a way that a cancel ends at once, send it through a
    /// [`PushSender`](super::sender::PushSender).
    pub fn send(&self, body: &[u8], cancel: &Cancel) -> Delivery {
        let deadline = Instant::now() + self.target.timeout.min(MAX_TIMEOUT);
        let compressed;
        let wire = match self.target.compression {
            Compression::None => body,
            Compression::Gzip => match gzip(body) {
                Ok(c) => {
                    compressed = c;
                    &compressed[..]
                }
                Err(e) => {
                    return Delivery::Failed {
                        status: None,
                        too_large: false,
                        attempts: 0,
                        error: format!("gzip failed: {e}"),
                    }
                }
            },
        };
        let mut attempts = 0u32;
        let mut last_status: Option<u16> = None;
        loop {
            if cancel.is_cancelled() {
                return Delivery::Failed {
                    status: last_status,
                    too_large: false,
                    attempts,
                    error: "interrupted".to_string(),
                };
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Delivery::Failed {
                    status: last_status,
                    too_large: false,
                    attempts,
                    error: format!(
                        "timed out after {attempts} attempt(s) ({})",
                        self.target.shown_url()
                    ),
                };
            }
            attempts += 1;
            let (wait, failure) = match self.attempt(wire, attempts == 1, remaining) {
                Attempt::Status {
                    status,
                    content_type,
                    body,
                    over_limit,
                    ..
                } if (200..300).contains(&status) => {
                    self.asked_until_ns.store(0, Ordering::Relaxed);
                    return Delivery::Sent {
                        status,
                        attempts,
                        partial: response::partial_success(
                            content_type.as_deref(),
                            self.target.protocol,
                            &body,
                        ),
                        note: over_limit.then(|| {
                            format!(
                                "HTTP {status} from {}: accepted; the response body is over {} \
                                 MiB and was not read",
                                self.target.shown_url(),
                                MAX_RESPONSE_BODY >> 20
                            )
                        }),
                    };
                }
                Attempt::Status {
                    status,
                    retry_after,
                    content_type,
                    location,
                    body,
                    over_limit,
                } => {
                    last_status = Some(status);
                    let text = if (300..400).contains(&status) {
                        redirect_text(location.as_deref())
                    } else if over_limit {
                        format!("the response body is over {} MiB", MAX_RESPONSE_BODY >> 20)
                    } else {
                        self.error_text(content_type.as_deref(), &body)
                    };
                    let too_large = status == 413 || (status == 400 && says_too_large(&text));
                    let error = format!("HTTP {status} from {}: {text}", self.target.shown_url());
                    if over_limit || !RETRYABLE_STATUSES.contains(&status) {
                        return Delivery::Failed {
                            status: Some(status),
                            too_large,
                            attempts,
                            error,
                        };
                    }
                    if let Some(asked) = retry_after {
                        let asked = asked.min(MAX_ASKED_WAIT).as_nanos() as u64;
                        self.asked_until_ns
                            .store(monotonic_now_ns().saturating_add(asked), Ordering::Relaxed);
                    }
                    let wait = retry_wait(retry_after, attempts, jitter());
                    (wait, error)
                }
                Attempt::Transport { error, retryable } => {
                    if !retryable {
                        return Delivery::Failed {
                            status: last_status,
                            too_large: false,
                            attempts,
                            error,
                        };
                    }
                    (backoff(attempts, jitter()), error)
                }
            };
            // A Retry-After too far away for the clock is past the deadline.
            let resume = Instant::now().checked_add(wait).unwrap_or(deadline);
            if resume >= deadline {
                return Delivery::Failed {
                    status: last_status,
                    too_large: false,
                    attempts,
                    error: format!(
                        "{failure}; gave up after {attempts} attempt(s): the next retry \
                         (in {:.1}s) would pass the timeout",
                        wait.as_secs_f64()
                    ),
                };
            }
            if cancel.sleep_until(resume) {
                return Delivery::Failed {
                    status: last_status,
                    too_large: false,
                    attempts,
                    error: format!("interrupted; last error: {failure}"),
                };
            }
        }
    }

    fn attempt(&self, body: &[u8], first: bool, remaining: Duration) -> Attempt {
        let t = &self.target;
        let mut request = self
            .agent
            .post(&t.url)
            .header("Content-Type", t.protocol.content_type());
        if t.compression == Compression::Gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        // Responses uncompressed, unless the configured headers ask
        // otherwise (a gzip response is decoded either way).
        if !t
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("accept-encoding"))
        {
            request = request.header("Accept-Encoding", "identity");
        }
        for (name, value) in &t.headers {
            let managed = ["content-type", "content-encoding", "content-length"]
                .iter()
                .any(|m| name.eq_ignore_ascii_case(m));
            if !managed {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        if !first {
            // Retries get what is left of the budget. (The first attempt
            // uses the agent's own settings, whose TLS setup the agent
            // keeps between requests.)
            request = request.config().timeout_global(Some(remaining)).build();
        }
        match request.send(body) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let retry_after =
                    header("retry-after").and_then(|v| parse_retry_after(&v, SystemTime::now()));
                let content_type = header("content-type");
                let location = header("location");
                let coding = header("content-encoding");
                let (body, over_limit) = match response
                    .body_mut()
                    .with_config()
                    .limit(MAX_RESPONSE_BODY)
                    .read_to_vec()
                {
                    Ok(body) => decoded(coding.as_deref(), body),
                    // The status came: a 2xx is delivered whatever follows
                    // it; any other status is not retried.
                    Err(ureq::Error::BodyExceedsLimit(_)) => (Vec::new(), true),
                    // The status came; a body cut short only loses details.
                    Err(_) => (Vec::new(), false),
                };
                Attempt::Status {
                    status,
                    retry_after,
                    content_type,
                    location,
                    body,
                    over_limit,
                }
            }
            Err(e) => classify(e, &t.url, t.tls.client_certificate.is_none()),
        }
    }

    /// An error response's message: the `google.rpc.Status` message, else
    /// the start of the body as text.
    fn error_text(&self, content_type: Option<&str>, body: &[u8]) -> String {
        response::error_text(content_type, self.target.protocol, body)
    }
}

/// Whether a 400's message is the one Go's HTTP server gives a body over
/// its limit (`http: request body too large`): the OpenTelemetry Collector
/// answers so, with a 400 rather than a 413, when a request passes its
/// `max_request_body_size` (20 MiB by default). What such a request
/// carried is not bad: it goes again in smaller requests.
fn says_too_large(message: &str) -> bool {
    message
        .to_ascii_lowercase()
        .contains("request body too large")
}

/// What a redirect says: where it points (its password hidden). Redirects
/// are not followed: a POST's body and headers (credentials among them)
/// go only where the endpoint says, so the endpoint is what to change.
fn redirect_text(location: Option<&str>) -> String {
    match location.map(str::trim).filter(|l| !l.is_empty()) {
        Some(l) => format!(
            "redirected to {} (redirects are not followed: set the endpoint to the URL \
             the collector redirects to)",
            env::shown_url(l)
        ),
        None => "a redirect without a Location (redirects are not followed)".to_string(),
    }
}

/// A response body as sent, in the `Content-Encoding` it came in:
/// decoded (gzip) within [`MAX_RESPONSE_BODY`], with whether it was over
/// it. A body that does not decode, or in a coding not known here, is
/// empty: the status stands, only its details are lost.
fn decoded(coding: Option<&str>, body: Vec<u8>) -> (Vec<u8>, bool) {
    let coding = coding.map(|c| c.trim().to_ascii_lowercase());
    match coding.as_deref() {
        None | Some("" | "identity") => (body, false),
        Some("gzip" | "x-gzip") => {
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(body.as_slice())
                .take(MAX_RESPONSE_BODY + 1)
                .read_to_end(&mut out);
            match read {
                Ok(_) if out.len() as u64 > MAX_RESPONSE_BODY => (Vec::new(), true),
                Ok(_) => (out, false),
                Err(_) => (Vec::new(), false),
            }
        }
        Some(_) => (Vec::new(), false),
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    // Level 1: OTLP bodies are repetitive and shrink well at the fastest
    // level; higher levels cost much more CPU for a few percent.
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    e.write_all(body)?;
    e.finish()
}

/// A ureq error as a message and whether it is worth retrying: connection
/// failures and timeouts are; TLS failures (certificates above all) and
/// anything else are not. `no_client_certificate`: none is configured (a
/// connection cut short over https then says that one may be needed). The
/// message shows `url` without its password, and hides it in ureq's own
/// words too (a bad URI is quoted whole).
fn classify(e: ureq::Error, url: &str, no_client_certificate: bool) -> Attempt {
    let shown = env::shown_url(url);
    let tls = match &e {
        ureq::Error::Rustls(t) => Some(t.clone()),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned(),
        _ => None,
    };
    if let Some(t) = tls {
        return Attempt::Transport {
            error: tls_message(&t, &shown),
            retryable: false,
        };
    }
    let retryable = matches!(
        e,
        ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
    );
    // A server that wants a client certificate and gets none may end the
    // connection right after the handshake, before its alert is read.
    let cut_short = matches!(&e, ureq::Error::Io(io) if matches!(
        io.kind(),
        std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::UnexpectedEof
    ));
    let https = url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    // An OTLP/gRPC port (4317) speaks HTTP/2 only: its first bytes are not
    // an HTTP/1.1 status line.
    let not_http1 = matches!(
        &e,
        ureq::Error::Protocol(p) if p.to_string().contains("invalid HTTP version")
    );
    let hint = if cut_short && https && no_client_certificate {
        "; the server ended the connection, as one that requires a client certificate \
         (otlp_client_certificate, otlp_client_key) may"
    } else if not_http1 {
        "; the server does not answer in HTTP/1.1, as an OTLP/gRPC port (4317) does: this \
         exporter speaks OTLP/HTTP (the collector's port 4318)"
    } else {
        ""
    };
    Attempt::Transport {
        error: format!(
            "{} ({shown}){hint}",
            env::without_password(&e.to_string(), url)
        ),
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::super::proxy::ProxyVariables;
    use super::super::tls::root_certs;
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_after_is_honoured_but_never_sooner_than_the_backoff() {
        let secs = Duration::from_secs;
        assert_eq!(retry_wait(Some(secs(3)), 1, 1.0), secs(3));
        assert_eq!(
            retry_wait(Some(Duration::ZERO), 1, 1.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            retry_wait(Some(Duration::ZERO), 4, 1.0),
            Duration::from_millis(800)
        );
        assert_eq!(retry_wait(None, 2, 1.0), Duration::from_millis(200));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        assert_eq!(backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, 0.5), Duration::from_millis(200));
        assert_eq!(backoff(10, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(1, 7.0), Duration::from_millis(100));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.5..=1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn http_dates_parse_exactly() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800)
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"), None);
    }

    #[test]
    fn cancel_wakes_a_sleeper() {
        let cancel = std::sync::Arc::new(Cancel::for_current_thread());
        let c = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c.cancel();
        });
        let started = Instant::now();
        assert!(cancel.sleep_until(Instant::now() + Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
    }

    #[test]
    fn a_transport_can_be_shared_by_threads_and_hides_header_values() {
        fn shared<T: Send + Sync>() {}
        shared::<Transport>();
        let target = Destination {
            headers: vec![("authorization".into(), "Bearer secret".into())],
            ..Destination::new("http://127.0.0.1:1/v1/traces")
        };
        let shown = format!("{:?}", Transport::new(target).unwrap());
        assert!(
            shown.contains("authorization") && !shown.contains("secret"),
            "{shown}"
        );
    }

    #[test]
    fn an_unusable_proxy_variable_is_named_its_password_hidden() {
        let proxy = ProxyVariables::read(|name| {
            (name == "http_proxy").then(|| "ftp://user:secret@proxy.example:21".to_string())
        });
        let target = Destination {
            proxy,
            ..Destination::new("http://collector.example:4318/v1/traces")
        };
        let error = Transport::new(target).unwrap_err();
        assert!(
            error.starts_with("http_proxy is not a proxy URL"),
            "{error}"
        );
        assert!(!error.contains("secret"), "{error}");
        // Empty and blank values are no proxy at all.
        let blank = ProxyVariables::read(|name| (name == "HTTP_PROXY").then(|| " ".to_string()));
        let target = Destination {
            proxy: blank,
            ..Destination::new("http://collector.example:4318/v1/traces")
        };
        assert!(Transport::new(target).is_ok());
    }

    #[test]
    fn gzip_round_trips() {
        let body = b"resourceSpans ".repeat(1000);
        let packed = gzip(&body).unwrap();
        assert!(packed.len() < body.len() / 10);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out)
            .unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn tls_files_must_hold_what_they_are_for() {
        let file = |pem: &str| PemFile {
            path: "/x.pem".into(),
            pem: pem.as_bytes().to_vec(),
        };
        let err = root_certs(&file("not a certificate")).unwrap_err();
        assert!(
            err.contains("/x.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let tls = Tls {
            client_key: Some(file("")),
            ..Tls::default()
        };
        assert!(tls_config(&tls)
            .unwrap_err()
            .contains("without a client certificate"));
        let target = Destination {
            tls: Tls {
                certificate: Some(file("")),
                ..Tls::default()
            },
            ..Destination::new("https://127.0.0.1:1/v1/traces")
        };
        assert!(Transport::new(target)
            .unwrap_err()
            .contains("CA certificate file"));
        assert!(Transport::new(Destination::new("ftp://x")).is_err());
        assert!(Tls::from_files(Some("/nonexistent/ca.pem"), None, None)
            .unwrap_err()
            .contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn the_status_message_or_the_start_of_the_body_explains_an_error() {
        let t = Transport::new(Destination::new("http://127.0.0.1:1/v1/traces")).unwrap();
        assert_eq!(
            t.error_text(Some("application/json"), br#"{"code":3,"message":"bad"}"#),
            "bad"
        );
        assert_eq!(
            t.error_text(Some("application/x-protobuf"), &[0x12, 0x02, b'n', b'o']),
            "no"
        );
        assert_eq!(t.error_text(Some("text/plain"), b"  oops \n"), "oops");
        assert_eq!(t.error_text(None, &[0xff, 0xfe]), "(2 bytes)");
    }
}
