//! Attribute keys and typed values as stored on spans and span events, and
//! the shared string type they use. Known keys are enum variants, so building
//! them allocates nothing; keys are stored without the service-name prefix.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// Payload keys that never leave the process, whatever the allowlist: they
/// hold an app's own data (inputs, results, the task's context, a
/// backtrace's paths), secrets among it. `lifecycle_attributes` refuses them.
pub const NEVER_EXPORTED: [&str; 4] = ["task_context", "step_results", "step_inputs", "backtrace"];

/// An immutable string that is either static or shared by reference count, so
/// known names and constants (such as `"[FILTERED]"`) cost no allocation and a
/// clone never copies.
#[derive(Clone)]
pub enum Text {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Text::Static(s) => s,
            Text::Shared(s) => s,
        }
    }

    /// Bytes as text, invalid UTF-8 replaced by U+FFFD; copied once.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn from_bytes(bytes: &[u8]) -> Text {
        Text::Shared(Arc::from(String::from_utf8_lossy(bytes)))
    }

    /// [`Text::from_bytes`] of at most `max` bytes of input: longer input is
    /// cut at a character boundary and marked with a trailing `…`.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
    pub fn from_bytes_capped(bytes: &[u8], max: usize) -> Text {
        if bytes.len() <= max {
            return Text::from_bytes(bytes);
        }
        let mut end = max;
        // Back up over continuation bytes: never cut inside a character.
        while end > 0 && end > max.saturating_sub(3) && (bytes[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        let mut text = String::from_utf8_lossy(&bytes[..end]).into_owned();
        text.push('…');
        Text::from(text)
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text::Static(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::Shared(Arc::from(s))
    }
}

impl From<Arc<str>> for Text {
    fn from(s: Arc<str>) -> Text {
        Text::Shared(s)
    }
}

/// An attribute key, stored without the service-name prefix (the encoder writes
/// `<service>.<key>`, `tasker.task_id` by default).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttrKey {
    TaskId,
    TaskName,
    StepId,
    StepName,
    AttemptNumber,
    RetryLimit,
    /// `error`, from the payload's `error_message`.
    Error,
    /// `exception_class`, from the payload's `exception_class`. Loses to
    /// [`AttrKey::ErrorClass`].
    ExceptionClass,
    /// The payload's `error_class`: stored as `exception_class`, replacing a
    /// value taken from the payload's `exception_class`. Input only: stored
    /// attributes never carry this key.
    ErrorClass,
    TotalSteps,
    CompletedSteps,
    FailedSteps,
    ExecutionDuration,
    /// An allowlisted payload key, stored under its own name.
    Extra(Arc<str>),
}

impl AttrKey {
    /// The payload keys that map to known attribute keys (what the binding reads
    /// besides the allowlisted extras). `execution_duration` is not read: the
    /// tracer measures it.
    pub const PAYLOAD_KEYS: [&'static str; 12] = [
        "task_id",
        "task_name",
        "step_id",
        "step_name",
        "attempt_number",
        "retry_limit",
        "error_message",
        "exception_class",
        "error_class",
        "total_steps",
        "completed_steps",
        "failed_steps",
    ];

    /// The key for a payload key name, if it is a known one.
    pub fn from_payload_key(name: &[u8]) -> Option<AttrKey> {
        Some(match name {
            b"task_id" => AttrKey::TaskId,
            b"task_name" => AttrKey::TaskName,
            b"step_id" => AttrKey::StepId,
            b"step_name" => AttrKey::StepName,
            b"attempt_number" => AttrKey::AttemptNumber,
            b"retry_limit" => AttrKey::RetryLimit,
            b"error_message" => AttrKey::Error,
            b"exception_class" => AttrKey::ExceptionClass,
            b"error_class" => AttrKey::ErrorClass,
            b"total_steps" => AttrKey::TotalSteps,
            b"completed_steps" => AttrKey::CompletedSteps,
            b"failed_steps" => AttrKey::FailedSteps,
            b"execution_duration" => AttrKey::ExecutionDuration,
            _ => return None,
        })
    }

    /// The stored key name, without prefix.
    pub fn as_str(&self) -> &str {
        match self {
            AttrKey::TaskId => "task_id",
            AttrKey::TaskName => "task_name",
            AttrKey::StepId => "step_id",
            AttrKey::StepName => "step_name",
            AttrKey::AttemptNumber => "attempt_number",
            AttrKey::RetryLimit => "retry_limit",
            AttrKey::Error => "error",
            AttrKey::ExceptionClass | AttrKey::ErrorClass => "exception_class",
            AttrKey::TotalSteps => "total_steps",
            AttrKey::CompletedSteps => "completed_steps",
            AttrKey::FailedSteps => "failed_steps",
            AttrKey::ExecutionDuration => "execution_duration",
            AttrKey::Extra(name) => name,
        }
    }
}

/// Longest text value kept, in bytes of input (longer ones are cut, see
/// [`Text::from_bytes_capped`]).
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// Most elements kept of an Array value.
pub const MAX_ARRAY_ITEMS: usize = 128;

/// A typed attribute value. Arrays and maps nest (a Hash or Array under an
/// allowlisted key is kept as structure, filtered and cut by the limits of
/// the `values` module).
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Text),
    Array(Arc<[AttrValue]>),
    /// A Hash: String keys in the Hash's order.
    Map(Arc<[(Text, AttrValue)]>),
}

