//! Delivery of encoded requests to an OTLP/HTTP receiver.
//!
//! - [`http`]: the HTTP client: compression, attempts, responses
//! - [`tls`]: rustls (ring), the certificate store or a CA, mTLS
//! - [`retry`]: retryable statuses, backoff, `Retry-After`, cancellation
//! - [`env`]: `OTEL_EXPORTER_OTLP_*` variables, parsed
//! - [`client`]: the `otlp_*` settings in force and the transport built
//!   from them ([`OtlpClient::transport`])

pub mod client;
pub mod env;
pub mod http;
pub mod retry;
pub mod tls;

pub use client::{OtlpClient, OtlpSettings, PushOverrides};
pub use http::{Cancel, Compression, Delivery, Protocol, Target, Tls, Transport};
