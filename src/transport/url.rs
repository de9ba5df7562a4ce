//! An endpoint URL's parts this exporter reads itself: its scheme, and the
//! password of its userinfo, which every message shows as `***`. Apart from
//! the environment's rules (`env`) so that the target's settings use it
//! too.

use std::borrow::Cow;

/// Where the password of `url`'s userinfo is (`user:password@host`): its
/// byte range, which may be empty (`user:@host`), and where the userinfo
/// starts. `None` when there is no userinfo or it has no password. The
/// scheme is optional, so that a URL written without one is covered too.
fn password_span(url: &str) -> Option<(usize, std::ops::Range<usize>)> {
    let lead = url.len() - url.trim_start().len();
    let start = lead + scheme(&url[lead..]).map_or(0, |s| s.len() + "://".len());
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some((start, start + colon + 1..start + at))
}

/// `url` as every message shows it: the password of its userinfo (sent as
/// Basic authentication) replaced by `***`, the user name kept
/// (`http://otel:***@collector:4318/v1/traces`).
pub fn shown_url(url: &str) -> Cow<'_, str> {
    match password_span(url) {
        Some((_, password)) => Cow::Owned(format!(
            "{}***{}",
            &url[..password.start],
            &url[password.end..]
        )),
        None => Cow::Borrowed(url),
    }
}

/// `text` (a message from elsewhere, which may quote `url` or a URL made
/// from it) with the userinfo of `url` shown as [`shown_url`] shows it.
pub fn without_password<'a>(text: &'a str, url: &str) -> Cow<'a, str> {
    let Some((start, password)) = password_span(url) else {
        return Cow::Borrowed(text);
    };
    // `user:password@`, as written, and `user:***@`.
    let userinfo = &url[start..=password.end];
    if !text.contains(userinfo) {
        return Cow::Borrowed(text);
    }
    let shown = format!("{}***@", &url[start..password.start]);
    Cow::Owned(text.replace(userinfo, &shown))
}

/// Whether an `http://` or `https://` URL is https (schemes compare
/// case-insensitively), and its `host[:port]` as written (without userinfo,
/// path, query or fragment); `None` for another scheme or none.
pub(crate) fn http_authority(url: &str) -> Option<(bool, &str)> {
    let (https, rest) = match url.get(..8) {
        Some(s) if s.eq_ignore_ascii_case("https://") => (true, &url[8..]),
        _ => match url.get(..7) {
            Some(s) if s.eq_ignore_ascii_case("http://") => (false, &url[7..]),
            _ => return None,
        },
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    Some((https, authority.rsplit('@').next().unwrap_or("")))
}

/// The scheme of `url` when it starts with one (`ftp` of `ftp://x`): a
/// letter, then letters, digits, `+`, `-` or `.`, then `://`.
pub(crate) fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}
