# frozen_string_literal: true

require "spec_helper"
require_relative "exporter_helper"
require "fileutils"
require "tmpdir"

RSpec.describe "Background exporter: faults" do
  after { @receiver&.close }

  def receiver(*args, **kwargs)
    @receiver ||= ExporterSpecHelper::Receiver.new(*args, **kwargs)
  end

  # The child records `traces` lifecycles while the receiver refuses
  # connections, waits until an export has failed, reports, and touches a
  # file; the receiver then accepts again, and the child waits until
  # `expected` traces went out. Deadlines, no fixed waits: on a loaded
  # machine the exporter (at nice 19) may take seconds to get a CPU.
  def record_while_down(traces:, max_traces:, expected:)
    receiver.refuse!
    dir = Dir.mktmpdir("faults")
    down = File.join(dir, "down")
    reopen = Thread.new do
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 90
      sleep 0.02 until File.exist?(down) || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      receiver.accept!
    end
    # A 5 s budget per export: short enough that a refused export fails
    # within the child's deadline, long enough that a delivery on a loaded
    # machine is not cut off mid-request (and sent twice).
    env = exporter_env(receiver, delay_ms: 200, extra: { "OTEL_BSP_EXPORT_TIMEOUT" => "5000" })
    result = run_child(<<~RUBY, env: env, timeout: 180)
      TaskerTraceNative.configure { |c| c.max_traces = #{max_traces} }
      #{traces}.times { |i| lifecycle(i + 1) }
      deadline = now + 60
      sleep 0.02 until TaskerTraceNative.exporter_stats[:failed_exports] >= 1 || now > deadline
      report(down: TaskerTraceNative.exporter_stats.slice(:failed_exports, :queued, :exported_traces))
      File.write(#{down.inspect}, "")
      deadline = now + 60
      sleep 0.05 until TaskerTraceNative.exporter_stats[:exported_traces] >= #{expected} || now > deadline
      report(up: TaskerTraceNative.exporter_stats.slice(:queued, :exported_traces, :dropped_traces,
                                                         :failed_exports, :last_error))
      exit!(0)
    RUBY
    reopen.join
    expect_success(result)
    reports(result).to_h { |r| [r.keys.first, r.values.first] }
  ensure
    FileUtils.rm_rf(dir) if dir
  end

  it "keeps everything within max_traces in the store while the collector refuses, and sends it after" do
    out = record_while_down(traces: 300, max_traces: 1_000, expected: 300)
    # (What an export holds while it tries is not in the store: `queued` may
    # be lower for that moment.)
    expect(out[:down][:failed_exports]).to be >= 1
    expect(out[:down]).to include(exported_traces: 0)
    expect(out[:down][:queued]).to be <= 300
    expect(out[:up]).to include(queued: 0, exported_traces: 300, dropped_traces: 0)
    expect(out[:up][:last_error]).to match(/127\.0\.0\.1|connect|refused/i)
    keys = receiver.trace_keys.map(&:first)
    expect(keys.sort).to eq((1..300).map { |i| "task_#{i}" }.sort)
  end

  it "evicts the oldest beyond max_traces while waiting, and counts them" do
    out = record_while_down(traces: 800, max_traces: 500, expected: 500)
    expect(out[:down]).to include(exported_traces: 0)
    expect(out[:down][:queued]).to be <= 500
    expect(out[:up]).to include(queued: 0, exported_traces: 500, dropped_traces: 300)
    keys = receiver.trace_keys.map(&:first)
    expect(keys.size).to eq(500)
    expect(keys.uniq.size).to eq(500)
    # Which 500: an export put back goes to the end of the store's order, so
    # what the first failed exports drained outlives what was never tried.
    expect(keys - (1..800).map { |i| "task_#{i}" }).to be_empty
  end

  it "lets the process exit after the shutdown timeout when the collector never answers" do
    receiver(:hang)
    # Request and export budgets of two minutes: only the at-exit timeout
    # (5 s) can end the wait, so the upper bound can be wide (a loaded
    # machine added 1.2 s) and still tell the two apart.
    env = exporter_env(receiver, delay_ms: 60_000,
                                 extra: { "OTEL_EXPORTER_OTLP_TIMEOUT" => "120000", "OTEL_BSP_EXPORT_TIMEOUT" => "120000" })
    result = run_child(<<~'RUBY', env: env, timeout: 100)
      10.times { |i| lifecycle(i + 1) }
      report(script_end: now)
    RUBY
    exited = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    expect_success(result)
    script_end = reports(result).last[:script_end]
    expect(receiver.connections).to be >= 1
    expect(exited - script_end).to be_between(TaskerTraceNative::Exporter::AT_EXIT_TIMEOUT - 0.5,
                                              TaskerTraceNative::Exporter::AT_EXIT_TIMEOUT + 30)
    expect(result.stderr).to match(/(10 )?traces not exported at exit, lost with the process: timed out/)
    expect(result.stderr).not_to include("waits in the store")
  end

  it "waits what a 503's Retry-After asks, then delivers" do
    receiver([{ status: 503, headers: { "Retry-After" => "1" } }, { status: 200 }])
    result = run_child(<<~'RUBY', env: exporter_env(receiver, delay_ms: 60_000))
      5.times { |i| lifecycle(i + 1) }
      flushed = TaskerTraceNative.flush(timeout: 10)
      report(flushed: flushed, stats: TaskerTraceNative.exporter_stats.slice(:exports, :failed_exports, :retries))
    RUBY
    expect_success(result)
    out = reports(result).last
    expect(out[:flushed]).to eq(sent: 5, failed: 0, error: nil)
    expect(out[:stats]).to eq(exports: 1, failed_exports: 0, retries: 1)
    first, second = receiver.requests
    expect(second.at - first.at).to be >= 0.95
    expect(receiver.trace_keys.size).to eq(5)
  end

  it "starts no thread and opens no connection with OTEL_SDK_DISABLED=true, whatever else says" do
    env = exporter_env(receiver, delay_ms: 20, extra: { "OTEL_SDK_DISABLED" => "true" })
    result = run_child(<<~'RUBY', env: env)
      TaskerTraceNative.configure { |c| c.exporter = :otlp }
      200.times { |i| lifecycle(i + 1) }
      flushed = TaskerTraceNative.flush(timeout: 1)
      sleep 0.3
      report(threads: exporter_threads, flushed: flushed, config: TaskerTraceNative.config.exporter,
             stats: TaskerTraceNative.exporter_stats.slice(:enabled, :running, :exports), stored: B.export[:traces].size)
    RUBY
    expect_success(result)
    out = reports(result).last
    expect(out[:threads]).to eq(0)
    expect(out).to include(flushed: { sent: 0, failed: 0, error: nil }, config: "otlp", stored: 200)
    expect(out[:stats]).to eq(enabled: false, running: false, exports: 0)
    expect(receiver.connections).to eq(0)
  end
end
