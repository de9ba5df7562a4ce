//! Delivery of the warnings about settings and variables: the registry in
//! [`crate::process::warnings`] keeps each distinct message once; here the
//! ones not yet delivered are handed to the Ruby layer
//! (`TaskerTraceNative::Warnings.emit`: `Rails.logger` when Rails is loaded,
//! else stderr), on the calling Ruby thread, never from a native one.

use magnus::prelude::*;
use magnus::{Error, RModule, Ruby, Value as RValue};

use crate::helpers::errors::must_propagate;
use crate::process::{root_module, warnings};

/// Adds `message` to the warnings (once per distinct message) and delivers
/// what waits.
pub fn warn(ruby: &Ruby, message: &str) -> Result<(), Error> {
    warnings().warn(message);
    deliver(ruby)
}

/// Hands every warning not yet delivered to the Ruby layer. A logger that
/// fails (a StandardError) does not lose the warning: it goes to stderr; an
/// interrupt that arrives meanwhile propagates (the rest wait for the next
/// delivery).
pub fn deliver(ruby: &Ruby) -> Result<(), Error> {
    if !warnings().has_pending() {
        return Ok(());
    }
    let mut pending = warnings().take_pending().into_iter();
    for message in pending.by_ref() {
        let emitted = root_module(ruby)
            .and_then(|m| m.const_get::<_, RModule>("Warnings"))
            .and_then(|w| w.funcall::<_, _, RValue>("emit", (message.as_str(),)));
        match emitted {
            Ok(_) => {}
            Err(e) if must_propagate(ruby, &e) => {
                // Not delivered yet: queued again, after the dedup check.
                for later in std::iter::once(message).chain(pending) {
                    warnings().requeue(later);
                }
                return Err(e);
            }
            Err(_) => eprintln!("tasker_trace_native: {message}"),
        }
    }
    Ok(())
}
