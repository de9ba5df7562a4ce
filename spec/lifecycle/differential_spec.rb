# frozen_string_literal: true

require "spec_helper"
require "json"

# The native lifecycle tracer against the pure-Ruby model of the issue's
# table (spec/support/lifecycle_model.rb) on seeded random event streams:
# every shape (runs, spans, statuses, attributes, span events, links) and
# every counter must agree, at every export and at the end. Times and
# durations are left aside. DIFFERENTIAL_SEED=<n> replays a stream.

# Random events of a few tasks and steps, with Tasker's names and keys.
module LifecycleDifferentialStream
  NAMES = %w[
    task.initialize_requested task.start_requested task.start_requested task.completed task.failed
    task.cancelled task.resolved_manually
    step.execution_requested step.execution_requested step.execution_requested step.before_handle
    step.completed step.completed step.failed step.failed step.cancelled step.resolved_manually
    step.retry_requested observability.step.backoff observability.task.enqueue
    workflow.viable_steps_discovered workflow.steps_execution_completed workflow.task_reenqueue_delayed
    task.before_transition step.initialize_requested
  ].freeze
  TO_STATES = ["in_progress", :in_progress, "pending", "complete", nil, 3].freeze
  TASK_IDS = [1, 2, 3, "3", 4, "05", :"6", 7].freeze
  STEP_IDS = [10, 11, 12, "12", :"13", "x-1"].freeze
  VALUES = [0, 1, 2, 3, -4, 2.5, 0.0, true, false, "", "a", "timeout", :sym, nil].freeze
  KEYS = %i[task_name step_name attempt_number retry_limit error_message exception_class error_class
            total_steps completed_steps failed_steps execution_duration region].freeze

  def self.event(rng)
    name = NAMES.sample(random: rng)
    payload = {}
    payload[:task_id] = rng.rand < 0.03 ? nil : TASK_IDS.sample(random: rng) unless rng.rand < 0.02
    payload[:step_id] = STEP_IDS.sample(random: rng) if name.start_with?("step.", "observability.step") || rng.rand < 0.1
    payload.delete(:step_id) if rng.rand < 0.03
    KEYS.sample(rng.rand(0..4), random: rng).each { |k| payload[k] = VALUES.sample(random: rng) }
    payload[:step_results] = { secret: rng.rand } if rng.rand < 0.2
    payload[:to_state] = TO_STATES.sample(random: rng) if rng.rand < 0.7
    [name, payload]
  end
end

RSpec.describe "Lifecycle differential: native tracer vs the pure-Ruby model", timeout: 300 do
  base_seed = Integer(ENV.fetch("DIFFERENTIAL_SEED") { Random.rand(2**31) })
  events_per_stream = Integer(ENV.fetch("DIFFERENTIAL_EVENTS", "4000"))

  def native_shape(run)
    # Durations are left aside: a measured one is only known to be there.
    strip = lambda do |a|
      a.to_h do |k, v|
        k = k.delete_prefix("tasker.")
        [k, k == "execution_duration" && v.is_a?(Float) && v >= 0 ? :measured : v]
      end
    end
    root_span, *attempt_spans = run[:spans]
    {
      task_id: run[:task_id], end: run[:end], linked: !root_span[:links].empty?, name: root_span[:name],
      root: { status: root_span[:status][:code], message: root_span[:status][:message],
              attrs: strip.call(root_span[:attributes]),
              events: root_span[:events].map { |e| [e[:name], strip.call(e[:attributes])] } },
      attempts: attempt_spans.map do |s|
        { step_id: s[:attributes]["tasker.step_id"], status: s[:status][:code], message: s[:status][:message],
          attrs: strip.call(s[:attributes]), events: s[:events].map { |e| [e[:name], strip.call(e[:attributes])] },
          open: s[:end_time].nil? }
      end
    }
  end

  def compare(label, model_runs, native_runs)
    ours = native_runs.map { |r| native_shape(r) }
    theirs = model_runs.map(&:shape)
    return if ours == theirs

    i = ours.zip(theirs).index { |a, b| a != b } || [ours.size, theirs.size].min
    raise "#{label}: runs differ at #{i} of #{ours.size} (model #{theirs.size}):\n" \
          "native #{ours[i].inspect}\nmodel  #{theirs[i].inspect}"
  end

  def compare_stats(label, model)
    native = TaskerTraceNative.lifecycle_stats.slice(*LifecycleModel::STATS)
    expect(native).to eq(model.stats), "#{label}: counters differ"
  end

  def run_stream(seed, count, limits)
    rng = Random.new(seed)
    model = LifecycleModel.new(**limits)
    count.times do |i|
      if rng.rand < 0.01
        compare("export before event #{i}", model.waiting, TaskerTraceNative.lifecycle_runs)
        exported = JSON.parse(Tasker::Telemetry::TraceBackend.instance.export_otlp(drain: true))
        traces = exported["resourceSpans"].flat_map { |rs| rs["scopeSpans"].flat_map { |ss| ss["spans"] } }
                                          .map { |s| s["traceId"] }.uniq
        expect(traces.size).to eq(model.drain.size), "export before event #{i}: traces exported"
        next
      end
      name, payload = LifecycleDifferentialStream.event(rng)
      expect(TaskerTraceNative.record_lifecycle_event(name, payload)).to be(true)
      model.record(name, payload, allowlist: ["region"])
    end
    compare("at the end (waiting)", model.waiting, TaskerTraceNative.lifecycle_runs)
    compare("at the end (waiting and open)", model.waiting + model.open_runs,
            TaskerTraceNative.lifecycle_runs(include_open: true))
    compare_stats("at the end", model)
  end

  streams = [
    ["default bounds", base_seed, { max_open_runs: 10_000, max_spans_per_run: 1_000, max_finished_runs: 10_000 }],
    ["small bounds", base_seed + 1, { max_open_runs: 3, max_spans_per_run: 6, max_finished_runs: 4 }],
    ["tiny bounds", base_seed + 2, { max_open_runs: 1, max_spans_per_run: 2, max_finished_runs: 1 }],
    ["one span per run", base_seed + 3, { max_open_runs: 5, max_spans_per_run: 1, max_finished_runs: 3 }]
  ]

  streams.each do |label, seed, limits|
    it "agrees on every run and counter (#{label}, DIFFERENTIAL_SEED=#{base_seed})" do
      TaskerTraceNative.lifecycle_filter_parameters = []
      configure_lifecycle(lifecycle_attributes: ["region"], lifecycle_max_open_runs: limits[:max_open_runs],
                          lifecycle_max_spans_per_run: limits[:max_spans_per_run],
                          lifecycle_max_finished_runs: limits[:max_finished_runs])
      run_stream(seed, events_per_stream, limits)
    end
  end

  it "replays the same stream from the same seed" do
    a = Array.new(50) { LifecycleDifferentialStream.event(Random.new(base_seed)) }
    b = Array.new(50) { LifecycleDifferentialStream.event(Random.new(base_seed)) }
    expect(a).to eq(b)
  end
end