impl AttrValue {
    /// The value as a number, for the keys merged by maximum.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            AttrValue::Int(n) => Some(*n as f64),
            AttrValue::Float(x) => Some(*x),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&Text> {
        match self {
            AttrValue::Str(t) => Some(t),
            _ => None,
        }
    }
}

impl From<i64> for AttrValue {
    fn from(n: i64) -> AttrValue {
        AttrValue::Int(n)
    }
}

impl From<f64> for AttrValue {
    fn from(x: f64) -> AttrValue {
        AttrValue::Float(x)
    }
}

impl From<bool> for AttrValue {
    fn from(b: bool) -> AttrValue {
        AttrValue::Bool(b)
    }
}

impl From<&'static str> for AttrValue {
    fn from(s: &'static str) -> AttrValue {
        AttrValue::Str(Text::Static(s))
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> AttrValue {
        AttrValue::Str(Text::from(s))
    }
}

impl From<Text> for AttrValue {
    fn from(t: Text) -> AttrValue {
        AttrValue::Str(t)
    }
}

/// One attribute.
pub type Attr = (AttrKey, AttrValue);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(Text::from_bytes_capped(b"abc", 3).as_str(), "abc");
        assert_eq!(Text::from_bytes_capped(b"abcd", 3).as_str(), "abc…");
        // "é" is two bytes: a cut after its first byte backs up before it.
        let t = Text::from_bytes_capped("aéb".as_bytes(), 2);
        assert_eq!(t.as_str(), "a…");
        let t = Text::from_bytes_capped("aé".as_bytes(), 3);
        assert_eq!(t.as_str(), "aé");
        // Invalid bytes are replaced, not looped over.
        let t = Text::from_bytes_capped(&[0x80; 10], 4);
        assert!(t.as_str().ends_with('…'));
        assert!(t.as_str().len() <= 4 * 3 + 3);
    }

    #[test]
    fn payload_keys_map_to_attribute_keys() {
        for key in AttrKey::PAYLOAD_KEYS {
            let k = AttrKey::from_payload_key(key.as_bytes()).unwrap();
            let stored = match key {
                "error_message" => "error",
                "error_class" => "exception_class",
                other => other,
            };
            assert_eq!(k.as_str(), stored);
        }
        assert_eq!(AttrKey::from_payload_key(b"step_results"), None);
        assert_eq!(AttrKey::Extra(Arc::from("region")).as_str(), "region");
    }
}
