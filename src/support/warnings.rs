//! The one place warnings about settings and variables go: each distinct
//! message is kept once (the list `exporter_stats[:warnings]` shows) and
//! queued for the binding, which hands the queue to Ruby on the calling
//! Ruby thread (`Rails.logger` or stderr). Nothing here prints: a native
//! thread may add a warning, never deliver one.

use crate::support::fork::ForkSafeMutex;

/// Most distinct messages kept; later ones are still delivered, not listed.
pub const MAX_KEPT: usize = 64;

#[derive(Default)]
struct State {
    /// Every distinct message given in this process, oldest first.
    given: Vec<String>,
    /// Messages not yet delivered.
    pending: Vec<String>,
    /// Messages given beyond [`MAX_KEPT`], for deduplication only.
    overflow: std::collections::HashSet<String>,
}

/// The warnings of a process (the binding keeps one in a static).
pub struct Warnings {
    state: ForkSafeMutex<Option<State>>,
}

impl Default for Warnings {
    fn default() -> Self {
        Warnings::new()
    }
}

impl Warnings {
    pub const fn new() -> Warnings {
        Warnings {
            state: ForkSafeMutex::new(None),
        }
    }

    /// Makes the process-wide registry's lock fork-safe.
    pub fn register_for_fork(&'static self) -> bool {
        self.state.register()
    }

    /// Gives a warning: queued for delivery unless this exact message was
    /// given before in this process. Returns whether it is new.
    pub fn warn(&self, message: impl Into<String>) -> bool {
        let message = message.into();
        let mut guard = self.state.lock();
        let state = guard.get_or_insert_with(State::default);
        if state.given.contains(&message) || state.overflow.contains(&message) {
            return false;
        }
        if state.given.len() < MAX_KEPT {
            state.given.push(message.clone());
        } else if state.overflow.len() < 16 * MAX_KEPT {
            state.overflow.insert(message.clone());
        }
        state.pending.push(message);
        true
    }

    /// Puts a taken warning back in the queue (its delivery was cut short).
    pub fn requeue(&self, message: String) {
        if let Some(state) = self.state.lock().as_mut() {
            state.pending.push(message);
        }
    }

    /// Whether some warning waits for delivery.
    pub fn has_pending(&self) -> bool {
        self.state
            .lock()
            .as_ref()
            .is_some_and(|s| !s.pending.is_empty())
    }

    /// The warnings not yet delivered, oldest first; the queue is emptied.
    pub fn take_pending(&self) -> Vec<String> {
        self.state
            .lock()
            .as_mut()
            .map(|s| std::mem::take(&mut s.pending))
            .unwrap_or_default()
    }

    /// Every distinct warning given in this process (at most [`MAX_KEPT`]).
    pub fn given(&self) -> Vec<String> {
        self.state
            .lock()
            .as_ref()
            .map(|s| s.given.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_distinct_message_is_given_and_delivered_once() {
        let w = Warnings::new();
        assert!(w.warn("a"));
        assert!(w.warn("b"));
        assert!(!w.warn("a"));
        assert!(w.has_pending());
        assert_eq!(w.take_pending(), ["a", "b"]);
        assert!(!w.has_pending());
        assert!(!w.warn("b"));
        assert!(w.take_pending().is_empty());
        assert_eq!(w.given(), ["a", "b"]);
    }

    #[test]
    fn the_list_is_bounded_and_later_messages_are_still_delivered() {
        let w = Warnings::new();
        for i in 0..MAX_KEPT + 5 {
            assert!(w.warn(format!("m{i}")));
        }
        assert!(!w.warn(format!("m{}", MAX_KEPT + 1)));
        assert_eq!(w.given().len(), MAX_KEPT);
        assert_eq!(w.take_pending().len(), MAX_KEPT + 5);
    }
}
