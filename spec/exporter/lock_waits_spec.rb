# frozen_string_literal: true

require "spec_helper"
require_relative "exporter_helper"

# The app thread never waits on the exporter: while the exporter holds runs
# it could not deliver (a collector answering 500), it touches neither the
# tracer's lock nor the store's, so the one app thread recording events
# never finds either lock held. Counted with a test hook: every acquisition
# by an app thread tries the lock first and counts a wait when it is held,
# and every acquisition by the gem's own threads is counted.
RSpec.describe "Background exporter: the app thread never waits on it" do
  after { @receiver&.close }

  it "takes no app-thread lock while it holds undelivered runs, and the app thread never waits" do
    @receiver = ExporterSpecHelper::Receiver.new([{ status: 500 }], parse: false)
    env = exporter_env(@receiver, delay_ms: 20, extra: { "TASKER_TRACE_NATIVE_TEST_HOOKS" => "1",
                                                         "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => "64" })
    result = run_child(<<~'RUBY', env: env, timeout: 120)
      hooks = TaskerTraceNative::TestHooks
      rec = ->(name, payload) { TaskerTraceNative::Native.record_lifecycle_event(name, payload) }
      run = lambda do |id|
        rec.("task.start_requested", { task_id: id, task_name: "order", from_state: nil, to_state: "in_progress" })
        rec.("step.before_handle", { task_id: id, step_id: id * 10, step_name: "charge", attempt_number: 0 })
        rec.("step.completed", { task_id: id, step_id: id * 10, step_name: "charge", attempt_number: 1 })
        rec.("task.completed", { task_id: id, task_name: "order", from_state: nil, to_state: "complete" })
        rec.("task.completed", { task_id: id, task_name: "order", total_steps: 1, completed_steps: 1 })
      end
      hooks.count_lock_waits(true)
      id = 0
      deadline = now + 60
      # Until the first export has failed: the exporter then holds a queue.
      run.(id += 1) until TaskerTraceNative.exporter_stats[:failed_exports] >= 1 || now > deadline
      before = hooks.lock_waits
      failed_before = TaskerTraceNative.exporter_stats[:failed_exports]
      # Three more failed attempts (backoff 1 s, 2 s, 4 s, with jitter),
      # with runs finishing all along.
      runs_before = id
      run.(id += 1) until TaskerTraceNative.exporter_stats[:failed_exports] >= failed_before + 3 || now > deadline
      after = hooks.lock_waits
      report(before: before, after: after, runs: id - runs_before,
             stats: TaskerTraceNative.exporter_stats.slice(:failed_exports, :dropped_traces, :queued))
      exit!(0)
    RUBY
    expect_success(result)
    out = reports(result).last
    waits = out[:after].to_h { |k, v| [k, v - out[:before][k]] }
    expect(out[:stats][:failed_exports]).to be >= 4
    expect(out[:runs]).to be > 1_000
    expect(waits).to eq(tracer_app_waits: 0, tracer_native_locks: 0, store_app_waits: 0, store_native_locks: 0)
    # Nothing was delivered, and the bounds held: settling and settled runs
    # (10,000 each by default) in the tracer, 10,000 in the retry queue.
    expect(out[:stats][:queued]).to be <= 3 * 10_000
  end
end
