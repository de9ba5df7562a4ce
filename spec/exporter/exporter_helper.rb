# frozen_string_literal: true

require "json"
require "socket"
require_relative "../rails/subprocess_helper"

# Helpers for spec/exporter: an OTLP/HTTP receiver on 127.0.0.1 in a thread
# of the spec process, and child Ruby processes (fresh, with a deadline)
# whose exporter sends to it. Everything the exporter does runs in those
# children: the spec process itself keeps its exporter off.
module ExporterSpecHelper
  include SubprocessHelper

  # The exporter's settings.
  SETTINGS = %i[exporter export_schedule_delay export_max_batch_size export_timeout].freeze

  # What the receiver got: one entry per request.
  Request = Struct.new(:at, :headers, :body, :status, keyword_init: true) do
    def json
      @json ||= JSON.parse(body)
    end

    def resource_spans
      json.fetch("resourceSpans")
    end

    # [pid, span] for every span.
    def spans
      resource_spans.flat_map do |rs|
        pid = rs.dig("resource", "attributes").find { |a| a["key"] == "process.pid" }&.dig("value", "intValue")
        rs.fetch("scopeSpans").flat_map { |ss| ss.fetch("spans").map { |s| [pid.to_i, s] } }
      end
    end
  end

  # An OTLP/HTTP receiver. `mode`: :ok (200), :hang (accepts, reads, never
  # answers) or a list of replies ({status:, headers:}) used in turn, the last
  # repeating. `refuse!` closes the port (connections are refused) and
  # `accept!` opens it again on the same port. Bounded: at most
  # `max_connections` connections, each handled by its own thread. A reply
  # may carry a `body:` (default "{}"). Its
  # threads run at nice +10 unless `nice: false`: a collector does not share
  # the app's cores, and the GVL spec measures the app's throughput, not the
  # receiver's CPU.
  class Receiver
    attr_reader :port

    def initialize(mode = :ok, max_connections: 2_000, parse: true, nice: true)
      @mode = mode
      @nice = nice
      @parse = parse
      @max_connections = max_connections
      @lock = Mutex.new
      @requests = []
      @connections = 0
      @bytes = 0
      @threads = []
      @server = TCPServer.new("127.0.0.1", 0)
      @port = @server.addr[1]
      @acceptor = Thread.new { accept_loop(@server) }
    end

    def url
      "http://127.0.0.1:#{port}/v1/traces"
    end

    # Changes how the receiver answers from the next request on.
    def mode=(mode)
      @lock.synchronize { @mode = mode }
    end

    def requests
      @lock.synchronize { @requests.dup }
    end

    def connections
      @lock.synchronize { @connections }
    end

    def bytes
      @lock.synchronize { @bytes }
    end

    def refuse!
      @server.close
      @acceptor.join(2)
    end

    def accept!
      @server = TCPServer.new("127.0.0.1", @port)
      @acceptor = Thread.new { accept_loop(@server) }
    end

    # Every root span's trace key ("task_42"), with the pid that sent it, in
    # the requests answered with a 2xx (the ones delivered).
    def trace_keys
      requests.select { |r| (200..299).cover?(r.status) }.flat_map do |r|
        r.spans.filter_map do |pid, span|
          next if span["parentSpanId"].to_s != ""

          key = span.fetch("attributes", []).find { |a| a["key"] == "tasker.trace_key" }
          key && [key.dig("value", "stringValue"), pid]
        end
      end
    end

    def wait_for(seconds)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
      until yield
        return false if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

        sleep 0.02
      end
      true
    end

    def close
      @server.close unless @server.closed?
      @acceptor.join(2) || @acceptor.kill
      @threads.each { |t| t.join(0.5) || t.kill }
    end

    private

    # Lowers this thread's CPU priority (Linux: nice is per thread).
    def background
      return unless @nice

      Process.setpriority(Process::PRIO_PROCESS, Thread.current.native_thread_id, 10)
    rescue NoMethodError, SystemCallError
      nil
    end

    def accept_loop(server)
      background
      loop do
        socket = server.accept
        n = @lock.synchronize { @connections += 1 }
        if n > @max_connections
          socket.close
          next
        end
        @threads << Thread.new(socket) { |s| serve(s) }
      end
    rescue IOError, SystemCallError
      nil
    end

    def serve(socket)
      background
      loop do
        request_line = socket.gets
        break if request_line.nil?

        headers = {}
        while (line = socket.gets) && line != "\r\n"
          name, value = line.split(":", 2)
          headers[name.downcase] = value.to_s.strip
        end
        length = headers.fetch("content-length", "0").to_i
        body = socket.read(length).to_s
        # A short body: the client gave up mid-request (its timeout on a
        # loaded machine). Nothing was delivered; it will send again.
        break if body.bytesize < length

        reply = record(headers, body)
        if reply == :hang
          sleep 120
          break
        end
        respond(socket, reply)
        break if headers["connection"].to_s.casecmp?("close")
      end
    rescue IOError, SystemCallError
      nil
    ensure
      socket.close unless socket.closed?
    end

    def record(headers, body)
      @lock.synchronize do
        @bytes += body.bytesize
        at = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        reply = case @mode
                when :ok then { status: 200 }
                when :hang then :hang
                else @mode[[@requests.size, @mode.size - 1].min]
                end
        status = reply == :hang ? nil : reply[:status]
        @requests << Request.new(at: at, headers: headers, body: @parse ? body : "", status: status)
        reply
      end
    end

    def respond(socket, reply)
      extra = reply.fetch(:headers, {}).map { |k, v| "#{k}: #{v}\r\n" }.join
      body = reply.fetch(:body, "{}")
      socket.write("HTTP/1.1 #{reply[:status]} X\r\nContent-Type: application/json\r\n" \
                   "Content-Length: #{body.bytesize}\r\n#{extra}\r\n")
      socket.write(body)
    end
  end

  # The environment of a child whose exporter sends JSON, uncompressed, to
  # `receiver`, waking every `delay_ms`.
  def exporter_env(receiver, delay_ms: 200, extra: {})
    {
      "OTEL_TRACES_EXPORTER" => "otlp",
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => receiver.url,
      "OTEL_EXPORTER_OTLP_PROTOCOL" => "http/json",
      "OTEL_EXPORTER_OTLP_COMPRESSION" => "none",
      "OTEL_BSP_SCHEDULE_DELAY" => delay_ms.to_s,
      "OTEL_SDK_DISABLED" => nil,
      "OTEL_EXPORTER_OTLP_ENDPOINT" => nil,
      "OTEL_EXPORTER_OTLP_HEADERS" => nil,
      "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => nil,
      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" => nil,
      "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION" => nil,
      "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => nil,
      "OTEL_BSP_EXPORT_TIMEOUT" => nil,
      "TASKER_TRACE_NATIVE_TEST_HOOKS" => nil
    }.merge(extra)
  end

  # Ruby run first in every child: the gem, a backend and a lifecycle helper.
  CHILD_PRELUDE = <<~'RUBY'
    require "json"
    # Threads of this process named like the exporter's ("tasker-otlp-export",
    # cut to 15 characters by the kernel).
    def exporter_threads
      Dir.glob("/proc/self/task/*/comm").count { |f| File.read(f).start_with?("tasker-otlp") }
    rescue SystemCallError
      0
    end

    require "tasker_trace_native"
    $stdout.sync = true
    B = Tasker::Telemetry::TraceBackend.instance

    def lifecycle(id)
      B.handle_event("task.started", { task_id: id, task_name: "order" })
      B.handle_event("step.before_handle", { task_id: id, workflow_step_id: 1 })
      B.handle_event("step.after_handle", { task_id: id, workflow_step_id: 1 })
      B.handle_event("task.completed", { task_id: id })
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def report(**fields)
      puts JSON.generate(fields)
    end
  RUBY

  # Runs `script` (after the prelude) in a fresh Ruby process.
  def run_child(script, env:, timeout: 60)
    run_ruby(CHILD_PRELUDE + script, env: env, timeout: timeout)
  end

  # The child's JSON lines, parsed (Symbol keys).
  def reports(result)
    result.stdout.lines.select { |l| l.start_with?("{") }.map { |l| JSON.parse(l, symbolize_names: true) }
  end

  def expect_success(result)
    expect(result.status.success?).to be(true), result.describe
  end
end

RSpec.configure do |config|
  config.include ExporterSpecHelper, file_path: %r{spec/exporter/}
end
