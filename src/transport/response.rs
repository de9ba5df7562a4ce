//! What a receiver answered: the partial success of a 2xx response and the
//! message of an error response, in either wire format.

use crate::support::protocol::Protocol;

/// The partial success a collector reported in a 2xx response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialSuccess {
    /// Spans the collector rejected (0 with a message: a warning).
    pub rejected_spans: i64,
    pub error_message: String,
}

enum BodyFormat {
    Protobuf,
    Json,
    Other,
}

/// How a response body is encoded: as its Content-Type says; without
/// one, as the request was.
fn response_format(content_type: Option<&str>, request: Protocol) -> BodyFormat {
    match content_type.map(|c| c.trim().to_ascii_lowercase()) {
        Some(c) if c.starts_with("application/x-protobuf") => BodyFormat::Protobuf,
        Some(c) if c.starts_with("application/json") => BodyFormat::Json,
        Some(_) => BodyFormat::Other,
        None => match request {
            Protocol::HttpProtobuf => BodyFormat::Protobuf,
            Protocol::HttpJson => BodyFormat::Json,
        },
    }
}

/// The partial success in a 2xx response body, if it has one.
pub fn partial_success(
    content_type: Option<&str>,
    request: Protocol,
    body: &[u8],
) -> Option<PartialSuccess> {
    if body.is_empty() {
        return None;
    }
    match response_format(content_type, request) {
        BodyFormat::Protobuf => protobuf::partial_success(body),
        BodyFormat::Json => json::partial_success(body),
        BodyFormat::Other => None,
    }
}

/// An error response's message: the `google.rpc.Status` message, else
/// the start of the body as text.
pub fn error_text(content_type: Option<&str>, request: Protocol, body: &[u8]) -> String {
    let status = match response_format(content_type, request) {
        BodyFormat::Protobuf => protobuf::status_message(body),
        BodyFormat::Json => json::status_message(body),
        BodyFormat::Other => None,
    };
    if let Some(message) = status.filter(|m| !m.is_empty()) {
        return message;
    }
    match std::str::from_utf8(body) {
        Ok(text) if text.trim().is_empty() => "(no message in the response)".to_string(),
        Ok(text) => snippet(text),
        Err(_) => format!("({} bytes)", body.len()),
    }
}

fn snippet(body: &str) -> String {
    let trimmed = body.trim();
    let mut end = trimmed.len().min(300);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    trimmed[..end].to_string()
}

/// JSON responses.
mod json {
    use super::PartialSuccess;

    /// The partial success of a JSON `ExportTraceServiceResponse`; `None` when
    /// the body is not one or has no `partialSuccess`.
    pub fn partial_success(body: &[u8]) -> Option<PartialSuccess> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let p = v.get("partialSuccess")?;
        let rejected_spans = match p.get("rejectedSpans") {
            Some(serde_json::Value::String(s)) => s.parse::<i64>().ok()?,
            Some(other) => other.as_i64()?,
            None => 0,
        };
        let error_message = p
            .get("errorMessage")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_string();
        Some(PartialSuccess {
            rejected_spans,
            error_message,
        })
    }

    /// The `message` of a JSON `google.rpc.Status` error body.
    pub fn status_message(body: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v.get("message")?.as_str().map(str::to_string)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn partial_success_reads_strings_numbers_and_defaults() {
            assert_eq!(
                partial_success(
                    br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"bad"}}"#
                ),
                Some(PartialSuccess {
                    rejected_spans: 2,
                    error_message: "bad".into()
                })
            );
            assert_eq!(
                partial_success(br#"{"partialSuccess":{"rejectedSpans":3}}"#)
                    .map(|p| p.rejected_spans),
                Some(3)
            );
            assert_eq!(
                partial_success(br#"{"partialSuccess":{}}"#).map(|p| p.rejected_spans),
                Some(0)
            );
            assert_eq!(partial_success(b"{}"), None);
            assert_eq!(partial_success(b"not json"), None);
            assert_eq!(
                status_message(br#"{"code":3,"message":"bad span"}"#).as_deref(),
                Some("bad span")
            );
        }
    }
}

/// Protobuf responses.
mod protobuf {
    use super::PartialSuccess;

