//! Telling a repeated step event from a new one without converting it.
//!
//! Tasker publishes `step.execution_requested` and `step.completed` (and the
//! other closing events) up to three times per attempt, one right after the
//! other in the same thread: half of a run's events. Recording such a copy
//! only merges attributes into the attempt the previous copy opened or
//! closed. When the copy's attribute values are the ones already merged,
//! that changes nothing but a counter, so the binding reads a few immediates
//! and the hash of each text value into a [`RepeatKey`] and asks the tracer
//! whether the event repeats the one it recorded just before (see
//! `model::lifecycle::State::repeated`). Anything else is read in full.

use super::event::EventKind;

/// How many attribute values a key holds: the known payload keys other than
/// the ids and `attempt_number` (nine).
pub const REPEAT_VALUES: usize = 9;

/// One attribute value, as far as a repeat needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    /// Absent or nil: a merge leaves the stored value alone.
    Absent,
    /// Exported as `"[FILTERED]"`, whatever it was.
    Filtered,
    /// An Integer that fits an immediate.
    Int(i64),
    /// Another immediate (true, false, a Float, a static Symbol): its bits.
    Bits(u64),
    /// A text value: the hash of its bytes and its length.
    Text(u64, usize),
}

/// What a repeated event would change (see [`RepeatKey::repeats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    No,
    Same,
    /// Only the attempt's `attempt_number`, to this higher value.
    HigherAttempt(i64),
}

/// A step event read cheaply: its kind, task and step (Integer ids only),
/// its attribute values and the thread that published it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepeatKey {
    pub kind: EventKind,
    pub task: i64,
    pub step: i64,
    /// `attempt_number` (merged by keeping the highest).
    pub attempt: Word,
    /// The other known keys' values, in the read plan's order.
    pub values: [Word; REPEAT_VALUES],
    /// The publishing thread (a number the binding gives each Ruby thread).
    pub thread: u64,
}

impl RepeatKey {
    /// The kinds whose copies can repeat: those that merge into the attempt
    /// they opened or closed and add nothing else.
    pub fn kind_can_repeat(kind: EventKind) -> bool {
        kind == EventKind::StepExecutionRequested || kind.closes_attempt()
    }

    /// What recording this event right after `recorded` (in the same
    /// thread, nothing recorded between) would change: nothing
    /// ([`Repeat::Same`]: same kind, task, step and thread, each value
    /// absent or the one merged already, an `attempt_number` no higher), or
    /// only the `attempt_number` ([`Repeat::HigherAttempt`]); anything else
    /// is [`Repeat::No`].
    pub fn repeats(&self, recorded: &RepeatKey) -> Repeat {
        let same_event = self.kind == recorded.kind
            && self.task == recorded.task
            && self.step == recorded.step
            && self.thread == recorded.thread;
        let same_values = self
            .values
            .iter()
            .zip(&recorded.values)
            .all(|(now, was)| *now == Word::Absent || now == was);
        if !same_event || !same_values {
            return Repeat::No;
        }
        match (self.attempt, recorded.attempt) {
            (Word::Absent, _) => Repeat::Same,
            (Word::Int(now), Word::Int(was)) if now <= was => Repeat::Same,
            (Word::Int(now), Word::Int(_)) => Repeat::HigherAttempt(now),
            (now, was) if now == was => Repeat::Same,
            _ => Repeat::No,
        }
    }
}

/// A 64-bit hash of text bytes (FNV-1a over 8-byte words): equal bytes give
/// equal hashes; different ones collide with a chance of about 2^-64.
pub fn text_hash(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(PRIME).rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h ^ (bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: EventKind, attempt: Word, name: &str) -> RepeatKey {
        let mut values = [Word::Absent; REPEAT_VALUES];
        values[0] = Word::Text(text_hash(name.as_bytes()), name.len());
        values[1] = Word::Int(3);
        RepeatKey {
            kind,
            task: 7,
            step: 70,
            attempt,
            values,
            thread: 1,
        }
    }

    #[test]
    fn same_values_repeat() {
        let first = key(EventKind::StepCompleted, Word::Int(1), "charge");
        assert_eq!(first.repeats(&first), Repeat::Same);
    }

    #[test]
    fn a_lower_attempt_repeats_a_higher_one_only_raises_it() {
        let was = key(EventKind::StepCompleted, Word::Int(1), "charge");
        let now = |attempt| key(EventKind::StepCompleted, attempt, "charge").repeats(&was);
        assert_eq!(now(Word::Int(0)), Repeat::Same);
        assert_eq!(now(Word::Absent), Repeat::Same);
        assert_eq!(now(Word::Int(2)), Repeat::HigherAttempt(2));
        assert_eq!(now(Word::Bits(0x14)), Repeat::No);
        let unknown = key(EventKind::StepCompleted, Word::Absent, "charge");
        assert_eq!(
            key(EventKind::StepCompleted, Word::Int(0), "charge").repeats(&unknown),
            Repeat::No
        );
    }

    #[test]
    fn absent_values_repeat_present_different_ones_do_not() {
        let was = key(EventKind::StepExecutionRequested, Word::Int(0), "charge");
        let mut fewer = was;
        fewer.values[1] = Word::Absent;
        assert_eq!(fewer.repeats(&was), Repeat::Same);
        let renamed = key(EventKind::StepExecutionRequested, Word::Int(0), "refund");
        assert_eq!(renamed.repeats(&was), Repeat::No);
        let mut more = was;
        more.values[4] = Word::Bits(0x14);
        assert_eq!(more.repeats(&was), Repeat::No);
    }

    #[test]
    fn another_kind_task_step_or_thread_never_repeats() {
        let was = key(EventKind::StepCompleted, Word::Int(1), "charge");
        let mut other = was;
        other.kind = EventKind::StepFailed;
        assert_eq!(other.repeats(&was), Repeat::No);
        let mut other = was;
        other.task = 8;
        assert_eq!(other.repeats(&was), Repeat::No);
        let mut other = was;
        other.step = 71;
        assert_eq!(other.repeats(&was), Repeat::No);
        let mut other = was;
        other.thread = 2;
        assert_eq!(other.repeats(&was), Repeat::No);
    }

    #[test]
    fn which_kinds_can_repeat() {
        assert!(RepeatKey::kind_can_repeat(
            EventKind::StepExecutionRequested
        ));
        assert!(RepeatKey::kind_can_repeat(EventKind::StepCompleted));
        assert!(RepeatKey::kind_can_repeat(EventKind::StepFailed));
        assert!(!RepeatKey::kind_can_repeat(EventKind::StepBeforeHandle));
        assert!(!RepeatKey::kind_can_repeat(EventKind::TaskCompleted));
    }

    #[test]
    fn text_hash_tells_texts_apart() {
        assert_eq!(text_hash(b"validate_cart"), text_hash(b"validate_cart"));
        assert_ne!(text_hash(b"validate_cart"), text_hash(b"validate_carT"));
        assert_ne!(text_hash(b""), text_hash(b"\0"));
        assert_ne!(text_hash(b"abcdefgh"), text_hash(b"abcdefgh\0"));
    }
}
