# frozen_string_literal: true

require "spec_helper"
require_relative "../robustness/robustness_helper"

# A child forked while other threads record lifecycle events (and export
# them) works on its own copy of the tracer: no lock left held, its runs its
# own, the parent's untouched.
RSpec.describe "Lifecycle tracer: fork", timeout: 120 do
  include RobustnessHelper

  def a_run(task)
    events = ts.successful_run(task, "order", %w[a b], first_step_id: task * 10)
    TaskerEventStream.events_only(events).each { |n, p| TaskerTraceNative.record_lifecycle_event(n, p) }
  end

  it "gives a child forked amid writers and exports a working tracer of its own" do
    configure_lifecycle(lifecycle_max_finished_runs: 1_000_000) # run 1 stays, however fast the writers
    a_run(1)
    TaskerTraceNative.record_lifecycle_event("task.start_requested", to_state: "in_progress", task_id: 2)
    stop = false
    writers = Array.new(3) do |t|
      Thread.new do
        i = 0
        until stop
          # Bounded, so that the children's copies stay small.
          i < 5_000 ? a_run(1_000 + (t * 100_000) + i) : sleep(0.001)
          i += 1
        end
      end
    end
    exporter = Thread.new do
      Tasker::Telemetry::TraceBackend.instance.export_otlp(include_open: true) until stop
    end
    results = Array.new(3) do |n|
      sleep 0.05
      in_child(timeout: 40) do
        TaskerTraceNative.record_lifecycle_event("task.completed", task_id: 2)
        a_run(5_000_000 + n)
        runs = TaskerTraceNative.lifecycle_runs
        { tasks: runs.map { |r| r[:task_id] } & [1, 2, 5_000_000 + n], ids: runs.map { |r| r[:trace_id] } }
      end
    end
    stop = true
    (writers + [exporter]).each(&:join)
    results.each_with_index do |child, n|
      expect(child[:tasks]).to eq([1, 2, 5_000_000 + n])
    end
    # Trace ids made in the children never repeat across them.
    fresh = results.map { |c| c[:ids].last }
    expect(fresh.uniq.size).to eq(3)
    parent = TaskerTraceNative.lifecycle_runs(include_open: true)
    expect(parent.find { |r| r[:task_id] == 2 }[:end]).to eq("open")
    expect(parent.map { |r| r[:task_id] } & (5_000_000..5_000_002).to_a).to eq([])
  end
end
