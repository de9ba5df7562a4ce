//! Requests: spans gathered into `ExportTraceServiceRequest` bodies in one
//! wire format, split into several bodies where one would pass a size limit.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::limits::SpanLimits;
use super::record_spans::write_record;
use super::resource::Resource;
use super::span::{EncodeError, SpanView, SpanWriter};
use super::{json, protobuf};
use crate::model::backend::store::{Key, Record};
use crate::support::clock::Stamp;
use crate::support::protocol::Protocol;

/// Bytes per span of the last request, by protocol, to size the next one's
/// buffer so that a large request is written without regrowing.
static BYTES_PER_SPAN: [AtomicUsize; 2] = [AtomicUsize::new(800), AtomicUsize::new(400)];

fn slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::HttpJson => 0,
        Protocol::HttpProtobuf => 1,
    }
}

enum Frame {
    Json(json::Frame),
    Protobuf(protobuf::Frame),
}

/// One encoded request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    buf: Vec<u8>,
    start: usize,
    /// Spans in it.
    pub spans: usize,
    /// Index (in the order they were given) of the record of its first
    /// span; records before it are wholly in earlier bodies.
    pub first_record: usize,
    /// Index (in the order they were given) of the group of its first
    /// grouped span, or of the next group when it begins with none; groups
    /// before it are wholly in earlier bodies (see [`Encoder::group`]).
    pub first_group: usize,
    /// Whether it holds spans given with [`Encoder::span`] or
    /// [`Encoder::group`].
    pub has_extra: bool,
}

impl Body {
    /// The encoded request.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The encoded request, owned.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

/// Builds requests from the store's records and from spans of any other
/// source, in one protocol; feed in any order, then [`finish`](Self::finish).
///
/// ```ignore
/// let mut enc = Encoder::new(Protocol::HttpProtobuf, &resource)?;
/// for span in &tracer_spans { enc.span(&span.view())?; } // OwnedSpan
/// for (key, rec) in &records { enc.record(key, rec, now)?; }
/// let body = enc.finish().remove(0).into_bytes(); // one request without a limit
/// ```
pub struct Encoder {
    frame: Frame,
    protocol: Protocol,
    limit: usize,
    done: Vec<Body>,
    current: Body,
    /// Records fed so far.
    records: usize,
    /// The current record (for `first_record`), or `None` for extra spans.
    in_record: Option<usize>,
    /// Groups fed so far, and the current one (for `first_group`).
    groups: usize,
    in_group: Option<usize>,
    /// Where the current record's or group's spans begin in the current
    /// body (a byte offset), and how many spans came before them there.
    record_at: (usize, usize),
    /// Spans that went alone in a request over the limit.
    oversized: usize,
    spans: usize,
    /// The resource's span limits, applied to the store's records.
    span_limits: SpanLimits,
}

impl Encoder {
    /// An encoder that makes one request, however large.
    pub fn new(protocol: Protocol, resource: &Resource) -> Result<Encoder, EncodeError> {
        Encoder::with_limit(protocol, resource, usize::MAX)
    }

    /// An encoder whose requests are at most `limit` bytes each (a span that
    /// cannot fit even alone goes alone in a request of its own, counted in
    /// [`oversized`](Self::oversized)).
    pub fn with_limit(
        protocol: Protocol,
        resource: &Resource,
        limit: usize,
    ) -> Result<Encoder, EncodeError> {
        let frame = match protocol {
            Protocol::HttpJson => Frame::Json(json::Frame::new(resource)?),
            Protocol::HttpProtobuf => Frame::Protobuf(protobuf::Frame::new(resource)),
        };
        let mut enc = Encoder {
            frame,
            protocol,
            limit,
            done: Vec::new(),
            current: Body {
                buf: Vec::new(),
                start: 0,
                spans: 0,
                first_record: 0,
                first_group: 0,
                has_extra: false,
            },
            records: 0,
            in_record: None,
            groups: 0,
            in_group: None,
            record_at: (0, 0),
            oversized: 0,
            spans: 0,
            span_limits: resource.span_limits,
        };
        enc.current = enc.new_body(0);
        Ok(enc)
    }

