//! Shared by the OTLP integration tests: building stores, checking exports
//! against the OTLP reference types, and a scripted collector on 127.0.0.1.

#![allow(dead_code)]

pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value as Json;
use tasker_trace_core::encode::{Resource, SpanLimits};
use tasker_trace_core::export::{push, PushOutcome, Sending, Sources, EXPLICIT_SETTLE};
use tasker_trace_core::input::backend::Event;
use tasker_trace_core::input::backend::{KeyField, KeySource};
use tasker_trace_core::model::backend::store::{Key, Record};
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::model::{Source, Take};
use tasker_trace_core::support::clock::Stamp;
use tasker_trace_core::transport::{Cancel, PushSender, Transport};
use tasker_trace_core::value::{Encoding, Str, Value};

pub fn sym(s: &str) -> Value {
    Value::symbol(s)
}

pub fn s(v: &str) -> Value {
    Value::string(v)
}

pub fn hash(pairs: Vec<(Value, Value)>) -> Value {
    Value::Hash(pairs)
}

pub fn task_key(id: i64) -> KeySource {
    KeySource::Field(KeyField::TaskId.key_for_int(id))
}

pub fn at(wall_s: i64, mono_ms: u64) -> Stamp {
    Stamp {
        wall_ns: wall_s * 1_000_000_000,
        mono_ns: mono_ms * 1_000_000,
    }
}

pub fn event(b: &Backend, name: &str, key: KeySource, payload: Value, stamp: Stamp) {
    b.ingest(Event::new(Str::utf8(name), key, payload, stamp));
}

/// The push thread of these tests.
pub static SENDER: PushSender = PushSender::new();

/// A push of the store's finished records through the one export path, as
/// `push_otlp` sends (through the push thread).
#[allow(dead_code)]
pub fn push_finished(
    b: &Backend,
    resource: &Resource,
    transport: &Transport,
    cancel: &Cancel,
) -> PushOutcome {
    let sending = Sending::PushThread(transport, &SENDER);
    push(
        Sources::store(b),
        resource,
        sending,
        cancel,
        EXPLICIT_SETTLE,
    )
}

/// The store's records an export covers: finished ones, and open ones too
/// with `include_open`; with `drain` they are removed.
#[allow(dead_code)]
pub fn select(b: &Backend, drain: bool, include_open: bool) -> Vec<(Key, Arc<Record>)> {
    b.take(Take {
        drain,
        include_open,
        settled_for: Duration::ZERO,
    })
    .ready
}

pub fn resource() -> Resource {
    Resource {
        service_name: "orders".to_string(),
        host_name: "test-host".to_string(),
        pid: 4242,
        version: "9.8.7".to_string(),
        attributes: vec![("deployment.environment".to_string(), s("test"))],
        span_limits: SpanLimits::DEFAULT,
    }
}

/// One finished task trace with a paired step span, the shape of a Tasker task.
pub fn finished_task(b: &Backend, id: i64) {
    let t0 = Stamp::now();
    event(
        b,
        "task.started",
        task_key(id),
        hash(vec![
            (sym("task_id"), Value::Int(id)),
            (sym("task_name"), s("order_fulfillment")),
        ]),
        t0,
    );
    for name in ["step.before_handle", "step.after_handle"] {
        event(
            b,
            name,
            task_key(id),
            hash(vec![
                (sym("task_id"), Value::Int(id)),
                (sym("workflow_step_id"), Value::Int(id * 10)),
            ]),
            Stamp::now(),
        );
    }
    event(
        b,
        "task.completed",
        task_key(id),
        hash(vec![(sym("task_id"), Value::Int(id))]),
        Stamp::now(),
    );
}

/// A payload holding every value kind the store keeps.
pub fn rich_payload() -> Value {
    hash(vec![
        (sym("task_id"), Value::Int(42)),
        (sym("task_name"), s("order_fulfillment")),
        (sym("negative"), Value::Int(i64::MIN)),
        (
            sym("big"),
            Value::BigInt("123456789012345678901234567890".into()),
        ),
        (sym("ratio"), Value::Float(0.25)),
        (sym("nan"), Value::Float(f64::NAN)),
        (sym("inf"), Value::Float(f64::INFINITY)),
        (sym("ninf"), Value::Float(f64::NEG_INFINITY)),
        (sym("flag"), Value::Bool(true)),
        (sym("off"), Value::Bool(false)),
        (sym("none"), Value::Nil),
        (sym("state"), sym("pending")),
        (sym("unicode"), s("naïve ☃ \"quoted\" \\ \n tab\t")),
        (
            sym("raw"),
            Value::Str(Str::new(vec![0xff, 0x00, 0xfe, b'a'], Encoding::Binary)),
        ),
        (
            sym("latin1"),
            Value::Str(Str::new(vec![b'c', b'a', b'f', 0xe9], Encoding::Other(7))),
        ),
        (
            sym("context"),
            hash(vec![
                (s("customer"), s("c-1")),
                (
                    s("items"),
                    Value::Array(vec![Value::Int(1), s("two"), Value::Nil]),
                ),
                (s("nested"), hash(vec![(sym("deep"), Value::Float(1.5))])),
                (Value::Int(7), s("integer key")),
            ]),
        ),
        (s("string_key"), s("kept")),
        (sym("empty_list"), Value::Array(vec![])),
        (sym("empty_hash"), hash(vec![])),
    ])
}

