//! OpenTelemetry's span limits, applied when spans are encoded, the same way
//! for both sources (the drop-in store's records and the lifecycle runs) and
//! every wire format; what each limit cuts is counted.
//!
//! | variable | setting | default |
//! | --- | --- | --- |
//! | `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` | `attribute_value_length_limit` | 8192 (the gem's; the specification has none) |
//! | `OTEL_ATTRIBUTE_COUNT_LIMIT` | `attribute_count_limit` | 128 |
//! | `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT` | `span_attribute_count_limit` | the attribute count limit |
//! | `OTEL_SPAN_EVENT_COUNT_LIMIT` | `span_event_count_limit` | 128 |
//! | `OTEL_SPAN_LINK_COUNT_LIMIT` | `span_link_count_limit` | 128 |
//! | `OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT` | `event_attribute_count_limit` | the attribute count limit |
//! | `OTEL_LINK_ATTRIBUTE_COUNT_LIMIT` | `link_attribute_count_limit` | the attribute count limit |
//!
//! - A String value longer than the value length limit (in characters) is
//!   cut to it, at any depth (in Arrays and Hashes too); a binary value is
//!   cut to that many bytes. Resource attributes are never cut.
//! - Attributes, events and links beyond a count limit are left out, the
//!   first ones kept, and the span's (or event's) `dropped_*_count` says how
//!   many.
//! - [`cuts`] counts what each limit cut, process-wide, each time a span is
//!   encoded: a span encoded twice (an `export_otlp` without `drain`, an
//!   export retried after a failure) counts twice.
//! - Links carry no attributes in this gem: the link attribute count limit
//!   is taken and shown, and cuts nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::support::env::{set, Warning};
use crate::support::fork::Inherited;
use crate::support::SettingError;

pub const ATTRIBUTE_VALUE_LENGTH_LIMIT_VARIABLE: &str = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT";
pub const ATTRIBUTE_COUNT_LIMIT_VARIABLE: &str = "OTEL_ATTRIBUTE_COUNT_LIMIT";
pub const SPAN_ATTRIBUTE_COUNT_LIMIT_VARIABLE: &str = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT";
pub const SPAN_EVENT_COUNT_LIMIT_VARIABLE: &str = "OTEL_SPAN_EVENT_COUNT_LIMIT";
pub const SPAN_LINK_COUNT_LIMIT_VARIABLE: &str = "OTEL_SPAN_LINK_COUNT_LIMIT";
pub const EVENT_ATTRIBUTE_COUNT_LIMIT_VARIABLE: &str = "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT";
pub const LINK_ATTRIBUTE_COUNT_LIMIT_VARIABLE: &str = "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT";

/// The specification's default of every count limit.
pub const DEFAULT_COUNT_LIMIT: usize = 128;
/// The gem's default value length limit, in characters: a bound on what one
/// value adds to a request (the specification sets none).
pub const DEFAULT_VALUE_LENGTH_LIMIT: usize = 8192;
/// The largest limit taken.
pub const MAX_LIMIT: usize = 1_000_000_000;

pub const COUNT_LIMIT_EXPECTED: &str = "an Integer from 0 to 1000000000";
pub const OPTIONAL_COUNT_LIMIT_EXPECTED: &str =
    "an Integer from 0 to 1000000000, or nil (the attribute_count_limit)";
pub const VALUE_LENGTH_LIMIT_EXPECTED: &str = "an Integer from 0 to 1000000000, or nil (no limit)";

/// The span limits in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanLimits {
    /// Characters a String value keeps (`None`: no limit).
    pub attribute_value_length: Option<usize>,
    /// Attributes a span, event or link keeps unless its own limit says.
    pub attribute_count: usize,
    /// `None`: [`attribute_count`](Self::attribute_count).
    pub span_attribute_count: Option<usize>,
    pub span_event_count: usize,
    pub span_link_count: usize,
    /// `None`: [`attribute_count`](Self::attribute_count).
    pub event_attribute_count: Option<usize>,
    /// `None`: [`attribute_count`](Self::attribute_count).
    pub link_attribute_count: Option<usize>,
}

