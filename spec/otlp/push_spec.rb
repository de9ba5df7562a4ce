# frozen_string_literal: true

require "spec_helper"
require "json"
require "socket"
require "timeout"

# A scripted OTLP/HTTP collector on 127.0.0.1, in a thread of this process:
# answers each request with the next reply (the last one repeats), one
# request per connection, and records what it got.
class OtlpSpecCollector
  Request = Struct.new(:method, :path, :headers, :body, :at, keyword_init: true) do
    def json
      JSON.parse(body)
    end

    def span_count
      json.fetch("resourceSpans").sum { |rs| rs.fetch("scopeSpans").sum { |ss| ss.fetch("spans").size } }
    end
  end

  def initialize(*replies)
    @replies = replies.empty? ? [{ status: 200 }] : replies
    @server = TCPServer.new("127.0.0.1", 0)
    @requests = []
    @lock = Mutex.new
    @thread = Thread.new { serve }
  end

  def port
    @server.addr[1]
  end

  def base_url
    "http://127.0.0.1:#{port}"
  end

  def requests
    @lock.synchronize { @requests.dup }
  end

  def close
    @server.close
    @thread.join(2) || @thread.kill
  end

  private

  def serve
    served = 0
    while served < 50
      socket = @server.accept
      reply = @replies[[served, @replies.size - 1].min]
      served += 1
      handle(socket, reply)
    end
  rescue IOError, SystemCallError
    nil
  end

  def handle(socket, reply)
    method, path = socket.gets.to_s.split
    headers = {}
    while (line = socket.gets) && line != "\r\n"
      name, value = line.split(":", 2)
      headers[name.downcase] = value.strip
    end
    body = socket.read(headers.fetch("content-length", "0").to_i)
    @lock.synchronize do
      @requests << Request.new(method: method, path: path, headers: headers, body: body,
                               at: Process.clock_gettime(Process::CLOCK_MONOTONIC))
    end
    sleep(reply[:delay]) if reply[:delay]
    text = reply.fetch(:body, "{}")
    extra = reply.fetch(:headers, {}).map { |k, v| "#{k}: #{v}\r\n" }.join
    socket.write("HTTP/1.1 #{reply[:status]} X\r\nContent-Type: application/json\r\n" \
                 "Content-Length: #{text.bytesize}\r\nConnection: close\r\n#{extra}\r\n#{text}")
  rescue IOError, SystemCallError
    nil
  ensure
    socket.close
  end
end

