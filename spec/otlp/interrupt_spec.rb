# frozen_string_literal: true

require "spec_helper"
require "socket"
require "timeout"
require "rbconfig"
require_relative "support/helpers"

# A receiver on 127.0.0.1 that accepts connections, reads what comes and
# never answers: a request to it ends only at its timeout, or when the push
# is interrupted.
class SilentReceiver
  def initialize
    @server = TCPServer.new("127.0.0.1", 0)
    @sockets = Queue.new
    @thread = Thread.new do
      16.times { @sockets << @server.accept }
    rescue IOError, SystemCallError
      nil
    end
  end

  def base_url
    "http://127.0.0.1:#{@server.addr[1]}"
  end

  def connections
    @sockets.size
  end

  def close
    @server.close
    @thread.join(2) || @thread.kill
    @sockets.close
    while (s = @sockets.pop(true))
      s.close
    end
  rescue ThreadError
    nil
  end
end

RSpec.describe "TraceBackend#push_otlp interrupted mid-request" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }

  def now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def fill(count)
    (1..count).each do |i|
      backend.handle_event("task.started", { task_id: i })
      backend.handle_event("task.completed", { task_id: i })
    end
  end

  def with_silent_receiver
    receiver = SilentReceiver.new
    yield receiver
  ensure
    receiver&.close
  end

  # What a later push to a working collector delivers: every trace, once.
  def expect_all_delivered_later(count)
    collector = OtlpSpecCollector.new({ status: 200 })
    result = backend.push_otlp(endpoint: collector.base_url, protocol: "http/json", timeout: 5)
    expect(result).to include(sent: count, status: 200, error: nil)
    expect(collector.requests.size).to eq(1)
    expect(collector.requests.first.span_count).to eq(count)
    expect(backend.traces).to be_empty
  ensure
    collector&.close
  end

  it "returns from Timeout within 0.5 s though the collector never answers; the traces are back", timeout: 20 do
    fill(3)
    with_silent_receiver do |receiver|
      started = now
      expect do
        Timeout.timeout(0.3) { backend.push_otlp(endpoint: receiver.base_url, timeout: 60) }
      end.to raise_error(Timeout::Error)
      expect(now - started).to be < 0.5
      expect(receiver.connections).to eq(1)
      expect(backend.traces.keys).to eq(%w[task_1 task_2 task_3])
    end
    expect_all_delivered_later(3)
  end

  it "returns from Thread#kill within 0.5 s; the traces are back", timeout: 20 do
    fill(4)
    with_silent_receiver do |receiver|
      pushing = Thread.new { backend.push_otlp(endpoint: receiver.base_url, timeout: 60) }
      sleep 0.05 until receiver.connections == 1 || !pushing.alive?
      sleep 0.1
      killed_at = now
      pushing.kill
      expect(pushing.join(5)).to eq(pushing)
      expect(now - killed_at).to be < 0.5
      expect(backend.traces.keys).to eq(%w[task_1 task_2 task_3 task_4])
    end
    expect_all_delivered_later(4)
  end

  it "returns from SIGINT (Interrupt in the main thread) within 0.5 s; the traces are back", timeout: 30 do
    receiver = SilentReceiver.new
    script = <<~RUBY
      require "tasker_trace_native"
      backend = Tasker::Telemetry::TraceBackend.instance
      5.times do |i|
        backend.handle_event("task.started", { task_id: i + 1 })
        backend.handle_event("task.completed", { task_id: i + 1 })
      end
      $stdout.puts "ready"
      $stdout.flush
      begin
        backend.push_otlp(endpoint: ARGV[0], timeout: 60)
        puts "not interrupted"
      rescue Interrupt
        puts "interrupted \#{backend.traces.size}"
      end
    RUBY
    lib = File.expand_path("../../lib", __dir__)
    IO.popen([RbConfig.ruby, "-I", lib, "-e", script, receiver.base_url], err: %i[child out]) do |io|
      expect(io.gets).to eq("ready\n")
      sleep 0.05 until receiver.connections == 1
      sleep 0.1
      interrupted_at = now
      Process.kill("INT", io.pid)
      expect(io.gets).to eq("interrupted 5\n")
      expect(now - interrupted_at).to be < 0.5
    end
  ensure
    receiver&.close
  end
end
