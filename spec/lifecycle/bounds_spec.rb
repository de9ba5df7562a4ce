# frozen_string_literal: true

require "spec_helper"

RSpec.describe "Lifecycle tracer: bounds" do
  it "evicts the least recently active open run beyond lifecycle_max_open_runs, counted, never exported" do
    configure_lifecycle(lifecycle_max_open_runs: 2)
    publish("task.start_requested", to_state: "in_progress", task_id: 1)
    publish("task.start_requested", to_state: "in_progress", task_id: 2)
    publish("workflow.steps_execution_started", task_id: 1) # 1 is now the more recent
    publish("task.start_requested", to_state: "in_progress", task_id: 3)
    expect(runs(include_open: true).map { |r| r[:task_id] }).to eq([1, 3])
    expect(stats).to include(open_runs: 2, evicted_runs: 1)
    publish("task.completed", task_id: 2)
    expect(stats[:events_orphaned]).to eq(1)
  end

  it "keeps at most lifecycle_max_spans_per_run spans and span events, the oldest going first" do
    configure_lifecycle(lifecycle_max_spans_per_run: 4, lifecycle_attributes: %w[count])
    publish("task.start_requested", to_state: "in_progress", task_id: 1)
    5.times { |i| publish("workflow.steps_execution_started", task_id: 1, count: i) }
    r = root(only_run(include_open: true))
    expect(r[:events].map { |e| attrs(e)["count"] }).to eq([2, 3, 4])
    expect(stats).to include(dropped_spans: 2, events_dropped: 0)
  end

  it "drops a closed attempt with its events before newer entries, and keeps open attempts" do
    configure_lifecycle(lifecycle_max_spans_per_run: 4)
    publish("task.start_requested", to_state: "in_progress", task_id: 1)
    play(ts.step_attempt(1, 10, "a", 1)) # attempt + before_handle event
    publish("step.execution_requested", task_id: 1, step_id: 11) # open
    publish("step.execution_requested", task_id: 1, step_id: 12) # open: the closed one goes
    run = only_run(include_open: true)
    expect(attempts(run).map { |s| attrs(s)["step_id"] }).to eq([11, 12])
    expect(stats[:dropped_spans]).to eq(2)
    # Root and three open attempts fill it: nothing may go, the new one is refused.
    publish("step.execution_requested", task_id: 1, step_id: 13)
    expect(TaskerTraceNative.record_lifecycle_event("step.execution_requested", task_id: 1, step_id: 14)).to be(true)
    expect(attempts(only_run(include_open: true)).size).to eq(3)
    expect(stats[:events_dropped]).to eq(1)
  end

  it "drops the oldest finished run beyond lifecycle_max_finished_runs" do
    configure_lifecycle(lifecycle_max_finished_runs: 2)
    (1..3).each do |t|
      publish("task.start_requested", to_state: "in_progress", task_id: t)
      publish("task.completed", task_id: t)
    end
    expect(runs.map { |r| r[:task_id] }).to eq([2, 3])
    expect(stats).to include(finished_runs: 2, dropped_finished_runs: 1)
  end

  it "evicts at once when a bound is lowered" do
    (1..5).each { |t| publish("task.start_requested", to_state: "in_progress", task_id: t) }
    configure_lifecycle(lifecycle_max_open_runs: 2)
    expect(runs(include_open: true).map { |r| r[:task_id] }).to eq([4, 5])
    expect(stats[:evicted_runs]).to eq(3)
  end

  it "stays within its bounds under a flood of runs that never end" do
    configure_lifecycle(lifecycle_max_open_runs: 50, lifecycle_max_spans_per_run: 10)
    2_000.times do |t|
      publish("task.start_requested", to_state: "in_progress", task_id: t)
      20.times { |s| publish("step.before_handle", task_id: t, step_id: s) }
    end
    expect(stats).to include(open_runs: 50, evicted_runs: 1_950)
    expect(runs(include_open: true).map { |r| r[:spans].size + r[:spans].sum { |s| s[:events].size } }.max)
      .to be <= 10
  end
end
