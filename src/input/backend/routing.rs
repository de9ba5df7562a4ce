//! Which kind of event a name is, and the status a finish event gives.
//!
//! The original backend matches names with Ruby regular expressions such as
//! `/\.started$/`. Ruby's `$` matches at the end of the string *and* before any
//! newline, so "ends with" below means "some line ends with", exactly as there.

/// What an event does to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `*.started`: opens (or restarts) a trace.
    Start,
    /// `*.completed` / `*.failed`: closes a trace.
    Finish,
    /// Contains `.before_` or `.after_`: a span on an open trace.
    Span,
    /// Anything else: stored on its own under a `generic_` key.
    Generic,
}

/// How a finished trace ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// True when `name` matches the Ruby regexp `/<suffix>$/`: the suffix stands at
/// the end of the string or right before a `\n`.
fn line_ends_with(name: &[u8], suffix: &[u8]) -> bool {
    if name.ends_with(suffix) {
        return true;
    }
    name.split(|&b| b == b'\n')
        .any(|line| line.ends_with(suffix))
}

/// Classifies an event name, first match wins: start, finish, span, generic.
pub fn classify(name: &[u8]) -> EventKind {
    if line_ends_with(name, b".started") {
        EventKind::Start
    } else if line_ends_with(name, b".completed") || line_ends_with(name, b".failed") {
        EventKind::Finish
    } else if contains(name, b".before_") || contains(name, b".after_") {
        EventKind::Span
    } else {
        EventKind::Generic
    }
}

/// `error` when the finish event's name contains `failed` anywhere.
pub fn finish_status(name: &[u8]) -> Status {
    if contains(name, b"failed") {
        Status::Error
    } else {
        Status::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_suffix_and_infix_first_match_wins() {
        assert_eq!(classify(b"task.started"), EventKind::Start);
        assert_eq!(classify(b"step.started"), EventKind::Start);
        assert_eq!(classify(b"task.completed"), EventKind::Finish);
        assert_eq!(classify(b"task.failed"), EventKind::Finish);
        assert_eq!(classify(b"step.before_handle"), EventKind::Span);
        assert_eq!(classify(b"step.after_handle"), EventKind::Span);
        assert_eq!(classify(b"task.after_transition.x"), EventKind::Span);
        assert_eq!(classify(b"step.before_handle.completed"), EventKind::Finish);
        assert_eq!(classify(b"step.before_handle.started"), EventKind::Start);
        assert_eq!(classify(b"task.completed.extra"), EventKind::Generic);
        assert_eq!(
            classify(b"workflow.viable_steps_discovered"),
            EventKind::Generic
        );
        assert_eq!(classify(b""), EventKind::Generic);
        assert_eq!(classify(b"started"), EventKind::Generic);
        assert_eq!(classify(b".started"), EventKind::Start);
        assert_eq!(classify(b"before_x"), EventKind::Generic);
    }

    #[test]
    fn dollar_matches_before_a_newline_like_ruby() {
        assert_eq!(classify(b"task.started\nmore"), EventKind::Start);
        assert_eq!(classify(b"task.failed\n"), EventKind::Finish);
        assert_eq!(classify(b"x\ntask.completed"), EventKind::Finish);
        assert_eq!(classify(b"task.startedX\n"), EventKind::Generic);
    }

    #[test]
    fn status_comes_from_failed_anywhere() {
        assert_eq!(finish_status(b"task.failed"), Status::Error);
        assert_eq!(finish_status(b"failed_thing.completed"), Status::Error);
        assert_eq!(finish_status(b"task.completed"), Status::Success);
        assert_eq!(Status::Error.as_str(), "error");
        assert_eq!(Status::Success.as_str(), "success");
    }
}