impl SpanLimits {
    /// The defaults: 8192 characters, 128 of everything.
    pub const DEFAULT: SpanLimits = SpanLimits {
        attribute_value_length: Some(DEFAULT_VALUE_LENGTH_LIMIT),
        attribute_count: DEFAULT_COUNT_LIMIT,
        span_attribute_count: None,
        span_event_count: DEFAULT_COUNT_LIMIT,
        span_link_count: DEFAULT_COUNT_LIMIT,
        event_attribute_count: None,
        link_attribute_count: None,
    };

    /// No limit at all (spans encoded outside an export, in tests).
    pub const NONE: SpanLimits = SpanLimits {
        attribute_value_length: None,
        attribute_count: usize::MAX,
        span_attribute_count: None,
        span_event_count: usize::MAX,
        span_link_count: usize::MAX,
        event_attribute_count: None,
        link_attribute_count: None,
    };

    pub fn span_attributes(&self) -> usize {
        self.span_attribute_count.unwrap_or(self.attribute_count)
    }

    pub fn event_attributes(&self) -> usize {
        self.event_attribute_count.unwrap_or(self.attribute_count)
    }

    pub fn link_attributes(&self) -> usize {
        self.link_attribute_count.unwrap_or(self.attribute_count)
    }

    /// The value length limit as a number (`usize::MAX`: none).
    pub fn value_length(&self) -> usize {
        self.attribute_value_length.unwrap_or(usize::MAX)
    }

    /// The limits from OpenTelemetry's variables, read through `get`; an
    /// unusable value is a warning and counts as unset.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> (SpanLimits, Vec<Warning>) {
        let mut warnings = Vec::new();
        let mut read = |variable: &'static str| {
            let value = get(variable);
            let v = set(value.as_deref())?;
            match v.parse::<u64>() {
                Ok(n) if n <= MAX_LIMIT as u64 => Some(n as usize),
                _ => {
                    warnings.push(Warning::ignored(
                        variable,
                        format!("{v:?} is not a whole number from 0 to {MAX_LIMIT}"),
                    ));
                    None
                }
            }
        };
        let d = SpanLimits::DEFAULT;
        let limits = SpanLimits {
            attribute_value_length: read(ATTRIBUTE_VALUE_LENGTH_LIMIT_VARIABLE)
                .or(d.attribute_value_length),
            attribute_count: read(ATTRIBUTE_COUNT_LIMIT_VARIABLE).unwrap_or(d.attribute_count),
            span_attribute_count: read(SPAN_ATTRIBUTE_COUNT_LIMIT_VARIABLE),
            span_event_count: read(SPAN_EVENT_COUNT_LIMIT_VARIABLE).unwrap_or(d.span_event_count),
            span_link_count: read(SPAN_LINK_COUNT_LIMIT_VARIABLE).unwrap_or(d.span_link_count),
            event_attribute_count: read(EVENT_ATTRIBUTE_COUNT_LIMIT_VARIABLE),
            link_attribute_count: read(LINK_ATTRIBUTE_COUNT_LIMIT_VARIABLE),
        };
        (limits, warnings)
    }

    /// A limit setting's value: 0 to [`MAX_LIMIT`].
    pub fn parse_limit(
        setting: &'static str,
        expected: &'static str,
        n: i128,
    ) -> Result<usize, SettingError> {
        match usize::try_from(n) {
            Ok(n) if n <= MAX_LIMIT => Ok(n),
            _ => Err(SettingError {
                setting,
                expected,
                got: n.to_string(),
            }),
        }
    }
}

impl Default for SpanLimits {
    fn default() -> Self {
        SpanLimits::DEFAULT
    }
}

// ---------------------------------------------------------------------------
// What the limits cut.

/// Which limit cut something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    AttributeValueLength = 0,
    SpanAttributes = 1,
    SpanEvents = 2,
    SpanLinks = 3,
    EventAttributes = 4,
    LinkAttributes = 5,
}

