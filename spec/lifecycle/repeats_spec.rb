# frozen_string_literal: true

require "spec_helper"

# Tasker publishes step.execution_requested and step.completed up to three
# times per attempt, back to back in one thread. The listener counts a copy
# that would change nothing (events_repeated) instead of reading it; the
# trace must be exactly the one every copy read in full makes.
RSpec.describe "Lifecycle tracer: repeated step events" do
  include LifecycleHelper

  def replay_through_listener(events)
    publisher = StreamReplayer.publisher_for(events)
    TaskerTraceNative.trace_lifecycle!(publisher)
    StreamReplayer.replay(events, publisher)
    [runs(include_open: true).map { |r| comparable(r) }, TaskerTraceNative.lifecycle_stats]
  end

  # Every event read in full: record_lifecycle_event never takes a repeat.
  def replay_in_full(events)
    events.each { |e| TaskerTraceNative.record_lifecycle_event(e.name, e.payload) }
    [runs(include_open: true).map { |r| comparable(r) }, TaskerTraceNative.lifecycle_stats]
  end

  StreamReplayer.names.each do |name|
    it "makes the trace of #{name} that reading every copy makes" do
      events = StreamReplayer.load(name).select { |e| TaskerTraceNative::Native::LIFECYCLE_SPAN_EVENT_NAMES.include?(e.name) }
      TaskerTraceNative.configure { |c| c.lifecycle_workflow_events = false }
      listened, listened_stats = replay_through_listener(events)
      TaskerTraceNative.lifecycle_reset!
      full, full_stats = replay_in_full(events)
      expect(listened).to eq(full)
      expect(listened_stats.except(:events_repeated)).to eq(full_stats.except(:events_repeated))
      expect(full_stats[:events_repeated]).to eq(0)
      copies = events.each_cons(2).count do |a, b|
        a.name == b.name && a.thread == b.thread && a.payload[:step_id] && a.payload[:step_id] == b.payload[:step_id]
      end
      expect(listened_stats[:events_repeated]).to be_between(1, copies) if copies.positive?
    end
  end

  it "counts the copies of a five-step run without reading them" do
    events = StreamReplayer.load("order_complete")
    _, stats = replay_through_listener(events)
    # Per attempt: the second and third step.execution_requested, and the
    # second (which raises attempt_number) and third step.completed.
    expect(stats[:events_repeated]).to eq(20)
  end

  describe "a copy" do
    def step(name, attempt: 0, **more)
      publish(name, { task_id: 1, step_id: 10, step_name: "charge", attempt_number: attempt, retry_limit: 3 }.merge(more))
    end

    before { publish("task.start_requested", task_id: 1, to_state: "in_progress", task_name: "order") }

    it "is counted when it would change nothing, and raises attempt_number when it brings a higher one" do
      step("step.execution_requested")
      step("step.execution_requested")
      step("step.completed")
      step("step.completed", attempt: 1)
      step("step.completed", attempt: 1)
      expect(TaskerTraceNative.lifecycle_stats).to include(events_repeated: 3, events_recorded: 6)
      attempt = attempts(only_run(include_open: true)).first
      expect(attrs(attempt)).to include("attempt_number" => 1, "step_name" => "charge")
    end

    it "with another value is read and merged" do
      step("step.execution_requested")
      step("step.execution_requested", retry_limit: 5)
      step("step.execution_requested", retry_limit: 5, step_name: "refund")
      step("step.execution_requested", retry_limit: 5, step_name: "refund", error_message: "late")
      expect(TaskerTraceNative.lifecycle_stats[:events_repeated]).to eq(0)
      attempt = attempts(only_run(include_open: true)).first
      expect(attrs(attempt)).to include("retry_limit" => 5, "step_name" => "refund", "error" => "late")
    end

    it "published in another thread is read" do
      step("step.execution_requested")
      Thread.new { step("step.execution_requested") }.join
      expect(TaskerTraceNative.lifecycle_stats[:events_repeated]).to eq(0)
    end

    it "after any other event, or a read of the runs, is read" do
      step("step.execution_requested")
      step("step.before_handle")
      step("step.execution_requested")
      runs(include_open: true)
      step("step.execution_requested")
      expect(TaskerTraceNative.lifecycle_stats[:events_repeated]).to eq(0)
      expect(attempts(only_run(include_open: true)).size).to eq(1)
    end

    it "with a value that is not an immediate or a String is read" do
      step("step.execution_requested", attempt: 0)
      step("step.execution_requested", attempt: 0, retry_limit: 3.5e300 * 10)
      step("step.execution_requested", attempt: 0, retry_limit: [3])
      expect(TaskerTraceNative.lifecycle_stats[:events_repeated]).to eq(0)
    end

    it "is read in full while lifecycle_attributes are allowlisted" do
      TaskerTraceNative.configure { |c| c.lifecycle_attributes = ["region"] }
      step("step.execution_requested", region: "eu")
      step("step.execution_requested", region: "eu")
      expect(TaskerTraceNative.lifecycle_stats[:events_repeated]).to eq(0)
    end
  end

  it "reads a payload whose keys are Symbols made at run time by their names" do
    key = "tasker_trace_native_#{Process.pid}_#{rand(1 << 30)}"
    dynamic = key.to_sym # made before the tracer interns the name: a dynamic Symbol
    TaskerTraceNative.configure { |c| c.lifecycle_attributes = [key] }
    TaskerTraceNative.lifecycle_filter_parameters = []
    publish("task.start_requested", { task_id: 1, to_state: "in_progress", dynamic => "eu" })
    expect(attrs(root(only_run(include_open: true)))).to include(key => "eu")
  end
