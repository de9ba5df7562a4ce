//! Delivery of encoded requests to an OTLP/HTTP receiver. Nothing here
//! knows spans: a request is bytes in a [`Protocol`](crate::support::protocol::Protocol).
//!
//! - [`settings`]: the `otlp_*` settings, a push's overrides, the [`Destination`]
//! - [`env`](mod@env): the `OTEL_EXPORTER_OTLP_*` variables, parsed
//! - [`client`]: the settings in force and the transport built from them
//!   ([`OtlpClient::transport`])
//! - [`http`]: the HTTP client: compression, attempts, the [`Transport`]
//! - [`response`]: a response's partial success or error message
//! - [`proxy`]: the proxy variables of the endpoint's scheme, `no_proxy`
//! - [`tls`]: rustls (ring), the certificate store or a CA, mTLS
//! - [`retry`]: retryable statuses, backoff, `Retry-After`, [`Cancel`]
//! - [`sender`]: the push thread, whose wait a cancel ends at once

pub mod client;
pub mod env;
pub mod http;
pub mod proxy;
pub mod response;
pub mod retry;
pub mod sender;
pub mod settings;
pub mod tls;
pub mod url;

pub use client::OtlpClient;
pub use http::{Delivery, Transport};
pub use response::PartialSuccess;
pub use retry::Cancel;
pub use sender::{OwnedBody, PushSender, MAX_PUSH_THREADS};
pub use settings::{Compression, Destination, OtlpSettings, PushOverrides};
pub use tls::Tls;