pub fn rich_store() -> Backend {
    let b = Backend::new("test-host");
    event(
        &b,
        "task.started",
        task_key(42),
        rich_payload(),
        at(1_700_000_000, 1_000),
    );
    let step = |id: i64| {
        hash(vec![
            (sym("task_id"), Value::Int(42)),
            (sym("workflow_step_id"), Value::Int(id)),
        ])
    };
    event(
        &b,
        "step.before_handle",
        task_key(42),
        step(1),
        at(1_700_000_000, 1_100),
    );
    event(
        &b,
        "step.before_handle",
        task_key(42),
        step(2),
        at(1_700_000_000, 1_150),
    );
    let mut after = step(1);
    if let Value::Hash(p) = &mut after {
        p.push((sym("result"), s("ok")));
    }
    event(
        &b,
        "step.after_handle",
        task_key(42),
        after,
        at(1_700_000_000, 1_300),
    );
    event(
        &b,
        "step.after_retry",
        task_key(42),
        step(2),
        at(1_700_000_000, 1_350),
    );
    event(
        &b,
        "task.failed",
        task_key(42),
        hash(vec![
            (sym("task_id"), Value::Int(42)),
            (sym("error_message"), s("payment declined")),
        ]),
        at(1_700_000_000, 3_500),
    );
    event(
        &b,
        "workflow.viable_steps_discovered",
        KeySource::Fresh,
        hash(vec![(sym("count"), Value::Int(3))]),
        at(1_700_000_001, 4_000),
    );
    event(
        &b,
        "task.started",
        task_key(43),
        hash(vec![(sym("task_id"), Value::Int(43))]),
        at(1_700_000_002, 5_000),
    );
    b
}

/// Parses an export with the OTLP reference types, with no nesting limit.
pub fn parse(json: &[u8]) -> ExportTraceServiceRequest {
    let mut de = serde_json::Deserializer::from_slice(json);
    de.disable_recursion_limit();
    let req = serde::Deserialize::deserialize(&mut de).expect("export parses as OTLP");
    de.end().expect("nothing after the request");
    req
}

pub fn raw(json: &[u8]) -> Json {
    let mut de = serde_json::Deserializer::from_slice(json);
    de.disable_recursion_limit();
    serde::Deserialize::deserialize(&mut de).expect("export is JSON")
}

/// Every key and value of `input` is in `output` at the same place: the
/// reference parser ignores unknown and misspelled keys, so anything it did
/// not understand is missing after re-serialising.
pub fn assert_survives(input: &Json, output: &Json, path: &str) {
    match (input, output) {
        (Json::Object(i), Json::Object(o)) => {
            for (k, v) in i {
                let here = format!("{path}.{k}");
                let Some(ov) = o.get(k) else {
                    panic!("{here} was dropped by the OTLP parser (unknown or misspelled key)");
                };
                assert_survives(v, ov, &here);
            }
        }
        (Json::Array(i), Json::Array(o)) => {
            assert_eq!(i.len(), o.len(), "{path}: array length changed");
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                assert_survives(iv, ov, &format!("{path}[{n}]"));
            }
        }
        _ => assert_eq!(input, output, "{path}: value changed in the round trip"),
    }
}

/// Parses, re-serialises and checks the round trip and the structural rules
/// (ids, enums, times). Returns the parsed request.
pub fn validate(json: &[u8]) -> ExportTraceServiceRequest {
    let req = parse(json);
    let again = serde_json::to_value(&req).expect("re-serialises");
    assert_survives(&raw(json), &again, "$");
    for rs in &req.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                assert_eq!(span.trace_id.len(), 16, "traceId length");
                assert_eq!(span.span_id.len(), 8, "spanId length");
                assert!(span.trace_id.iter().any(|b| *b != 0), "traceId is zero");
                assert!(span.span_id.iter().any(|b| *b != 0), "spanId is zero");
                assert!(
                    span.parent_span_id.is_empty() || span.parent_span_id.len() == 8,
                    "parentSpanId length"
                );
                assert!(
                    (0..=5).contains(&span.kind),
                    "kind {} out of range",
                    span.kind
                );
                assert!(
                    span.end_time_unix_nano >= span.start_time_unix_nano,
                    "span {} ends before it starts",
                    span.name
                );
                assert!(span.start_time_unix_nano > 0, "start time set");
                if let Some(st) = &span.status {
                    assert!((0..=2).contains(&st.code), "status code {}", st.code);
                }
            }
        }
    }
    req
}

