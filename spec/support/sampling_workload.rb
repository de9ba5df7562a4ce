# frozen_string_literal: true

require "json"

# 10,000 task runs of one step each, recorded at given clock readings (the
# test hook `record_lifecycle_event_at`, so a slow run is 5 s long without
# waiting 5 s): 3% fail, 2% are slow (their root lasts 5 s), 5% are
# retried (their step is on its second attempt), the rest are plain. The
# tracer's ids follow from `seed`. Exported with export_otlp(drain: true)
# every 1,000 runs. Runs standalone too (`ruby sampling_workload.rb SEED`
# prints the result as JSON): two processes with one seed.
module SamplingWorkload
  RUNS = 10_000

  module_function

  def kind(i)
    case i % 100
    when 0..2 then :fails
    when 3..4 then :slow
    when 5..9 then :retried
    else :plain
    end
  end

  def record(name, payload, at_ns)
    TaskerTraceNative::TestHooks.record_lifecycle_event_at(name, payload, 1_767_225_600_000_000_000 + at_ns, at_ns)
  end

  # One run of task `i` from `t0` (ns).
  def run(i, t0)
    k = kind(i)
    attempt = k == :retried ? 2 : 1
    step = { task_id: i, step_id: i * 10, step_name: "charge", attempt_number: attempt }
    record("task.start_requested", { task_id: i, task_name: "order", to_state: "in_progress" }, t0)
    record("step.execution_requested", step, t0 + 1_000_000)
    if k == :fails
      record("step.failed", step.merge(error_message: "card declined"), t0 + 5_000_000)
      record("task.failed", { task_id: i, task_name: "order" }, t0 + 6_000_000)
      record("task.failed", { task_id: i, task_name: "order", error_message: "charge failed" }, t0 + 7_000_000)
    else
      record("step.completed", step, t0 + 5_000_000)
      finish = k == :slow ? 5_000_000_000 : 100_000_000
      record("task.completed", { task_id: i, task_name: "order" }, t0 + finish)
    end
  end

  # The exported runs' task ids, from OTLP JSON.
  def exported_task_ids(json)
    JSON.parse(json).fetch("resourceSpans").flat_map do |rs|
      rs.fetch("scopeSpans").flat_map { |ss| ss.fetch("spans") }
    end.select { |s| s["name"] == "tasker.task.execution" }.map do |s|
      s.fetch("attributes").find { |a| a["key"].end_with?(".task_id") }.dig("value", "intValue").to_i
    end
  end

  # Runs the workload; returns {exported: [task ids], stats:, exporter:}.
  def call(seed)
    TaskerTraceNative.lifecycle_reset!
    TaskerTraceNative::TestHooks.seed_lifecycle_ids(seed)
    TaskerTraceNative.configure do |c|
      c.sample_ratio = 0.1
      c.sample_keep_slower_than = 2
    end
    backend = Tasker::Telemetry::TraceBackend.instance
    exported = []
    RUNS.times do |i|
      run(i, 1_000_000_000 + (i * 1_000))
      exported.concat(exported_task_ids(backend.export_otlp(drain: true))) if i % 1_000 == 999
    end
    { exported: exported.sort, stats: TaskerTraceNative.lifecycle_stats, exporter: TaskerTraceNative.exporter_stats }
  end
end

if $PROGRAM_NAME == __FILE__
  require "tasker_trace_native"
  result = SamplingWorkload.call(Integer(ARGV.fetch(0)))
  puts JSON.generate(exported: result[:exported], sampled_out: result[:stats][:sampled_out])
end
