//! The lifecycle tracer's input: one published Tasker event, owned and
//! converted ([`LifecycleEvent`]), and its attribute values.
//!
//! - [`event`]: event names and kinds, task and step ids, the event
//! - [`attributes`]: attribute keys and bounded values
//! - [`repeat`]: telling a repeated step event from a new one cheaply
//! - [`values`]: structured values' bounds and markers, and the native part
//!   of the nested-key filter

pub mod attributes;
pub mod event;
pub mod repeat;
pub mod values;

pub use attributes::{
    Attr, AttrKey, AttrValue, Text, MAX_ARRAY_ITEMS, MAX_TEXT_BYTES, NEVER_EXPORTED,
};
pub use event::{
    classify, EventKind, EventName, Id, LifecycleEvent, ParentSpan, ToState, KNOWN_EVENT_NAMES,
    SPAN_EVENT_NAMES,
};