    /// Room for `spans` more spans in the current body, from the size per
    /// span of the last request.
    pub fn reserve_spans(&mut self, spans: usize) {
        let per_span = BYTES_PER_SPAN[slot(self.protocol)]
            .load(Ordering::Relaxed)
            .clamp(64, 64 * 1024);
        let want = spans.saturating_mul(per_span).min(self.limit).min(1 << 30);
        self.current.buf.reserve(want);
    }

    fn new_body(&self, capacity: usize) -> Body {
        let mut buf = Vec::with_capacity(capacity);
        match &self.frame {
            Frame::Json(f) => f.start(&mut buf),
            Frame::Protobuf(f) => f.start(&mut buf),
        }
        let start = buf.len();
        Body {
            buf,
            start,
            spans: 0,
            first_record: self.in_record.unwrap_or(self.records),
            first_group: self.in_group.unwrap_or(self.groups),
            has_extra: false,
        }
    }

    fn finished_len(&self, buf_len: usize) -> usize {
        match &self.frame {
            Frame::Json(_) => json::Frame::finished_len(buf_len),
            Frame::Protobuf(f) => f.finished_len(buf_len),
        }
    }

    fn separator(&self, first: bool) -> usize {
        match &self.frame {
            Frame::Json(_) => json::Frame::separator(first),
            Frame::Protobuf(_) => protobuf::Frame::separator(first),
        }
    }

    fn append(&mut self, span: &SpanView<'_>) -> Result<(), EncodeError> {
        let first = self.current.spans == 0;
        let buf = &mut self.current.buf;
        match &self.frame {
            Frame::Json(_) => json::Frame::write_span(buf, first, span)?,
            Frame::Protobuf(_) => protobuf::Frame::write_span(buf, span),
        }
        Ok(())
    }

    /// Adds one span: from the store's records (through [`record`](Self::record))
    /// or from elsewhere (an [`OwnedSpan`](super::OwnedSpan)'s
    /// [`view`](super::OwnedSpan::view)).
    pub fn span(&mut self, span: &SpanView<'_>) -> Result<(), EncodeError> {
        let mark = self.current.buf.len();
        self.append(span)?;
        if self.finished_len(self.current.buf.len()) > self.limit {
            if self.current.spans == 0 {
                self.send_alone();
                return Ok(());
            }
            // Close the current body before this span and move the span
            // into a new one; with the record's spans before it, when other
            // spans precede them and they fit together, so that a record
            // (or a group) is never split across requests unless it alone
            // passes the limit (a request that fails then puts back only
            // records and groups that no earlier request delivered).
            let sep = self.separator(false);
            let (at, before) = self.record_at;
            let whole = (self.in_record.is_some() || self.in_group.is_some())
                && before > 0
                && self.finished_len(self.current.start + self.current.buf.len() - at - sep)
                    <= self.limit;
            let (from, moved) = if whole {
                (at, self.current.spans - before)
            } else {
                (mark, 0)
            };
            let capacity = self.current.buf.capacity().min(self.limit);
            let mut next = self.new_body(capacity);
            next.buf.extend_from_slice(&self.current.buf[from + sep..]);
            next.spans = moved;
            self.current.buf.truncate(from);
            self.current.spans -= moved;
            let full = std::mem::replace(&mut self.current, next);
            self.close(full);
            self.record_at = (self.current.start, 0);
            if self.finished_len(self.current.buf.len()) > self.limit {
                self.send_alone();
                return Ok(());
            }
        }
        self.current.spans += 1;
        self.current.has_extra |= self.in_record.is_none();
        self.spans += 1;
        Ok(())
    }