/// What the scripted collector answers, request after request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            content_type: "application/json".to_string(),
            body: b"{}".to_vec(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn body(mut self, b: &str) -> Reply {
        self.body = b.as_bytes().to_vec();
        self
    }

    pub fn bytes(mut self, content_type: &str, b: Vec<u8>) -> Reply {
        self.content_type = content_type.to_string();
        self.body = b;
        self
    }
}

/// A request the collector got: its body as sent, decompressed as its
/// Content-Encoding says, and decoded strictly with the OTLP reference types
/// as its Content-Type says (prost for protobuf, serde for JSON).
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body as it came (compressed, if it was).
    pub wire: Vec<u8>,
    /// The body decompressed.
    pub body: Vec<u8>,
    pub request: Result<ExportTraceServiceRequest, String>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded request (panics with the decoding error).
    pub fn request(&self) -> &ExportTraceServiceRequest {
        match &self.request {
            Ok(r) => r,
            Err(e) => panic!("the collector could not decode the request: {e}"),
        }
    }

    pub fn span_count(&self) -> usize {
        self.request()
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }
}

fn decode(
    headers: &[(String, String)],
    wire: &[u8],
) -> (Vec<u8>, Result<ExportTraceServiceRequest, String>) {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let body = match header("content-encoding") {
        None => wire.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            if let Err(e) = flate2::read::GzDecoder::new(wire).read_to_end(&mut out) {
                return (Vec::new(), Err(format!("bad gzip: {e}")));
            }
            out
        }
        Some(other) => return (Vec::new(), Err(format!("unknown Content-Encoding {other}"))),
    };
    let request = match header("content-type") {
        Some("application/x-protobuf") => {
            <ExportTraceServiceRequest as prost::Message>::decode(&body[..])
                .map_err(|e| format!("protobuf: {e}"))
        }
        Some("application/json") => serde_json::from_slice::<ExportTraceServiceRequest>(&body)
            .map_err(|e| format!("json: {e}")),
        other => Err(format!("unexpected Content-Type {other:?}")),
    };
    (body, request)
}

/// A collector on 127.0.0.1 that answers with `replies` in turn (the last one
/// repeats), one request per connection, and records what it got. It serves
/// at most `replies.len() + 8` connections and then stops by itself. With a
/// TLS configuration it speaks https.
pub struct Collector {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// TLS handshakes or requests that failed, with the error.
    pub failures: Arc<Mutex<Vec<String>>>,
    handle: Option<JoinHandle<()>>,
}

impl Collector {
    pub fn start(replies: Vec<Reply>) -> Collector {
        Collector::start_with(replies, None)
    }

    pub fn start_tls(replies: Vec<Reply>, tls: Arc<rustls::ServerConfig>) -> Collector {
        Collector::start_with(replies, Some(tls))
    }

    fn start_with(replies: Vec<Reply>, tls: Option<Arc<rustls::ServerConfig>>) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let failed = failures.clone();
        let limit = replies.len() + 8;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming().take(limit) {
                let Ok(stream) = conn else { continue };
                let served = log.lock().map(|l| l.len()).unwrap_or(0);
                let reply = replies[served.min(replies.len() - 1)].clone();
                let result = match &tls {
                    None => serve(stream, &reply, &log),
                    Some(config) => serve_tls(stream, config.clone(), &reply, &log),
                };
                if let Err(e) = result {
                    failed.lock().expect("failures").push(e.to_string());
                }
                if log.lock().map(|l| l.len()).unwrap_or(0) >= limit {
                    break;
                }
            }
        });
        Collector {
            url: format!("{scheme}://127.0.0.1:{port}/v1/traces"),
            received,
            failures,
            handle: Some(handle),
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().expect("failures").clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // The accept loop is bounded; it is left to end with the process.
        let _ = self.handle.take();
    }
}

fn serve(stream: TcpStream, reply: &Reply, log: &Mutex<Vec<Received>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream = stream;
    exchange(&mut stream, reply, log)
}

fn serve_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    reply: &Reply,
    log: &Mutex<Vec<Received>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let result = exchange(&mut tls, reply, log);
    if result.is_err() {
        // rustls has sent its alert; read what the client still sends until
        // it closes, so that closing here does not reset the connection
        // before the client has read the alert.
        let tcp = &mut tls.sock;
        let _ = tcp.shutdown(std::net::Shutdown::Write);
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
        let mut sink = [0u8; 4096];
        while matches!(tcp.read(&mut sink), Ok(n) if n > 0) {}
    } else {
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
    result
}

fn exchange<S: Read + Write>(
    stream: &mut S,
    reply: &Reply,
    log: &Mutex<Vec<Received>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut *stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut wire = vec![0u8; len];
    reader.read_exact(&mut wire)?;
    drop(reader);
    let (body, request) = decode(&headers, &wire);
    log.lock().expect("log").push(Received {
        at: Instant::now(),
        method,
        path,
        headers,
        wire,
        body,
        request,
    });
    std::thread::sleep(reply.delay);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes())?;
    stream.write_all(&reply.body)?;
    stream.flush()
}
