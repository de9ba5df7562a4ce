//! Trace keys: which payload field names a trace, and how the key is spelled.

use crate::value::{Encoding, Str};

/// The payload fields a trace key can come from, in precedence order: the first
/// whose value is truthy wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyField {
    TaskId,
    WorkflowStepId,
    Operation,
}

impl KeyField {
    /// Precedence order.
    pub const ORDER: [KeyField; 3] = [
        KeyField::TaskId,
        KeyField::WorkflowStepId,
        KeyField::Operation,
    ];

    /// The Symbol key looked up in the payload.
    pub fn payload_key(self) -> &'static str {
        match self {
            KeyField::TaskId => "task_id",
            KeyField::WorkflowStepId => "workflow_step_id",
            KeyField::Operation => "operation",
        }
    }

    /// The trace key's prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyField::TaskId => "task_",
            KeyField::WorkflowStepId => "step_",
            KeyField::Operation => "operation_",
        }
    }

    /// `"<prefix><id>"`, where `id` is the field value's `to_s`. Like Ruby string
    /// interpolation into an ASCII literal, the result is UTF-8 unless the id
    /// holds non-ASCII bytes, in which case it keeps the id's encoding.
    pub fn key_for(self, id: &Str) -> Str {
        let prefix = self.prefix().as_bytes();
        let mut bytes = Vec::with_capacity(prefix.len() + id.bytes().len());
        bytes.extend_from_slice(prefix);
        bytes.extend_from_slice(id.bytes());
        let encoding = if id.bytes().is_ascii() {
            Encoding::Utf8
        } else {
            id.encoding()
        };
        Str::new(bytes, encoding)
    }

    /// The key for an integer id, without building an intermediate string.
    /// Built on the stack and allocated once at its exact size.
    pub fn key_for_int(self, id: i64) -> Str {
        let prefix = self.prefix().as_bytes();
        let mut buf = [0u8; 32];
        buf[..prefix.len()].copy_from_slice(prefix);
        let len = prefix.len() + crate::support::digits::write_i64(&mut buf[prefix.len()..], id);
        Str::new(&buf[..len], Encoding::Utf8)
    }
}

/// Where an event's trace key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A field of the payload gave this key.
    Field(Str),
    /// No field was truthy: the event gets a fresh, never-seen `trace_` key.
    Fresh,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_the_field() {
        assert_eq!(
            KeyField::TaskId.key_for(&Str::utf8("42")),
            Str::utf8("task_42")
        );
        assert_eq!(
            KeyField::WorkflowStepId.key_for(&Str::utf8("7")),
            Str::utf8("step_7")
        );
        assert_eq!(
            KeyField::Operation.key_for(&Str::utf8("sync")),
            Str::utf8("operation_sync")
        );
        assert_eq!(KeyField::TaskId.key_for_int(-3), Str::utf8("task_-3"));
    }

    #[test]
    fn precedence_is_task_step_operation() {
        let names: Vec<_> = KeyField::ORDER.iter().map(|f| f.payload_key()).collect();
        assert_eq!(names, ["task_id", "workflow_step_id", "operation"]);
    }

    #[test]
    fn non_ascii_ids_keep_their_encoding() {
        let id = Str::new(vec![0xff], Encoding::Binary);
        let key = KeyField::TaskId.key_for(&id);
        assert_eq!(key.bytes(), b"task_\xff");
        assert_eq!(key.encoding(), Encoding::Binary);
        let ascii_binary = Str::new(b"9".to_vec(), Encoding::Binary);
        assert_eq!(
            KeyField::TaskId.key_for(&ascii_binary).encoding(),
            Encoding::Utf8
        );
    }
}
