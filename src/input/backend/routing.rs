//! Which kind of event a name is, and the status a finish event gives.
//!
//! The original backend matches names with Ruby regular expressions such as
//! `/\.started$/`. Ruby's `$` matches at the end of the string *and* before any
//! newline, so "ends with" below means "some line ends with", exactly as there.

/// Where an event goes in the store: what it does there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
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
pub fn classify(name: &[u8]) -> Route {
    if line_ends_with(name, b".started") {
        Route::Start
    } else if line_ends_with(name, b".completed") || line_ends_with(name, b".failed") {
        Route::Finish
    } else if contains(name, b".before_") || contains(name, b".after_") {
        Route::Span
    } else {
        Route::Generic
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
        assert_eq!(classify(b"task.started"), Route::Start);
        assert_eq!(classify(b"step.started"), Route::Start);
        assert_eq!(classify(b"task.completed"), Route::Finish);
        assert_eq!(classify(b"task.failed"), Route::Finish);
        assert_eq!(classify(b"step.before_handle"), Route::Span);
        assert_eq!(classify(b"step.after_handle"), Route::Span);
        assert_eq!(classify(b"task.after_transition.x"), Route::Span);
        assert_eq!(classify(b"step.before_handle.completed"), Route::Finish);
        assert_eq!(classify(b"step.before_handle.started"), Route::Start);
        assert_eq!(classify(b"task.completed.extra"), Route::Generic);
        assert_eq!(
            classify(b"workflow.viable_steps_discovered"),
            Route::Generic
        );
        assert_eq!(classify(b""), Route::Generic);
        assert_eq!(classify(b"started"), Route::Generic);
        assert_eq!(classify(b".started"), Route::Start);
        assert_eq!(classify(b"before_x"), Route::Generic);
    }

    #[test]
    fn dollar_matches_before_a_newline_like_ruby() {
        assert_eq!(classify(b"task.started\nmore"), Route::Start);
        assert_eq!(classify(b"task.failed\n"), Route::Finish);
        assert_eq!(classify(b"x\ntask.completed"), Route::Finish);
        assert_eq!(classify(b"task.startedX\n"), Route::Generic);
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
