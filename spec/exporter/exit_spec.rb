# frozen_string_literal: true

require "spec_helper"
require_relative "exporter_helper"

RSpec.describe "Background exporter: exit" do
  let(:receiver) { ExporterSpecHelper::Receiver.new }

  after { receiver.close }

  it "delivers 1,000 traces still waiting at exit through the at_exit shutdown (60 s schedule delay)" do
    env = exporter_env(receiver, delay_ms: 60_000, extra: { "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => "1000000" })
    result = run_child(<<~'RUBY', env: env)
      1_000.times { |i| lifecycle(i + 1) }
      report(queued: TaskerTraceNative.exporter_stats[:queued])
    RUBY
    expect_success(result)
    expect(reports(result).last[:queued]).to eq(1_000)
    keys = receiver.trace_keys.map(&:first)
    expect(keys.size).to eq(1_000)
    expect(keys.uniq.size).to eq(1_000)
    expect(result.stderr).to eq("")
  end

  it "loses what waits when the process leaves through exit! (no at_exit), unless it flushed first" do
    result = run_child(<<~'RUBY', env: exporter_env(receiver, delay_ms: 60_000))
      10.times { |i| lifecycle(i + 1) }
      exit!(0)
    RUBY
    expect_success(result)
    expect(receiver.trace_keys).to be_empty

    result = run_child(<<~'RUBY', env: exporter_env(receiver, delay_ms: 60_000))
      10.times { |i| lifecycle(i + 1) }
      report(flushed: TaskerTraceNative.flush)
      exit!(0)
    RUBY
    expect_success(result)
    expect(reports(result).last[:flushed]).to eq(sent: 10, failed: 0, error: nil)
    expect(receiver.trace_keys.size).to eq(10)
  end

  it "stops for good after shutdown: later traces wait in the store" do
    result = run_child(<<~'RUBY', env: exporter_env(receiver, delay_ms: 50))
      lifecycle(1)
      first = TaskerTraceNative.shutdown(timeout: 5)
      lifecycle(2)
      sleep 0.3
      report(first: first, again: TaskerTraceNative.flush(timeout: 1), threads: exporter_threads,
             stats: TaskerTraceNative.exporter_stats.slice(:running, :queued))
    RUBY
    expect_success(result)
    out = reports(result).last
    expect(out[:first]).to eq(sent: 1, failed: 0, error: nil)
    expect(out[:again]).to eq(sent: 0, failed: 0, error: "the exporter was shut down")
    expect(out[:stats]).to eq(running: false, queued: 1)
    expect(out[:threads]).to eq(0)
    expect(receiver.trace_keys.map(&:first)).to eq(["task_1"])
  end
end
