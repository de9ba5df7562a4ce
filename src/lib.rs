//! `tasker_trace_core`: the pure-Rust core of the `tasker_trace_native` gem.
//! It knows nothing of Ruby; the binding crate converts Ruby values into the
//! core's input types and back. The folders follow the pipeline, and each
//! depends only on the ones listed before it:
//!
//! - [`support`]: clock, fork-safe locks, ids, digits, the setting error
//! - [`value`]: the owned payload model (bytes and encodings kept, depth-bounded)
//! - [`input`]: events as they come in: the backend's and the lifecycle's
//! - [`model`]: the two bounded sources: the backend's store, the lifecycle tracer
//! - [`encode`]: spans, the resource, OTLP/HTTP bodies in protobuf or JSON
//! - [`transport`]: delivery to an OTLP receiver: settings, env, TLS, retries, HTTP
//! - [`export`]: take, encode, send, put back; the background exporter

pub mod encode;
pub mod export;
pub mod input;
pub mod model;
pub mod support;
pub mod transport;
pub mod value;
