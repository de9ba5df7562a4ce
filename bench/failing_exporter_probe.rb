# frozen_string_literal: true

# The background exporter's cost to the app while its collector fails, in a
# process of its own (the receiver, answering 500 to every request, runs in
# the suite's process):
#
#   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:PORT/v1/traces \
#     ruby bench/failing_exporter_probe.rb ROUNDS RUNS
#
# The app thread's time per lifecycle event (`record_lifecycle_event`, 5
# events a run as the engine publishes a one-step task), with the exporter
# off and on, alternating, ROUNDS rounds of RUNS runs each, with the
# exporter waking every 50 ms and every 512 events and
# `lifecycle_max_finished_runs` 500. With it on, each of its attempts fails,
# so it holds a retry queue and backs off; the lock-wait counters (test
# hooks) show how often the app thread found the tracer's lock held.
#
# Prints one JSON line.

ENV["TASKER_TRACE_NATIVE_TEST_HOOKS"] = "1"
require_relative "environment"

rounds, runs = ARGV.map { |a| Integer(a) }
bench = TaskerTraceNative::Bench
native = TaskerTraceNative::Native
hooks = TaskerTraceNative::TestHooks

# [name, payload] of one run of task `id`.
def run_events(id)
  [["task.start_requested", { task_id: id, task_name: "order", from_state: nil, to_state: "in_progress" }],
   ["step.before_handle", { task_id: id, step_id: id * 10, step_name: "charge", attempt_number: 0 }],
   ["step.completed", { task_id: id, step_id: id * 10, step_name: "charge", attempt_number: 1 }],
   ["task.completed", { task_id: id, task_name: "order", from_state: nil, to_state: "complete" }],
   ["task.completed", { task_id: id, task_name: "order", total_steps: 1, completed_steps: 1 }]]
end

EVENTS_PER_RUN = run_events(0).size

# ns per event over `runs` runs from `base`.
def per_event_ns(bench, native, runs, base)
  events = Array.new(runs) { |i| run_events(base + i) }.flatten(1)
  t = bench.monotonic_ns
  events.each { |name, payload| native.record_lifecycle_event(name, payload) }
  (bench.monotonic_ns - t).to_f / events.size
end

TaskerTraceNative.configure do |c|
  c.export_schedule_delay = 0.05
  c.export_max_batch_size = 512
  # Runs settle at this bound long before their 1 s, so the exporter takes
  # (and fails to deliver) runs in every round.
  c.lifecycle_max_finished_runs = 500
end
per_event_ns(bench, native, 100, -1_000) # warm every path
hooks.count_lock_waits(true)
off = []
on = []
waits_on = 0
rounds.times do |r|
  TaskerTraceNative.configure { |c| c.exporter = :none }
  native.lifecycle_reset!
  bench.full_gc
  off << per_event_ns(bench, native, runs, r * runs)
  native.lifecycle_reset!
  TaskerTraceNative.configure { |c| c.exporter = :otlp }
  bench.full_gc
  before = hooks.lock_waits[:tracer_app_waits]
  on << per_event_ns(bench, native, runs, r * runs)
  waits_on += hooks.lock_waits[:tracer_app_waits] - before
end
stats = TaskerTraceNative.exporter_stats
TaskerTraceNative.configure { |c| c.exporter = :none }
puts JSON.generate(
  off_ns: bench.median(off), on_ns: bench.median(on), rounds: rounds, runs: runs,
  events_per_run: EVENTS_PER_RUN, failed_exports: stats[:failed_exports],
  exported_traces: stats[:exported_traces], app_waits_on: waits_on
)
