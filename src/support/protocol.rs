//! The OTLP/HTTP wire format: which encoder writes a request, the content
//! type the transport sends it with, and the largest body receivers take.

/// The OTLP/HTTP encoding of request bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`, `application/x-protobuf`: the default.
    #[default]
    HttpProtobuf,
    /// `http/json`, `application/json`.
    HttpJson,
}

impl Protocol {
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "application/x-protobuf",
            Protocol::HttpJson => "application/json",
        }
    }

    /// The name `OTEL_EXPORTER_OTLP_PROTOCOL` uses.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }
}

/// Most bytes of one (uncompressed) request body; bigger exports are
/// split. Under the OpenTelemetry Collector's default
/// `max_request_body_size`, 20 MiB (which recent Collectors apply to the
/// decompressed body, and answer with a 400 when it is passed).
pub const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;
