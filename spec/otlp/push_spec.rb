# frozen_string_literal: true

require "spec_helper"
require "json"
require "socket"
require "timeout"
require "zlib"
require_relative "support/helpers"

RSpec.describe "TraceBackend#push_otlp" do
  include OtlpSpecHelpers

  let(:backend) { Tasker::Telemetry::TraceBackend.instance }

  def fill
    (1..3).each { |i| finished(i) }
    backend.handle_event("task.started", { task_id: 99 })
  end

  def json_push(**args)
    backend.push_otlp(protocol: "http/json", **args)
  end

  it "POSTs the finished traces as gzipped protobuf to <endpoint>/v1/traces by default and removes them" do
    fill
    with_collector({ status: 200 }) do |c|
      result = backend.push_otlp(endpoint: c.base_url, headers: { "x-tenant" => "acme", authorization: "Bearer t" })
      expect(result).to eq(sent: 3, status: 200, error: nil, rejected: 0)
      expect(c.requests.size).to eq(1)
      request = c.requests.first
      expect(request.method).to eq("POST")
      expect(request.path).to eq("/v1/traces")
      expect(request.headers).to include("content-type" => "application/x-protobuf", "content-encoding" => "gzip",
                                         "x-tenant" => "acme", "authorization" => "Bearer t",
                                         "user-agent" => "tasker_trace_native/#{TaskerTraceNative::VERSION}")
      expect(request.headers.fetch("content-length").to_i).to eq(request.raw_body.bytesize)
      # The body gunzips to an ExportTraceServiceRequest (decoded strictly by
      # the cargo tests): it carries each trace's key.
      body = request.body
      expect(body.bytesize).to be > request.raw_body.bytesize
      expect(%w[task_1 task_2 task_3].map { |k| body.include?(k) }).to eq([true, true, true])
      expect(body).not_to include("task_99")
      expect(backend.traces.keys).to eq(["task_99"])
    end
  end

  it "sends the same spans as http/json, larger than protobuf" do
    fill
    with_collector({ status: 200 }) do |c|
      expect(backend.push_otlp(endpoint: c.base_url, headers: { "x-tenant" => "one" })).to include(sent: 3)
      backend.reset!
      fill
      expect(json_push(endpoint: c.base_url)).to include(sent: 3)
      protobuf, json = c.requests
      expect(json.headers).to include("content-type" => "application/json", "content-encoding" => "gzip")
      expect(json.span_count).to eq(6)
      keys = json.json["resourceSpans"].flat_map { |rs| rs["scopeSpans"] }.flat_map { |ss| ss["spans"] }
                 .filter_map { |s| s["attributes"].find { |a| a["key"] == "tasker.trace_key" } }
                 .map { |a| a["value"]["stringValue"] }
      expect(keys).to eq(%w[task_1 task_2 task_3])
      expect(protobuf.body.bytesize).to be < json.body.bytesize / 2
    end
  end

  it "sends nothing when no trace is finished" do
    backend.handle_event("task.started", { task_id: 1 })
    with_collector({ status: 200 }) do |c|
      expect(backend.push_otlp(endpoint: c.base_url)).to eq(sent: 0, status: nil, error: nil, rejected: 0)
      expect(c.requests).to be_empty
    end
  end

  it "retries a 503 with backoff and then succeeds" do
    fill
    with_collector({ status: 503 }, { status: 200 }) do |c|
      expect(json_push(endpoint: c.base_url)).to eq(sent: 3, status: 200, error: nil, rejected: 0)
      expect(c.requests.size).to eq(2)
      expect(c.requests.map(&:body).uniq.size).to eq(1)
      expect(backend.traces.keys).to eq(["task_99"])
    end
  end

  it "does not retry a 400, and what it refused is rejected for good: reported, not sent again" do
    fill
    with_collector({ status: 400, body: '{"message":"bad"}' }, { status: 200 }) do |c|
      result = json_push(endpoint: c.base_url)
      expect(result).to include(sent: 0, status: 400, rejected: 6)
      expect(result[:error]).to match(/\Acollector rejected 6 span\(s\): HTTP 400.*bad .*not sent again/)
      sleep 0.3
      expect(c.requests.size).to eq(1)
    end
    expect(backend.traces.keys).to eq(["task_99"])
  end

  it "keeps the traces a 500 did not deliver, for the next push" do
    fill
    before = backend.export_otlp
    with_collector({ status: 500, body: '{"message":"down"}' }, { status: 200 }) do |c|
      result = json_push(endpoint: c.base_url)
      expect(result).to include(sent: 0, status: 500, rejected: 0)
      expect(result[:error]).to match(/HTTP 500.*down/)
      sleep 0.3
      expect(c.requests.size).to eq(1)
    end
    expect(backend.traces.keys.sort).to eq(%w[task_1 task_2 task_3 task_99])
    expect(backend.export_otlp).to eq(before)
  end

  it "reports a partial success: delivered, the rejected spans counted, the message in error, not retried" do
    fill
    reply = { status: 200, body: '{"partialSuccess":{"rejectedSpans":"2","errorMessage":"spans too old"}}' }
    with_collector(reply) do |c|
      result = json_push(endpoint: c.base_url)
      expect(result).to include(sent: 3, status: 200, rejected: 2)
      expect(result[:error]).to eq("collector rejected 2 span(s): spans too old")
      sleep 0.2
      expect(c.requests.size).to eq(1)
    end
    expect(backend.traces.keys).to eq(["task_99"])
  end

  it "over 16 MiB, splits the push; when a later request fails it reports what was delivered", timeout: 60 do
    big = "x" * 7_000_000
    (1..3).each { |i| finished(i, blob: big) }
    configure_otlp(compression: "none")
    # No value length limit: each blob goes out whole (restored below).
    TaskerTraceNative.configure { |c| c.attribute_value_length_limit = nil }
    with_collector({ status: 200 }, { status: 500, body: '{"message":"no more"}' }) do |c|
      result = backend.push_otlp(endpoint: c.base_url)
      sizes = c.requests.map { |r| r.raw_body.bytesize }
      expect(sizes.size).to eq(2)
      expect(sizes).to all(be <= 16 * 1024 * 1024)
      expect(result).to include(sent: 2, status: 500, rejected: 0)
      expect(result[:error]).to match(/\Arequest 2 of 2: HTTP 500 .*no more/)
    end
    expect(backend.traces.keys).to eq(["task_3"])
  ensure
    TaskerTraceNative.configure { |c| c.attribute_value_length_limit = 8192 }
  end

  it "keeps the traces when the connection is refused" do
    fill
    port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
    result = backend.push_otlp(endpoint: "http://127.0.0.1:#{port}", timeout: 0.5)
    expect(result).to include(sent: 0, status: nil)
    expect(result[:error]).to match(/refused|connect/i)
    expect(backend.traces.keys.sort).to eq(%w[task_1 task_2 task_3 task_99])
  end

  it "waits for a slow collector with the GVL released: other Ruby threads keep running", timeout: 30 do
    fill
    ticks = []
    ticker = Thread.new do
      loop do
        ticks << Process.clock_gettime(Process::CLOCK_MONOTONIC)
        sleep 0.005
      end
    end
    sleep 0.05
    with_collector({ status: 200, delay: 1.0 }) do |c|
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      result = backend.push_otlp(endpoint: c.base_url, timeout: 10)
      finished = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      expect(result).to eq(sent: 3, status: 200, error: nil, rejected: 0)
      expect(finished - started).to be >= 1.0
      # The collector thread (in this process) answered, and the ticker ran
      # throughout: with the GVL held neither could have run at all.
      during = ticks.count { |t| t > started + 0.1 && t < finished - 0.1 }
      expect(during).to be >= 20
    end
  ensure
    ticker&.kill
  end

  it "can be interrupted (Timeout) during a retry wait, and keeps the traces", timeout: 30 do
    fill
    with_collector({ status: 503, headers: { "Retry-After" => "5" } }) do |c|
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      expect do
        Timeout.timeout(0.5) { backend.push_otlp(endpoint: c.base_url, timeout: 20) }
      end.to raise_error(Timeout::Error)
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 1
      expect(c.requests.size).to eq(1)
    end
    expect(backend.traces.keys.sort).to eq(%w[task_1 task_2 task_3 task_99])
  end

  describe "the otlp_* settings" do
    it "sends where and how they say; arguments win, headers: are added on top" do
      with_collector({ status: 200 }) do |c|
        configure_otlp(endpoint: "#{c.base_url}/", headers: { "x-tenant" => "setting", "api-key" => "k" },
                       protocol: "http/json", compression: "none")
        finished(1)
        expect(backend.push_otlp).to include(sent: 1, status: 200)
        finished(2)
        expect(backend.push_otlp(headers: { "X-Tenant" => "argument" }, protocol: :"http/protobuf"))
          .to include(sent: 1)
        plain, overridden = c.requests
        expect(plain.path).to eq("/v1/traces")
        expect(plain.headers).to include("content-type" => "application/json", "x-tenant" => "setting",
                                         "api-key" => "k")
        expect(plain.headers).not_to have_key("content-encoding")
        expect(plain.span_count).to eq(2)
        expect(overridden.headers).to include("content-type" => "application/x-protobuf", "x-tenant" => "argument",
                                              "api-key" => "k")
      end
    end

    it "appends /v1/traces to an endpoint's path, before its query" do
      with_collector({ status: 200 }) do |c|
        configure_otlp(endpoint: "#{c.base_url}/base/?tenant=a")
        finished(1)
        expect(backend.push_otlp).to include(sent: 1)
        finished(2)
        expect(backend.push_otlp(endpoint: "#{c.base_url}?tenant=b#frag")).to include(sent: 1)
        expect(c.requests.map(&:path)).to eq(["/base/v1/traces?tenant=a", "/v1/traces?tenant=b"])
      end
    end

    it "takes an endpoint already ending in /v1/traces as is" do
      with_collector({ status: 200 }) do |c|
        configure_otlp(endpoint: "#{c.base_url}/v1/traces")
        finished(1)
        expect(backend.push_otlp).to include(sent: 1)
        expect(c.requests.first.path).to eq("/v1/traces")
      end
    end

    it "gives up within otlp_timeout (seconds) when the collector is slow" do
      configure_otlp(timeout: 0.3)
      finished(1)
      with_collector({ status: 200, delay: 1 }) do |c|
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        result = backend.push_otlp(endpoint: c.base_url)
        expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 1.5
        expect(result).to include(sent: 0, status: nil)
        expect(result[:error]).to match(/time/i)
      end
      expect(backend.traces.keys).to eq(["task_1"])
    end

    it "reuses one client (one kept-alive connection) across pushes until a setting changes" do
      with_collector({ status: 200 }, keep_alive: true) do |c|
        configure_otlp(endpoint: c.base_url)
        3.times do |i|
          finished(i + 1)
          expect(backend.push_otlp).to include(sent: 1)
        end
        expect(c.requests.map(&:connection)).to eq([1, 1, 1])
        configure_otlp(headers: { "x-changed" => "1" })
        finished(9)
        expect(backend.push_otlp).to include(sent: 1)
        expect(c.requests.last.connection).to eq(2)
        expect(c.requests.last.headers).to include("x-changed" => "1")
      end
    end

    it "gives a forked child a client of its own: it never writes on the parent's kept-alive connection",
       timeout: 30 do
      with_collector({ status: 200 }, keep_alive: true) do |c|
        configure_otlp(endpoint: c.base_url, protocol: "http/json")
        finished(1)
        expect(backend.push_otlp).to include(sent: 1)
        pid = fork do
          finished(2)
          exit!(backend.push_otlp[:sent] == 1 ? 0 : 1)
        end
        _, status = Process.wait2(pid)
        expect(status.exitstatus).to eq(0)
        finished(3)
        expect(backend.push_otlp).to include(sent: 1)
        expect(c.requests.map { |r| [r.connection, r.span_count] }).to eq([[1, 2], [2, 2], [1, 2]])
      end
    end

    it "reports an unreadable certificate file as a failed push, before draining" do
      ca = OtlpTestCa.new
      configure_otlp(certificate: ca.ca_file)
      ca.remove
      finished(1)
      result = backend.push_otlp(endpoint: "https://127.0.0.1:1")
      expect(result).to include(sent: 0, status: nil)
      expect(result[:error]).to include(ca.ca_file)
      expect(backend.traces.keys).to eq(["task_1"])
    end
  end

  describe "arguments" do
    before { finished(1) }

    after { expect(backend.traces.keys).to eq(["task_1"]) }

    [5, :sym, ["http://x"], "", "ftp://collector:4318", "http://", "collector:4318"].each do |bad|
      it "refuses endpoint: #{bad.inspect} with an ArgumentError naming endpoint" do
        expect { backend.push_otlp(endpoint: bad) }.to raise_error(ArgumentError, /\Aendpoint must be/)
      end
    end

    it "takes an https endpoint (TLS is built in): a closed port is a failed push, not an ArgumentError" do
      result = backend.push_otlp(endpoint: "https://127.0.0.1:9", timeout: 0.3)
      expect(result).to include(sent: 0, status: nil)
      expect(result[:error]).to include("127.0.0.1:9")
    end

    [nil, "k=v", [%w[a b]], { "bad name" => "v" }, { "x" => 1 }, { "x" => "a\r\nb" }, { "" => "v" },
     { "x" => "\xFF".b }, { "x-tenant" => "acme\x01" }, { "x-tenant" => "acme\x7F" }].each do |bad|
      it "refuses headers: #{bad.inspect} with an ArgumentError naming headers" do
        expect { backend.push_otlp(endpoint: "http://127.0.0.1:1", headers: bad) }
          .to raise_error(ArgumentError, /\Aheaders must be/)
      end
    end

    [0, -1, "10", Float::NAN, Float::INFINITY, 10**30, 100_000, 86_400.5, 1e-12, Object.new].each do |bad|
      it "refuses timeout: #{bad.inspect} with an ArgumentError naming timeout" do
        expect { backend.push_otlp(endpoint: "http://127.0.0.1:1", timeout: bad) }
          .to raise_error(ArgumentError, /\Atimeout must be a positive number of seconds, at most 86400/)
      end
    end

    [5, "", "http", "HTTP/2", "x" * 100_000, [], :grpc].each do |bad|
      it "refuses protocol: #{bad.inspect[0, 40]} with an ArgumentError naming protocol" do
        expect { backend.push_otlp(endpoint: "http://127.0.0.1:1", protocol: bad) }
          .to raise_error(ArgumentError, /\Aprotocol must be "http\/protobuf" or "http\/json"/)
      end
    end

    it "refuses grpc, saying to use port 4318 with http/protobuf" do
      expect { backend.push_otlp(endpoint: "http://127.0.0.1:1", protocol: "grpc") }
        .to raise_error(ArgumentError, /grpc.*4318.*http\/protobuf/)
    end

    it "takes a huge header value and many headers (a failed push, nothing lost)" do
      headers = (1..2_000).to_h { |i| ["x-h#{i}", "v" * 100] }.merge("x-big" => "v" * 100_000)
      port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
      result = backend.push_otlp(endpoint: "http://127.0.0.1:#{port}", headers: headers, timeout: 0.3)
      expect(result).to include(sent: 0, status: nil)
    end
  end

  it "turns a Rust panic into TaskerTraceNative::Error and loses nothing" do
    finished(1)
    TaskerTraceNative::TestHooks.panic_next_call!
    expect { backend.push_otlp(endpoint: "http://127.0.0.1:1", timeout: 0.2) }
      .to raise_error(TaskerTraceNative::Error, /internal error/)
    expect(backend.traces.keys).to eq(["task_1"])
  end
end
