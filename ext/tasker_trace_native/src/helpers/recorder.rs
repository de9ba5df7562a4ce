//! How a recorder's work ends (`handle_event`, `record_lifecycle_event`):
//! stored, refused, failed (logged through the Ruby layer's logger) or an
//! error that must propagate, and what the recorder returns for each.

use magnus::prelude::*;
use magnus::{Error, RModule, Ruby, Value as RValue};

use crate::helpers::errors::{self, must_propagate};
use crate::process::{exporter, root_module};

/// `TaskerTraceNative.<logger>(event_name, message)` (`log_error`, or
/// `log_lifecycle_error` for the lifecycle tracer). A failure of the logger
/// itself (a StandardError) is absorbed, because the recorders must not
/// raise for it; an interrupt, a kill or a throw that arrives meanwhile
/// propagates.
fn log_failure(ruby: &Ruby, logger: &str, event_name: RValue, message: &str) -> Result<(), Error> {
    let logged = root_module(ruby)
        .and_then(|module| module.funcall::<_, _, RValue>(logger, (event_name, message)));
    match logged {
        Err(e) if must_propagate(ruby, &e) => Err(e),
        _ => Ok(()),
    }
}

/// `TaskerTraceNative::Announcer.drain`: the exporter's warning lines
/// (drops, failing exports) handed to Ruby's logger on this app thread. As
/// for `log_failure`, a StandardError of the logger is absorbed.
pub(crate) fn hand_over_announcements(ruby: &Ruby) -> Result<(), Error> {
    let drained = root_module(ruby)
        .and_then(|m| m.const_get::<_, RModule>("Announcer"))
        .and_then(|announcer| announcer.funcall::<_, _, RValue>("drain", ()));
    match drained {
        Err(e) if must_propagate(ruby, &e) => Err(e),
        _ => Ok(()),
    }
}

/// How a recorder's work ended (`handle_event`, `record_lifecycle_event`).
pub(crate) enum Ingested {
    /// Stored in the core.
    Stored,
    /// Refused for its input: false, quietly.
    Refused,
    /// Failed inside: false, and logged.
    Failed(String),
    /// A non-local exit or an exception that must propagate.
    Raise(Error),
}

impl Ingested {
    /// A Ruby error met while converting: propagated, or a logged failure.
    pub(crate) fn from_error(ruby: &Ruby, e: Error) -> Ingested {
        if must_propagate(ruby, &e) {
            return Ingested::Raise(e);
        }
        match errors::error_message(ruby, &e) {
            Ok(message) => Ingested::Failed(message),
            Err(interrupt) => Ingested::Raise(interrupt),
        }
    }
}

/// What a recorder returns for how its work ended: true when stored; false
/// when refused or failed (counted by `count_refusal`; a failure, a caught
/// panic included, also logged through `TaskerTraceNative.<logger>`); the
/// error itself when it must propagate (also counted by `count_refusal`).
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tasker_trace")]
pub(crate) fn recorder_result(
    ruby: &Ruby,
    outcome: std::thread::Result<Ingested>,
    name: RValue,
    logger: &str,
    count_refusal: impl Fn(),
) -> Result<bool, Error> {
    let outcome =
        outcome.unwrap_or_else(|panic| Ingested::Failed(errors::panic_report(panic.as_ref())));
    if exporter().announcer().pending() {
        hand_over_announcements(ruby)?;
    }
    match outcome {
        Ingested::Stored => Ok(true),
        Ingested::Refused => {
            count_refusal();
            Ok(false)
        }
        Ingested::Failed(message) => {
            count_refusal();
            log_failure(ruby, logger, name, &message)?;
            Ok(false)
        }
        // Cut short by an exception that must propagate (an interrupt, a
        // kill, a `throw` from a value's `to_s`): nothing was stored, and
        // it is counted as refused, so that every call lands in one counter.
        Ingested::Raise(e) => {
            count_refusal();
            Err(e)
        }
    }
}