    /// Adds a store record's spans (see `mapping`). `now` closes the root
    /// span of an open trace.
    pub fn record(&mut self, key: &Key, record: &Record, now: Stamp) -> Result<(), EncodeError> {
        let index = self.records;
        self.in_record = Some(index);
        self.record_at = (self.current.buf.len(), self.current.spans);
        if self.current.spans == 0 {
            self.current.first_record = index;
        }
        let limits = self.span_limits;
        let written = write_record(key, record, now, &limits, self);
        self.in_record = None;
        self.records += 1;
        written
    }

    /// Adds spans that belong together (a lifecycle run's): like a
    /// record's, they go into one request unless they alone pass the
    /// limit, and each body tells the first group it holds
    /// ([`Body::first_group`]).
    pub fn group(&mut self, spans: &[super::OwnedSpan]) -> Result<(), EncodeError> {
        let index = self.groups;
        self.in_group = Some(index);
        self.record_at = (self.current.buf.len(), self.current.spans);
        if self.current.spans == 0 {
            self.current.first_group = index;
        }
        let mut written = Ok(());
        for span in spans {
            written = written.and_then(|()| self.span(&span.view()));
        }
        self.in_group = None;
        self.groups += 1;
        if self.current.spans == 0 {
            self.current.first_group = self.groups;
        }
        written
    }

    /// Spans that went alone in a request of their own, over the limit.
    pub fn oversized(&self) -> usize {
        self.oversized
    }

    /// The span just appended, alone in the current body, passes the limit:
    /// it goes alone, in a request of its own, and the collector decides
    /// (a limit learned from a 413 is a guess; a 413 for this request
    /// refuses what it carries for good, counted). Nothing is left out.
    fn send_alone(&mut self) {
        self.oversized += 1;
        self.current.spans += 1;
        self.current.has_extra |= self.in_record.is_none();
        self.spans += 1;
        let next = self.new_body(0);
        let full = std::mem::replace(&mut self.current, next);
        self.close(full);
        self.record_at = (self.current.start, 0);
    }

    fn close(&mut self, mut body: Body) {
        let start = match &self.frame {
            Frame::Json(_) => json::Frame::finish(&mut body.buf),
            Frame::Protobuf(f) => f.finish(&mut body.buf),
        };
        body.start = start;
        self.done.push(body);
    }

    /// The request bodies, in order; always at least one (an empty request
    /// when nothing was added).
    pub fn finish(mut self) -> Vec<Body> {
        if self.current.spans > 0 || self.done.is_empty() {
            let last = std::mem::replace(
                &mut self.current,
                Body {
                    buf: Vec::new(),
                    start: 0,
                    spans: 0,
                    first_record: 0,
                    first_group: 0,
                    has_extra: false,
                },
            );
            self.close(last);
        }
        let bytes: usize = self.done.iter().map(|b| b.bytes().len()).sum();
        if let Some(per_span) = bytes.checked_div(self.spans) {
            // A little over the average, so the next one of the same shape fits.
            BYTES_PER_SPAN[slot(self.protocol)].store(per_span + 32, Ordering::Relaxed);
        }
        self.done
    }
}

impl SpanWriter for Encoder {
    fn write_span(&mut self, span: &SpanView<'_>) -> Result<(), EncodeError> {
        self.span(span)
    }
}

/// Encodes `records`, and `extra` spans before them, as one request.
pub fn encode_request(
    records: &[(Key, std::sync::Arc<Record>)],
    extra: &[super::OwnedSpan],
    resource: &Resource,
    now: Stamp,
    protocol: Protocol,
) -> Result<Vec<u8>, EncodeError> {
    let mut enc = Encoder::new(protocol, resource)?;
    enc.reserve_spans(extra.len() + records.len() * 2);
    for span in extra {
        enc.span(&span.view())?;
    }
    for (key, record) in records {
        enc.record(key, record, now)?;
    }
    Ok(enc
        .finish()
        .into_iter()
        .next()
        .map(Body::into_bytes)
        .unwrap_or_default())
}