end

RSpec.describe "TaskerTraceNative::Native.listen with bad input" do
  include LifecycleHelper

  # Each example sets the path it asserts (earlier examples may have left the
  # context path engaged); the settings put it back after.
  after { TaskerTraceNative::ContextListener.refresh! }

  it "never raises, refuses what is not an event, and reads huge or deep values in full" do
    TaskerTraceNative::Native.set_context_path(false, false)
    listen = TaskerTraceNative::Native.method(:listen)
    pending = TaskerTraceNative::Lifecycle::PENDING
    deep = {}
    cur = deep
    100_000.times { cur = (cur[:a] = {}) }
    expect(listen.call(nil, nil, pending)).to be_nil
    expect(listen.call(123, { task_id: 1 }, pending)).to be_nil
    expect(listen.call("step.completed", nil, pending)).to be_nil
    expect(listen.call("", {}, pending)).to be_nil
    expect(TaskerTraceNative.lifecycle_stats[:events_refused]).to eq(3)
    listen.call("task.start_requested", { task_id: 1, to_state: "in_progress" }, pending)
    big = { task_id: 1, step_id: 2**70, step_name: "x" * 5_000_000, retry_limit: deep }
    2.times { expect(listen.call("step.execution_requested", big, pending)).to be_nil }
    stats = TaskerTraceNative.lifecycle_stats
    expect(stats).to include(events_repeated: 0, events_recorded: 3)
    expect { listen.call(1) }.to raise_error(ArgumentError, /given 1, expected 3/)
  end

  it "records at once, never raising, when the waiting events' Array is not a usable Array" do
    TaskerTraceNative::Native.set_context_path(false, false)
    listen = TaskerTraceNative::Native.method(:listen)
    listen.call("task.start_requested", { task_id: 1, to_state: "in_progress" }, nil)
    [nil, "pending", [].freeze, { a: 1 }].each_with_index do |pending, i|
      expect(listen.call("step.execution_requested", { task_id: 1, step_id: 10 + i }, pending)).to be_nil
      expect(TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING)).to eq(0)
      expect(TaskerTraceNative::Native.lifecycle_stats[:events_recorded]).to eq(2 + i)
    end
  end

  it "answers settle to every event, refused ones too, once the context path was in use and is off" do
    TaskerTraceNative::Native.set_context_path(true, false)
    listen = TaskerTraceNative::Native.method(:listen)
    pending = TaskerTraceNative::Lifecycle::PENDING
    expect(listen.call(nil, nil, pending)).to eq(TaskerTraceNative::ContextListener::SETTLE)
    expect(listen.call("task.start_requested", { task_id: 1, to_state: "in_progress" }, pending))
      .to eq(TaskerTraceNative::ContextListener::SETTLE)
    expect(listen.call("step.execution_requested", { task_id: 1, step_id: 2 }, pending))
      .to eq(TaskerTraceNative::ContextListener::SETTLE)
    expect(TaskerTraceNative::TestHooks.waiting_events(pending)).to eq(0), "nothing waits while a fiber may hold a context"
    expect(TaskerTraceNative.lifecycle_stats).to include(events_refused: 1, events_recorded: 2)
  end
end
