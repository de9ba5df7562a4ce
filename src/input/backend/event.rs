//! One event for the drop-in backend, fully converted: its name, what it
//! does to the store, its trace key, its payload and when it happened.

use super::keys::KeySource;
use super::routing::{classify, Route};
use crate::support::clock::Stamp;
use crate::value::{Packed, Str};

/// One event, fully converted, ready to be stored.
#[derive(Debug)]
pub struct Event {
    pub name: Str,
    pub kind: Route,
    pub key: KeySource,
    pub payload: Packed,
    pub at: Stamp,
}

impl Event {
    /// An event whose kind is derived from its name. The payload is a
    /// [`Packed`] value or a [`crate::value::Value`] tree (packed here).
    pub fn new(name: Str, key: KeySource, payload: impl Into<Packed>, at: Stamp) -> Event {
        let kind = classify(name.bytes());
        Event {
            name,
            kind,
            key,
            payload: payload.into(),
            at,
        }
    }
}
