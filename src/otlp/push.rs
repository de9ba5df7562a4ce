//! POSTing an encoded request to an OTLP/HTTP collector: a blocking client
//! (no async runtime), retries with backoff, `Retry-After`, one overall
//! deadline, and cancellation from another thread.
//!
//! Nothing here touches the trace store: the caller drains records, encodes
//! them, calls [`post`], and puts the records back when delivery failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Statuses that mean "try again later".
pub const RETRYABLE_STATUSES: [u16; 4] = [429, 502, 503, 504];
/// First backoff delay; it doubles each attempt up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most of a response body kept for error messages and partial-success parsing.
const MAX_RESPONSE_BODY: u64 = 64 * 1024;

/// Where and how to send.
#[derive(Clone, Debug)]
pub struct Target {
    /// The full traces URL (`http://host:4318/v1/traces`).
    pub url: String,
    /// Extra headers (authorization, tenant ids ...). `Content-Type` is always
    /// `application/json`; a header of that name here is ignored.
    pub headers: Vec<(String, String)>,
    /// The whole budget: every attempt and every wait fit in it.
    pub timeout: Duration,
}

/// How a push ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The collector accepted the request (2xx). `partial` holds the message of
    /// an OTLP partial success (some spans rejected by the collector; those are
    /// not retried, as the specification says).
    Sent {
        status: u16,
        attempts: u32,
        partial: Option<String>,
    },
    /// Not delivered. `status` is the last HTTP status, if any response came.
    Failed {
        status: Option<u16>,
        attempts: u32,
        error: String,
    },
}

/// Lets another thread stop a push: a pending backoff wait ends at once and no
/// further attempt starts. A request already on the wire runs until it ends or
/// its timeout passes.
#[derive(Debug)]
pub struct Cancel {
    cancelled: AtomicBool,
    waiter: Thread,
}

impl Cancel {
    /// A token for the current thread, which is the one that will wait.
    pub fn for_current_thread() -> Cancel {
        Cancel {
            cancelled: AtomicBool::new(false),
            waiter: std::thread::current(),
        }
    }

    /// Cancels; callable from any thread. Lock-free and allocation-free.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.waiter.unpark();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Sleeps until `until` or cancellation; true when cancelled.
    fn sleep_until(&self, until: Instant) -> bool {
        loop {
            if self.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            std::thread::park_timeout(until - now);
        }
    }
}

/// The delay before attempt `attempt + 1` (attempt counts from 1): doubling
/// from [`INITIAL_BACKOFF`], capped at [`MAX_BACKOFF`], scaled by `jitter` in
/// `[0.5, 1.0]` so that many processes do not retry in step.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let base = INITIAL_BACKOFF.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
    base.mul_f64(jitter.clamp(0.5, 1.0))
}

/// A `Retry-After` value: delay-seconds, or an HTTP-date (IMF-fixdate)
/// compared with `now`. `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(v)?;
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(Duration::from_secs(
        u64::try_from(at - now_secs).unwrap_or(0),
    ))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` to seconds since the epoch.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let mut parts = s.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u32 = parts.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month_name = parts.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))? as u32
        + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let sec: i64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A small random number in `[0.5, 1.0]` for jitter; quality does not matter.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut z = u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(32);
    z = (z ^ (z >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    z ^= z >> 33;
    0.5 + (z % 1_000_001) as f64 / 2_000_000.0
}

/// What one attempt gave.
enum Attempt {
    Status {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    Transport {
        error: String,
        retryable: bool,
    },
}

fn attempt(agent_timeout: Duration, target: &Target, body: &[u8]) -> Attempt {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(agent_timeout))
        .user_agent(concat!("tasker_trace_native/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut request = agent
        .post(&target.url)
        .header("Content-Type", "application/json");
    for (name, value) in &target.headers {
        if !name.eq_ignore_ascii_case("content-type") {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    match request.send(body) {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let body = response
                .body_mut()
                .with_config()
                .limit(MAX_RESPONSE_BODY)
                .read_to_vec()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Attempt::Status {
                status,
                retry_after,
                body,
            }
        }
        Err(e) => {
            let retryable = matches!(
                e,
                ureq::Error::ConnectionFailed | ureq::Error::Io(_) | ureq::Error::Timeout(_)
            );
            Attempt::Transport {
                error: e.to_string(),
                retryable,
            }
        }
    }
}

/// The message of an OTLP partial success in a 2xx body, if spans were rejected.
pub fn partial_success(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let p = v.get("partialSuccess")?;
    let rejected = match p.get("rejectedSpans")? {
        serde_json::Value::String(s) => s.parse::<i64>().ok()?,
        other => other.as_i64()?,
    };
    if rejected <= 0 {
        return None;
    }
    let message = p.get("errorMessage").and_then(|m| m.as_str()).unwrap_or("");
    Some(format!("collector rejected {rejected} span(s): {message}"))
}

fn snippet(body: &str) -> String {
    let trimmed = body.trim();
    let mut end = trimmed.len().min(300);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    trimmed[..end].to_string()
}

/// Sends `body` (an encoded `ExportTraceServiceRequest`) to `target`.
///
/// Statuses 429, 502, 503 and 504 and connection failures are retried with
/// backoff, waiting what `Retry-After` asks where given, while the deadline
/// allows; a wait that would pass the deadline is not started. Any other
/// status (400 and 413 among them) ends the push at once.
pub fn post(body: &[u8], target: &Target, cancel: &Cancel) -> Delivery {
    let deadline = Instant::now() + target.timeout;
    let mut attempts = 0u32;
    let mut last_status: Option<u16> = None;
    loop {
        if cancel.is_cancelled() {
            return Delivery::Failed {
                status: last_status,
                attempts,
                error: "interrupted".to_string(),
            };
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Delivery::Failed {
                status: last_status,
                attempts,
                error: format!("timed out after {attempts} attempt(s)"),
            };
        }
        attempts += 1;
        let (wait, failure) = match attempt(remaining, target, body) {
            Attempt::Status { status, body, .. } if (200..300).contains(&status) => {
                return Delivery::Sent {
                    status,
                    attempts,
                    partial: partial_success(&body),
                };
            }
            Attempt::Status {
                status,
                retry_after,
                body,
            } => {
                last_status = Some(status);
                let error = format!("HTTP {status} from {}: {}", target.url, snippet(&body));
                if !RETRYABLE_STATUSES.contains(&status) {
                    return Delivery::Failed {
                        status: Some(status),
                        attempts,
                        error,
                    };
                }
                let wait = retry_after.unwrap_or_else(|| backoff(attempts, jitter()));
                (wait, error)
            }
            Attempt::Transport { error, retryable } => {
                let error = format!("{} ({})", error, target.url);
                if !retryable {
                    return Delivery::Failed {
                        status: last_status,
                        attempts,
                        error,
                    };
                }
                (backoff(attempts, jitter()), error)
            }
        };
        let resume = Instant::now() + wait;
        if resume >= deadline {
            return Delivery::Failed {
                status: last_status,
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
                attempts,
                error: format!("interrupted; last error: {failure}"),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn partial_success_is_reported_only_when_spans_were_rejected() {
        assert_eq!(
            partial_success(r#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"bad"}}"#)
                .as_deref(),
            Some("collector rejected 2 span(s): bad")
        );
        assert_eq!(
            partial_success(r#"{"partialSuccess":{"rejectedSpans":3}}"#).as_deref(),
            Some("collector rejected 3 span(s): ")
        );
        assert_eq!(partial_success(r#"{"partialSuccess":{}}"#), None);
        assert_eq!(partial_success("{}"), None);
        assert_eq!(partial_success("not json"), None);
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
}
