# frozen_string_literal: true

require "spec_helper"
require_relative "exporter_helper"

# The background exporter against collectors that fail, answer too much, or
# are healthy but slower than the app: what is acknowledged is never sent
# twice, failures back off, and settling never turns into drops.
RSpec.describe "Background exporter: failing and overwhelmed collectors" do
  after { @receiver&.close }

  def receiver(*args, **kwargs)
    @receiver ||= ExporterSpecHelper::Receiver.new(*args, **kwargs)
  end

  # A lifecycle run as the engine's worker publishes it: the transition into
  # in_progress, one step attempt, the two task.completed copies.
  RUN_PRELUDE = <<~'RUBY'
    def run(id)
      rec = ->(name, payload) { TaskerTraceNative::Native.record_lifecycle_event(name, payload) }
      rec.("task.before_transition", { task_id: id, from_state: nil, to_state: "in_progress" })
      rec.("task.start_requested", { task_id: id, task_name: "order", from_state: nil, to_state: "in_progress" })
      rec.("step.before_handle", { task_id: id, step_id: id * 10, step_name: "charge", attempt_number: 0 })
      rec.("step.completed", { task_id: id, step_id: id * 10, step_name: "charge", attempt_number: 1 })
      rec.("task.completed", { task_id: id, task_name: "order", from_state: nil, to_state: "complete" })
      rec.("task.completed", { task_id: id, task_name: "order", total_steps: 1, completed_steps: 1 })
    end
  RUBY

  # `under_usr1 { ... }`: runs the block while this process gets USR1 every
  # 0.2 s, with a trap handler that raises nothing (as a Puma or Sidekiq
  # worker gets TTIN or USR1 for a thread dump): each signal wakes a thread
  # waiting without the GVL. Returns the block's value, the seconds it took
  # and how many signals were trapped.
  SIGNALS_PRELUDE = <<~'RUBY'
    def under_usr1
      trapped = 0
      trap("USR1") { trapped += 1 }
      waiting = true
      signals = Thread.new do
        while waiting
          sleep 0.2
          Process.kill(:USR1, Process.pid) if waiting
        end
      end
      started = now
      value = yield
      [value, now - started, trapped]
    ensure
      waiting = false
      signals&.join
    end
  RUBY

  # Root spans' task ids in the requests answered with a 2xx.
  def delivered_task_ids
    receiver.requests.select { |r| (200..299).cover?(r.status) }.flat_map do |r|
      r.spans.filter_map do |_pid, span|
        next unless span["parentSpanId"].to_s.empty?

        id = span.fetch("attributes", []).find { |a| a["key"].end_with?(".task_id") }
        id && id.dig("value", "intValue").to_i
      end
    end
  end

  it "counts a 2xx with a body over the response limit as delivered, and never sends those runs again" do
    big = "x" * (50 * 1024 * 1024)
    receiver([{ status: 200, body: big }])
    result = run_child(RUN_PRELUDE + <<~'RUBY', env: exporter_env(receiver, delay_ms: 100))
      (1..10).each { |i| run(i) }
      deadline = now + 30
      sleep 0.05 until TaskerTraceNative.exporter_stats[:exported_traces] >= 10 || now > deadline
      sleep 1.5 # several schedule delays in which nothing may be sent again
      report(stats: TaskerTraceNative.exporter_stats.slice(:exported_traces, :failed_exports, :queued, :last_error))
      exit!(0)
    RUBY
    expect_success(result)
    stats = reports(result).last[:stats]
    expect(stats).to include(exported_traces: 10, failed_exports: 0, queued: 0)
    expect(stats[:last_error].to_s).to match(/response|body|limit/i)
    ids = delivered_task_ids
    expect(ids.sort).to eq((1..10).to_a)
  end

  it "drops what a collector refuses with a 400, counts it, and goes on with what comes after" do
    receiver([{ status: 400, body: '{"message":"bad trace"}' }, { status: 200 }])
    result = run_child(RUN_PRELUDE + <<~'RUBY', env: exporter_env(receiver, delay_ms: 100))
      run(1)
      deadline = now + 30
      sleep 0.02 until TaskerTraceNative.exporter_stats[:rejected_traces] >= 1 || now > deadline
      (2..6).each { |i| run(i) }
      sleep 0.05 until TaskerTraceNative.exporter_stats[:exported_traces] >= 5 || now > deadline
      sleep 1 # several schedule delays in which nothing may be sent again
      report(stats: TaskerTraceNative.exporter_stats.slice(:exported_traces, :rejected_traces, :rejected_spans,
                                                           :failed_exports, :queued, :last_error))
      exit!(0)
    RUBY
    expect_success(result)
    stats = reports(result).last[:stats]
    expect(stats).to include(exported_traces: 5, rejected_traces: 1, rejected_spans: 2, failed_exports: 0, queued: 0)
    expect(stats[:last_error].to_s).to include("bad trace")
    expect(receiver.requests.count { |r| r.status == 400 }).to eq(1)
    expect(delivered_task_ids.sort).to eq((2..6).to_a)
  end

  it "waits what a Retry-After asks before the next attempt, longer than its backoff" do
    receiver([{ status: 503, headers: { "Retry-After" => "120" } }])
    result = run_child(RUN_PRELUDE + <<~'RUBY', env: exporter_env(receiver, delay_ms: 50))
      run(1)
      deadline = now + 30
      sleep 0.02 until TaskerTraceNative.exporter_stats[:failed_exports] >= 1 || now > deadline
      stats = TaskerTraceNative.exporter_stats
      report(next_in: stats[:next_attempt_at] && (stats[:next_attempt_at] - Time.now), failed: stats[:failed_exports])
      exit!(0)
    RUBY
    expect_success(result)
    out = reports(result).last
    expect(out[:failed]).to eq(1)
    # The backoff alone would be 0.5 to 1 s after a first failure.
    expect(out[:next_in]).to be_between(60, 121)
    expect(receiver.requests.size).to eq(1)
  end

  it "backs off between failed exports, and a flush still tries at once" do
    receiver([{ status: 500 }])
    result = run_child(RUN_PRELUDE + <<~'RUBY', env: exporter_env(receiver, delay_ms: 50))
      (1..5).each { |i| run(i) }
      deadline = now + 30
      sleep 0.02 until TaskerTraceNative.exporter_stats[:failed_exports] >= 1 || now > deadline
      failing = TaskerTraceNative.exporter_stats
      sleep 3
      report(during: TaskerTraceNative.exporter_stats.slice(:failed_exports, :next_attempt_at),
             first_failure: failing.slice(:failed_exports))
      before_flush = TaskerTraceNative.exporter_stats[:failed_exports]
      TaskerTraceNative.flush(timeout: 5)
      report(flushed: TaskerTraceNative.exporter_stats[:failed_exports] - before_flush)
      exit!(0)
    RUBY
    expect_success(result)
    out = reports(result).to_h { |r| [r.keys.first, r] }
    # 3 s at a 50 ms schedule would be about 60 exports without backoff.
    expect(out[:during][:during][:failed_exports]).to be_between(1, 12)
    expect(out[:during][:during][:next_attempt_at]).not_to be_nil
    expect(out[:flushed][:flushed]).to be >= 1
  end

  it "exports what settled at any finishing rate with a healthy collector, and counts what it dropped" do
    receiver
    result = run_child(RUN_PRELUDE + <<~'RUBY', env: exporter_env(receiver, delay_ms: 100), timeout: 180)
      TaskerTraceNative.configure { |c| c.lifecycle_max_finished_runs = 500 }
      (1..20_000).each { |i| run(i) }
      deadline = now + 60
      # Every run ends up exported or dropped (counted); what an export has
      # in flight is in neither count yet, nor in `queued`.
      until TaskerTraceNative.exporter_stats.values_at(:exported_traces, :dropped_traces).sum >= 20_000 ||
            now > deadline
        sleep 0.05
      end
      report(exporter: TaskerTraceNative.exporter_stats.slice(:exported_traces, :dropped_traces, :queued),
             lifecycle: TaskerTraceNative.lifecycle_stats.slice(:dropped_finished_runs, :finished_runs))
      exit!(0)
    RUBY
    expect_success(result)
    out = reports(result).last
    exported = out[:exporter][:exported_traces]
    # The exporter's dropped_traces covers the tracer's dropped_finished_runs
    # (and the store's evictions and its own retry queue's drops).
    dropped = out[:exporter][:dropped_traces]
    expect(out[:lifecycle][:dropped_finished_runs]).to be <= dropped
    expect(exported).to be >= 500
    expect(delivered_task_ids.size).to eq(exported)
    expect(delivered_task_ids.uniq.size).to eq(exported)
    expect(exported + dropped).to eq(20_000), out.inspect
  end

  it "notices an interrupt the process sends itself within a fraction of the export timeout" do
    receiver(:hang)
    env = exporter_env(receiver, delay_ms: 60_000, extra: { "OTEL_BSP_EXPORT_TIMEOUT" => "30000" })
    result = run_child(RUN_PRELUDE + <<~'RUBY', env: env)
      run(1)
      Thread.new { sleep 0.5; Process.kill(:INT, Process.pid) }
      started = now
      begin
        TaskerTraceNative.flush(timeout: 20)
        report(interrupted: false, after: now - started)
      rescue Interrupt
        report(interrupted: true, after: now - started)
      end
      exit!(0)
    RUBY
    expect_success(result)
    out = reports(result).last
    expect(out[:interrupted]).to be(true)
    # Without the fix it waits out most of the flush's 20 s.
    expect(out[:after]).to be < 5
  end

  it "keeps waiting through a signal whose trap handler raises nothing" do
    receiver(:hang)
    env = exporter_env(receiver, delay_ms: 60_000, extra: { "OTEL_BSP_EXPORT_TIMEOUT" => "30000" })
    result = run_child(RUN_PRELUDE + SIGNALS_PRELUDE + <<~'RUBY', env: env)
      run(1)
      flushed, after, trapped = under_usr1 { TaskerTraceNative.flush(timeout: 3) }
      report(flushed: flushed, after: after, trapped: trapped)
      exit!(0)
    RUBY
    expect_success(result)
    out = reports(result).last
    expect(out[:trapped]).to be > 0
    # It waited out its timeout (the collector never answers): no signal
    # ended it as "interrupted".
    expect(out[:flushed][:error]).to start_with("timed out waiting for the export")
    expect(out[:after]).to be >= 2.9
  end

  it "keeps pushing through a signal whose trap handler raises nothing" do
    receiver(:hang)
    env = exporter_env(receiver, delay_ms: 60_000).merge("OTEL_TRACES_EXPORTER" => "none")
    result = run_child(SIGNALS_PRELUDE + <<~RUBY, env: env)
      (1..3).each { |i| lifecycle(i) }
      pushed, after, trapped = under_usr1 do
        B.push_otlp(endpoint: #{receiver.url.sub(%r{/v1/traces\z}, '').inspect}, protocol: "http/json", timeout: 3)
      end
      report(pushed: pushed, after: after, trapped: trapped, stored: B.traces.size)
      exit!(0)
    RUBY
    expect_success(result)
    out = reports(result).last
    expect(out[:trapped]).to be > 0
    # It went on to its timeout (the collector never answers), not ended
    # as "interrupted" by a signal; the traces are back in the store.
    expect(out[:pushed][:error]).not_to include("interrupted")
    expect(out[:pushed][:error]).to match(/timeout|timed out/)
    expect(out[:after]).to be >= 2.9
    expect(out[:stored]).to eq(3)
  end

  it "notices an interrupt the process sends itself during push_otlp, and puts the traces back" do
    receiver(:hang)
    env = exporter_env(receiver, delay_ms: 60_000).merge("OTEL_TRACES_EXPORTER" => "none")
    result = run_child(<<~RUBY, env: env)
      (1..3).each { |i| lifecycle(i) }
      Thread.new { sleep 0.5; Process.kill(:INT, Process.pid) }
      started = now
      begin
        B.push_otlp(endpoint: #{receiver.url.sub(%r{/v1/traces\z}, '').inspect}, protocol: "http/json", timeout: 20)
        report(interrupted: false, after: now - started)
      rescue Interrupt
        report(interrupted: true, after: now - started, stored: B.traces.size)
      end
      exit!(0)
    RUBY
    expect_success(result)
    out = reports(result).last
    expect(out).to include(interrupted: true, stored: 3)
    # Without the fix it waits out most of the push's 20 s.
    expect(out[:after]).to be < 5
  end
end
