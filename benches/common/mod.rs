//! Payloads and pre-filled stores shared by the core benchmarks.
//!
//! The payload mirrors what a Tasker app sends: a task id and name, and a
//! nested context with a few strings, numbers and an array.

#![allow(dead_code)]

use tasker_trace_core::input::backend::Event;
use tasker_trace_core::input::backend::{KeyField, KeySource};
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::support::clock::Stamp;
use tasker_trace_core::value::{Str, Value};

/// A realistic Tasker payload for task `id`.
pub fn payload(id: i64) -> Value {
    Value::Hash(vec![
        (Value::symbol("task_id"), Value::Int(id)),
        (
            Value::symbol("task_name"),
            Value::string("order_fulfillment"),
        ),
        (
            Value::symbol("context"),
            Value::Hash(vec![
                (Value::symbol("order_id"), Value::Int(100_000 + id)),
                (Value::symbol("customer"), Value::string("acme-industries")),
                (Value::symbol("amount"), Value::Float(129.95)),
                (Value::symbol("priority"), Value::Int(3)),
                (
                    Value::symbol("tags"),
                    Value::Array(vec![
                        Value::string("web"),
                        Value::string("priority"),
                        Value::string("eu"),
                    ]),
                ),
                (Value::symbol("region"), Value::string("eu-west-1")),
            ]),
        ),
    ])
}

/// The trace key a payload with `task_id: id` gets.
pub fn task_key(id: i64) -> KeySource {
    KeySource::Field(KeyField::TaskId.key_for_int(id))
}

/// An event as the binding builds it: name, key, converted payload, clock reading.
pub fn event(name: &str, id: i64) -> Event {
    Event::new(Str::utf8(name), task_key(id), payload(id), Stamp::now())
}

/// One whole task: start, two spans, finish.
pub fn lifecycle(backend: &Backend, id: i64) {
    backend.ingest(event("task.started", id));
    backend.ingest(event("step.before_handle", id));
    backend.ingest(event("step.after_handle", id));
    backend.ingest(event("task.completed", id));
}

/// A backend holding `n` finished traces, each with two spans.
pub fn filled_backend(n: i64) -> Backend {
    let backend = Backend::new("bench-host");
    for id in 0..n {
        lifecycle(&backend, id);
    }
    backend
}