static CUT: [AtomicU64; 6] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Counts `n` things cut by `limit`.
pub fn count_cut(limit: Limit, n: usize) {
    if n > 0 {
        CUT[limit as usize].fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What each limit has cut in this process (values cut, attributes, events
/// and links left out), counted at each encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitCuts {
    pub attribute_value_length: u64,
    pub span_attributes: u64,
    pub span_events: u64,
    pub span_links: u64,
    pub event_attributes: u64,
    pub link_attributes: u64,
}

/// The cuts this process made: [`cuts`] less what a fork child inherited
/// (see `support::fork::Inherited`; the exporter's start takes that first).
pub fn own_cuts() -> LimitCuts {
    static INHERITED: Inherited<6> = Inherited::new();
    let c = cuts();
    let [attribute_value_length, span_attributes, span_events, span_links, event_attributes, link_attributes] =
        INHERITED.own([
            c.attribute_value_length,
            c.span_attributes,
            c.span_events,
            c.span_links,
            c.event_attributes,
            c.link_attributes,
        ]);
    LimitCuts {
        attribute_value_length,
        span_attributes,
        span_events,
        span_links,
        event_attributes,
        link_attributes,
    }
}

/// What each limit cut since the first process began (a fork child's
/// ancestors' cuts included).
pub fn cuts() -> LimitCuts {
    let get = |l: Limit| CUT[l as usize].load(Ordering::Relaxed);
    LimitCuts {
        attribute_value_length: get(Limit::AttributeValueLength),
        span_attributes: get(Limit::SpanAttributes),
        span_events: get(Limit::SpanEvents),
        span_links: get(Limit::SpanLinks),
        event_attributes: get(Limit::EventAttributes),
        link_attributes: get(Limit::LinkAttributes),
    }
}

/// `text` (UTF-8, or bytes meant as text) cut to at most `limit` characters
/// (counted as UTF-8 sequence starts), counted when cut.
pub fn cut_text(text: &[u8], limit: usize) -> &[u8] {
    if text.len() <= limit {
        return text;
    }
    let mut chars = 0;
    for (i, &b) in text.iter().enumerate() {
        if b & 0xC0 != 0x80 {
            if chars == limit {
                count_cut(Limit::AttributeValueLength, 1);
                return &text[..i];
            }
            chars += 1;
        }
    }
    text
}

/// Binary `bytes` cut to at most `limit` bytes, counted when cut.
pub fn cut_bytes(bytes: &[u8], limit: usize) -> &[u8] {
    if bytes.len() <= limit {
        return bytes;
    }
    count_cut(Limit::AttributeValueLength, 1);
    &bytes[..limit]
}

/// How many of `total` things a limit of `max` keeps, counting the rest.
pub fn kept(total: usize, max: usize, limit: Limit) -> usize {
    let keep = total.min(max);
    count_cut(limit, total - keep);
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> (SpanLimits, Vec<Warning>) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SpanLimits::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn the_variables_set_the_limits_and_the_general_count_is_the_fallback() {
        let (l, w) = from(&[]);
        assert!(w.is_empty());
        assert_eq!(l, SpanLimits::DEFAULT);
        assert_eq!(
            (
                l.span_attributes(),
                l.event_attributes(),
                l.link_attributes()
            ),
            (128, 128, 128)
        );
        let (l, w) = from(&[
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10"),
            ("OTEL_ATTRIBUTE_COUNT_LIMIT", "5"),
            ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3"),
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "2"),
            ("OTEL_SPAN_LINK_COUNT_LIMIT", "0"),
            ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "1"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(l.attribute_value_length, Some(10));
        assert_eq!(
            (
                l.span_attributes(),
                l.event_attributes(),
                l.link_attributes()
            ),
            (3, 5, 1)
        );
        assert_eq!((l.span_event_count, l.span_link_count), (2, 0));
        let (l, w) = from(&[
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "-1"),
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "lots"),
        ]);
        assert_eq!(l, SpanLimits::DEFAULT);
        assert_eq!(
            w.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT ignored: \"lots\" is not a whole number \
                 from 0 to 1000000000",
                "OTEL_SPAN_EVENT_COUNT_LIMIT ignored: \"-1\" is not a whole number from 0 to \
                 1000000000",
            ]
        );
    }

    #[test]
    fn text_is_cut_at_characters_and_bytes_at_bytes() {
        assert_eq!(cut_text(b"abcdef", 3), b"abc");
        assert_eq!(cut_text(b"abc", 3), b"abc");
        assert_eq!(cut_text("aébc".as_bytes(), 2), "aé".as_bytes());
        assert_eq!(cut_text("éééé".as_bytes(), 3), "ééé".as_bytes());
        assert_eq!(cut_text(b"abc", 0), b"");
        assert_eq!(cut_bytes(&[1, 2, 3], 2), &[1, 2]);
    }
}
