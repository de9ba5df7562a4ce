# frozen_string_literal: true

# A child process for spec/console: the console exporter on, writing to the
# file ARGV[0]; records the runs its mode (ARGV[1]) asks for, flushes and
# prints a JSON line with what it did.
#
# - "stream NAME": the recorded real stream NAME replayed at its recorded
#   times (the test hook record_lifecycle_event_at), ids seeded: the same
#   drawing every time.
# - "many N": N runs of 3 steps, and one run of 80 steps (a drawing over
#   4 KiB, written line by line).
require "json"
require "tasker_trace_native"
require_relative "../support/stream_replayer"

path, mode, arg = ARGV
TaskerTraceNative.configure do |c|
  c.exporter = :console
  c.console_output = path
  c.export_schedule_delay = 600
end
hooks = TaskerTraceNative::TestHooks

case mode
when "stream"
  hooks.seed_lifecycle_ids(2026)
  base = 1_000_000_000
  StreamReplayer.load(arg).each do |e|
    hooks.record_lifecycle_event_at(e.name, e.payload, 1_796_116_800_000_000_000 + e.t_ns, base + e.t_ns)
  end
when "many"
  n = Integer(arg)
  steps = ->(task, count) { (1..count).map { |s| { task_id: task, step_id: (task * 1000) + s, step_name: "step_#{s}", attempt_number: 1 } } }
  run = lambda do |task, count|
    rec = TaskerTraceNative::Native.method(:record_lifecycle_event)
    rec.call("task.start_requested", { task_id: task, task_name: "job_#{Process.pid}", to_state: "in_progress" })
    steps.call(task, count).each do |step|
      rec.call("step.execution_requested", step)
      if step[:step_id].odd?
        rec.call("step.completed", step)
      else
        rec.call("step.failed", step.merge(error_message: "step #{step[:step_id]} failed\nwith a second line"))
      end
    end
    rec.call("task.completed", { task_id: task, task_name: "job_#{Process.pid}" })
  end
  n.times { |i| run.call(i + 1, 3) }
  run.call(n + 1, 80)
end
result = TaskerTraceNative.flush(timeout: 30)
puts JSON.generate(result.merge(pid: Process.pid))