    /// Reads protobuf fields, strictly: malformed input ends the reading.
    struct Reader<'a> {
        bytes: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn varint(&mut self) -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..70).step_by(7) {
                let b = *self.bytes.get(self.pos)?;
                self.pos += 1;
                if shift == 63 && b > 1 {
                    return None;
                }
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        }

        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let end = self.pos.checked_add(n)?;
            let s = self.bytes.get(self.pos..end)?;
            self.pos = end;
            Some(s)
        }

        /// The next field: its number and, for the wire types this exporter
        /// reads, its value (`Err(())` on malformed input).
        fn field(&mut self) -> Option<Result<(u64, Field<'a>), ()>> {
            if self.pos >= self.bytes.len() {
                return None;
            }
            let Some(key) = self.varint() else {
                return Some(Err(()));
            };
            let field = key >> 3;
            let value = match key & 7 {
                0 => self.varint().map(Field::Varint),
                1 => self.take(8).map(|_| Field::Other),
                2 => self
                    .varint()
                    .and_then(|n| usize::try_from(n).ok())
                    .and_then(|n| self.take(n))
                    .map(Field::Len),
                5 => self.take(4).map(|_| Field::Other),
                _ => None,
            };
            Some(match value {
                Some(v) if field > 0 => Ok((field, v)),
                _ => Err(()),
            })
        }
    }

    enum Field<'a> {
        Varint(u64),
        Len(&'a [u8]),
        Other,
    }

    /// The partial success of a protobuf `ExportTraceServiceResponse`
    /// (`partial_success` = 1: `rejected_spans` = 1, `error_message` = 2);
    /// `None` when the body is malformed or has no partial success.
    pub fn partial_success(body: &[u8]) -> Option<PartialSuccess> {
        let mut found: Option<PartialSuccess> = None;
        let mut r = Reader {
            bytes: body,
            pos: 0,
        };
        while let Some(f) = r.field() {
            if let (1, Field::Len(inner)) = f.ok()? {
                // Repeated occurrences of a message field merge.
                let p = found.get_or_insert(PartialSuccess {
                    rejected_spans: 0,
                    error_message: String::new(),
                });
                let mut ir = Reader {
                    bytes: inner,
                    pos: 0,
                };
                while let Some(f) = ir.field() {
                    match f.ok()? {
                        (1, Field::Varint(v)) => p.rejected_spans = v as i64,
                        (2, Field::Len(s)) => {
                            p.error_message = String::from_utf8_lossy(s).into_owned()
                        }
                        _ => {}
                    }
                }
            }
        }
        found
    }

    /// The `message` (field 2) of a protobuf `google.rpc.Status` error body.
    pub fn status_message(body: &[u8]) -> Option<String> {
        let mut r = Reader {
            bytes: body,
            pos: 0,
        };
        let mut message = None;
        while let Some(f) = r.field() {
            if let (2, Field::Len(s)) = f.ok()? {
                message = Some(String::from_utf8_lossy(s).into_owned());
            }
        }
        message
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn responses_decode_strictly() {
            // partial_success { rejected_spans: 3, error_message: "bad" }
            let body = [0x0a, 0x07, 0x08, 0x03, 0x12, 0x03, b'b', b'a', b'd'];
            assert_eq!(
                partial_success(&body),
                Some(PartialSuccess {
                    rejected_spans: 3,
                    error_message: "bad".into()
                })
            );
            // An unknown field (9, fixed32) before it is skipped.
            let mut with_unknown = vec![0x4d, 1, 2, 3, 4];
            with_unknown.extend_from_slice(&body);
            assert_eq!(
                partial_success(&with_unknown).map(|p| p.rejected_spans),
                Some(3)
            );
            assert_eq!(partial_success(&[]), None);
            assert_eq!(
                partial_success(&[0x0a, 0x00]).map(|p| p.rejected_spans),
                Some(0)
            );
            // Truncated, or a group wire type: malformed.
            assert_eq!(partial_success(&body[..5]), None);
            assert_eq!(partial_success(&[0x0b]), None);
            // google.rpc.Status { code: 3, message: "no" }
            assert_eq!(
                status_message(&[0x08, 0x03, 0x12, 0x02, b'n', b'o']).as_deref(),
                Some("no")
            );
            assert_eq!(status_message(b"{\"json\": true}"), None);
        }
    }
}