RSpec.describe "TraceBackend#push_otlp" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }
  let(:otel_variables) do
    %w[OTEL_EXPORTER_OTLP_TRACES_ENDPOINT OTEL_EXPORTER_OTLP_ENDPOINT
       OTEL_EXPORTER_OTLP_HEADERS OTEL_EXPORTER_OTLP_TRACES_HEADERS]
  end

  around do |example|
    saved = otel_variables.to_h { |k| [k, ENV.fetch(k, nil)] }
    otel_variables.each { |k| ENV.delete(k) }
    example.run
  ensure
    saved.each { |k, v| v ? ENV[k] = v : ENV.delete(k) }
  end

  def finished(id)
    backend.handle_event("task.started", { task_id: id, task_name: "order" })
    backend.handle_event("step.before_handle", { task_id: id, workflow_step_id: id })
    backend.handle_event("step.after_handle", { task_id: id, workflow_step_id: id })
    backend.handle_event("task.completed", { task_id: id })
  end

  def fill
    (1..3).each { |i| finished(i) }
    backend.handle_event("task.started", { task_id: 99 })
  end

  def with_collector(*replies)
    collector = OtlpSpecCollector.new(*replies)
    yield collector
  ensure
    collector&.close
  end

  it "POSTs the finished traces as JSON to <endpoint>/v1/traces and removes them" do
    fill
    with_collector({ status: 200 }) do |c|
      result = backend.push_otlp(endpoint: c.base_url, headers: { "x-tenant" => "acme", authorization: "Bearer t" })
      expect(result).to eq(sent: 3, status: 200, error: nil)
      expect(c.requests.size).to eq(1)
      request = c.requests.first
      expect(request.method).to eq("POST")
      expect(request.path).to eq("/v1/traces")
      expect(request.headers).to include("content-type" => "application/json", "x-tenant" => "acme",
                                         "authorization" => "Bearer t")
      expect(request.span_count).to eq(6)
      expect(backend.traces.keys).to eq(["task_99"])
    end
  end

  it "sends nothing when no trace is finished" do
    backend.handle_event("task.started", { task_id: 1 })
    with_collector({ status: 200 }) do |c|
      expect(backend.push_otlp(endpoint: c.base_url)).to eq(sent: 0, status: nil, error: nil)
      expect(c.requests).to be_empty
    end
  end

  it "retries a 503 with backoff and then succeeds" do
    fill
    with_collector({ status: 503 }, { status: 200 }) do |c|
      expect(backend.push_otlp(endpoint: c.base_url)).to eq(sent: 3, status: 200, error: nil)
      expect(c.requests.size).to eq(2)
      expect(c.requests.map(&:body).uniq.size).to eq(1)
      expect(backend.traces.keys).to eq(["task_99"])
    end
  end

  it "does not retry a 400 and keeps the traces" do
    fill
    before = backend.export_otlp
    with_collector({ status: 400, body: '{"message":"bad"}' }, { status: 200 }) do |c|
      result = backend.push_otlp(endpoint: c.base_url)
      expect(result).to include(sent: 0, status: 400)
      expect(result[:error]).to match(/HTTP 400.*bad/)
      sleep 0.3
      expect(c.requests.size).to eq(1)
    end
    expect(backend.traces.keys.sort).to eq(%w[task_1 task_2 task_3 task_99])
    expect(backend.export_otlp).to eq(before)
  end

  it "keeps the traces when the connection is refused" do
    fill
    port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
    result = backend.push_otlp(endpoint: "http://127.0.0.1:#{port}", timeout: 0.5)
    expect(result[:sent]).to eq(0)
    expect(result[:status]).to be_nil
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
      expect(result).to eq(sent: 3, status: 200, error: nil)
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
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 3
      expect(c.requests.size).to eq(1)
    end
    expect(backend.traces.keys.sort).to eq(%w[task_1 task_2 task_3 task_99])
  end

  describe "the endpoint and headers from OpenTelemetry's variables" do
    it "appends /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT and sends OTEL_EXPORTER_OTLP_HEADERS" do
      finished(1)
      with_collector({ status: 200 }) do |c|
        ENV["OTEL_EXPORTER_OTLP_ENDPOINT"] = "#{c.base_url}/"
        ENV["OTEL_EXPORTER_OTLP_HEADERS"] = "api-key=secret%20one,x-tenant=env"
        expect(backend.push_otlp(headers: { "X-Tenant" => "arg" })).to include(sent: 1, status: 200)
        request = c.requests.first
        expect(request.path).to eq("/v1/traces")
        expect(request.headers).to include("api-key" => "secret one", "x-tenant" => "arg")
      end
    end

    it "uses OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, over OTEL_EXPORTER_OTLP_ENDPOINT" do
      finished(1)
      with_collector({ status: 200 }) do |c|
        ENV["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:1"
        ENV["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "#{c.base_url}/custom/traces"
        expect(backend.push_otlp).to include(sent: 1)
        expect(c.requests.first.path).to eq("/custom/traces")
      end
    end

    it "raises ArgumentError naming a malformed variable, before draining" do
      finished(1)
      ENV["OTEL_EXPORTER_OTLP_HEADERS"] = "no-equals-sign"
      expect { backend.push_otlp(endpoint: "http://127.0.0.1:1") }
        .to raise_error(ArgumentError, /OTEL_EXPORTER_OTLP_HEADERS/)
      ENV.delete("OTEL_EXPORTER_OTLP_HEADERS")
      ENV["OTEL_EXPORTER_OTLP_ENDPOINT"] = "collector:4318"
      expect { backend.push_otlp }.to raise_error(ArgumentError, /OTEL_EXPORTER_OTLP_ENDPOINT/)
      expect(backend.traces.keys).to eq(["task_1"])
    end
  end

  describe "arguments" do
    before { finished(1) }

    after { expect(backend.traces.keys).to eq(["task_1"]) }

    [5, :sym, ["http://x"]].each do |bad|
      it "refuses endpoint: #{bad.inspect} with an ArgumentError naming endpoint" do
        expect { backend.push_otlp(endpoint: bad) }.to raise_error(ArgumentError, /endpoint/)
      end
    end

    it "refuses an endpoint that is not http:// or https://, naming endpoint" do
      expect { backend.push_otlp(endpoint: "ftp://collector:4318") }.to raise_error(ArgumentError, /endpoint/)
    end

    it "takes an https endpoint (TLS is built in): a closed port is a failed push, not an ArgumentError" do
      result = backend.push_otlp(endpoint: "https://127.0.0.1:9", timeout: 0.3)
      expect(result).to include(sent: 0, status: nil)
      expect(result[:error]).to include("127.0.0.1:9")
    end

    [nil, "k=v", [%w[a b]], { "bad name" => "v" }, { "x" => 1 }, { "x" => "a\r\nb" }].each do |bad|
      it "refuses headers: #{bad.inspect} with an ArgumentError naming headers" do
        expect { backend.push_otlp(endpoint: "http://127.0.0.1:1", headers: bad) }
          .to raise_error(ArgumentError, /headers/)
      end
    end

    [0, -1, "10", nil, Float::NAN, Float::INFINITY, 10**30, 100_000].each do |bad|
      it "refuses timeout: #{bad.inspect} with an ArgumentError naming timeout" do
        expect { backend.push_otlp(endpoint: "http://127.0.0.1:1", timeout: bad) }
          .to raise_error(ArgumentError, /timeout/)
      end
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
