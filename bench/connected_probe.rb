# frozen_string_literal: true

# The connected-trace path's cost with the real OpenTelemetry Ruby API (and
# SDK configured), against the plain path, interleaved in one process: the
# `opentelemetry_context` setting is switched between rounds (every
# subscription shares one listener, which takes the path the setting says),
# and one untimed event after each switch lets go of what the other path
# held. Prints one JSON line of median microseconds per run (its four task
# events) and per step attempt (seven step events), for each path. Run by
# bin/bench when OTEL_RUBY_SOURCE names the OpenTelemetry Ruby sources (see
# docs/connected-traces.md).
#
#   ruby bench/connected_probe.rb ROUNDS
source = ENV.fetch("OTEL_RUBY_SOURCE")
%w[api sdk common registry semantic_conventions].each { |d| $LOAD_PATH.unshift(File.join(source, d, "lib")) }
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "json"
require "opentelemetry-api"
require "opentelemetry-sdk"
OpenTelemetry::SDK.configure { |c| c.logger = Logger.new(File::NULL) }
require "tasker_trace_native"
require_relative "../spec/support/stand_in_publisher"

rounds = Integer(ARGV.fetch(0, "2000"))
TaskerTraceNative.configure { |c| c.lifecycle_max_finished_runs = 100 }
publisher = StandInPublisher.new
TaskerTraceNative.trace_lifecycle!(publisher)
setting = { connected: :auto, plain: false }

tracer = OpenTelemetry.tracer_provider.tracer("bench")
now = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond) }
times = { connected: { run: [], attempt: [] }, plain: { run: [], attempt: [] } }
task = 0
rounds.times do
  %i[connected plain].each do |side|
    TaskerTraceNative.configure { |c| c.opentelemetry_context = setting[side] }
    # Untimed: an orphan step event, read at once while the path is being
    # switched off (the fiber lets go of what it held, then events take
    # the plain path).
    publisher.publish("step.before_handle", task_id: 0, step_id: 0)
    unless TaskerTraceNative::ContextListener.engaged? == (side == :connected)
      raise "the #{side} round does not take the #{side} path"
    end

    task += 1
    run_ns = 0
    attempt_ns = 0
    tracer.in_span("job") do
      t = now.call
      publisher.publish("task.start_requested", task_id: task, task_name: "t", to_state: "in_progress")
      publisher.publish("task.start_requested", task_id: task, task_name: "t", total_steps: 1)
      run_ns += now.call - t
      t = now.call
      3.times { publisher.publish("step.execution_requested", task_id: task, step_id: 1, step_name: "s") }
      publisher.publish("step.before_handle", task_id: task, step_id: 1)
      3.times { publisher.publish("step.completed", task_id: task, step_id: 1) }
      attempt_ns = now.call - t
      t = now.call
      2.times { publisher.publish("task.completed", task_id: task) }
      run_ns += now.call - t
    end
    times[side][:run] << run_ns
    times[side][:attempt] << attempt_ns
  end
  TaskerTraceNative::Native.lifecycle_reset! if (task % 1000).zero?
end
median = ->(a) { a.sort[a.size / 2] / 1000.0 }
out = times.transform_values { |h| h.transform_values { |a| median.call(a).round(2) } }
out[:extra_us] = { run: (out[:connected][:run] - out[:plain][:run]).round(2),
                   attempt: (out[:connected][:attempt] - out[:plain][:attempt]).round(2) }
out[:rounds] = rounds
puts JSON.generate(out)
