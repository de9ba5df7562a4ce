# frozen_string_literal: true

require "spec_helper"

RSpec.describe "TaskerTraceNative.trace_lifecycle!" do
  let(:stand_in) { StandInPublisher.new }

  it "subscribes to the lifecycle events the publisher registered and returns their names" do
    names = TaskerTraceNative.trace_lifecycle!(stand_in)
    expect(names).to match_array(StandInPublisher::TASKER_EVENTS)
    expect(names).not_to include("order.fulfilled")
    expect(stand_in.listener_count("order.fulfilled")).to eq(0)
    StandInPublisher::TASKER_EVENTS.each { |n| expect(stand_in.listener_count(n)).to eq(1) }
  end

  it "subscribes by default only to the events the trace model uses; the rest on request" do
    configure_lifecycle(lifecycle_workflow_events: false)
    names = TaskerTraceNative.trace_lifecycle!(stand_in)
    expect(names).to match_array(StandInPublisher::TASKER_EVENTS & TaskerTraceNative::Native::LIFECYCLE_SPAN_EVENT_NAMES)
    expect(names).to include("task.start_requested", "step.completed", "task.initialize_requested")
    expect(names.grep(/\Aworkflow\./)).to eq([])
    # A span event on its attempt only, which Tasker's TelemetrySubscriber
    # does not subscribe to either: one call an attempt saved.
    expect(names).not_to include("step.before_handle")
    expect(stand_in.listener_count("workflow.viable_steps_discovered")).to eq(0)
    # Turned on, the next call adds the rest.
    configure_lifecycle(lifecycle_workflow_events: true)
    added = TaskerTraceNative.trace_lifecycle!(stand_in)
    expect(added).to match_array(StandInPublisher::TASKER_EVENTS - names)
    expect(added).to include("step.before_handle", "workflow.viable_steps_discovered")
    expect(TaskerTraceNative.config.lifecycle_workflow_events).to be(true)
    expect { configure_lifecycle(lifecycle_workflow_events: "yes") }
      .to raise_error(ArgumentError, /lifecycle_workflow_events must be true or false/)
  end

  it "tells publishers apart by identity, and remembers a frozen one's names" do
    twins = Class.new(StandInPublisher) do
      def eql?(_other) = true
      def ==(_other) = true
      def hash = 1
    end
    first = twins.new
    second = twins.new
    expect(TaskerTraceNative.trace_lifecycle!(first)).not_to be_empty
    expect(TaskerTraceNative.trace_lifecycle!(second).size).to eq(first.listener_count)
    frozen = StandInPublisher.new.freeze
    expect(TaskerTraceNative.trace_lifecycle!(frozen).size).to eq(first.listener_count)
    GC.start
    expect(TaskerTraceNative.trace_lifecycle!(frozen)).to eq([])
    expect(frozen.listener_count).to eq(first.listener_count)
  end

  it "is idempotent per publisher: a second call adds nothing" do
    TaskerTraceNative.trace_lifecycle!(stand_in)
    GC.start # what it remembers of the publisher is not collected
    expect(TaskerTraceNative.trace_lifecycle!(stand_in)).to eq([])
    expect(stand_in.listener_count).to eq(StandInPublisher::TASKER_EVENTS.size)
    stand_in.publish("task.start_requested", to_state: "in_progress", task_id: 1)
    expect(TaskerTraceNative.lifecycle_stats[:events_recorded]).to eq(1)
  end

  it "subscribes each publisher on its own, and names registered later on the next call" do
    other = StandInPublisher.new(%w[task.start_requested])
    expect(TaskerTraceNative.trace_lifecycle!(other)).to eq(["task.start_requested"])
    expect(TaskerTraceNative.trace_lifecycle!(stand_in).size).to eq(StandInPublisher::TASKER_EVENTS.size)
    other.register_event("task.completed")
    expect(TaskerTraceNative.trace_lifecycle!(other)).to eq(["task.completed"])
  end

  it "passes each event's id and payload (with the publisher's timestamp) to the native tracer" do
    TaskerTraceNative.trace_lifecycle!(stand_in)
    stand_in.publish("task.start_requested", to_state: "in_progress", task_id: 5, task_name: "order")
    stand_in.publish("task.completed", task_id: 5)
    run = TaskerTraceNative.lifecycle_runs.first
    expect(run[:task_id]).to eq(5)
    expect(run[:spans].first[:attributes]).to eq("tasker.task_name" => "order", "tasker.task_id" => 5)
  end

  it "keeps Symbol event ids and the registry's own keys" do
    symbols = StandInPublisher.new(%i[task.start_requested task.completed])
    expect(TaskerTraceNative.trace_lifecycle!(symbols)).to eq(%w[task.start_requested task.completed])
    symbols.publish(:"task.start_requested", to_state: "in_progress", task_id: 1)
    symbols.publish(:"task.completed", task_id: 1)
    expect(TaskerTraceNative.lifecycle_runs.size).to eq(1)
  end

  context "with a publisher that cannot list its events" do
    # Answers subscribe for some names and raises for the others, like a
    # dry-events publisher asked for an event it never registered.
    let(:opaque) do
      Class.new do
        attr_reader :subscribed

        def initialize
          @subscribed = []
        end

        def subscribe(name, &block)
          raise KeyError, "unregistered #{name}" unless name.start_with?("task.")

          @subscribed << [name, block]
          self
        end
      end.new
    end

    it "tries the names the tracer knows, skipping those it refuses, raising nothing" do
      names = TaskerTraceNative.trace_lifecycle!(opaque)
      expected = TaskerTraceNative::Native::LIFECYCLE_EVENT_NAMES.select { |n| n.start_with?("task.") }
      expect(names).to eq(expected)
      expect(opaque.subscribed.map(&:first)).to eq(expected)
      expect(TaskerTraceNative.trace_lifecycle!(opaque)).to eq([])
    end
  end

  it "raises ArgumentError for something that is not a publisher, naming it" do
    expect { TaskerTraceNative.trace_lifecycle!(42) }
      .to raise_error(ArgumentError, /publisher must respond to subscribe.*\(got 42\)/)
    expect { TaskerTraceNative.trace_lifecycle!("x" * 1_000_000) }.to raise_error(ArgumentError) do |e|
      expect(e.message.size).to be < 300
    end
  end

  it "raises ArgumentError without a publisher when Tasker::Events::Publisher is not loaded" do
    expect(defined?(Tasker::Events::Publisher)).to be_nil
    expect { TaskerTraceNative.trace_lifecycle! }
      .to raise_error(ArgumentError, /Tasker::Events::Publisher is not loaded/)
  end

  it "uses Tasker::Events::Publisher.instance by default" do
    stand_in = self.stand_in
    events = Module.new
    events.const_set(:Publisher, Class.new { define_singleton_method(:instance) { stand_in } })
    Tasker.const_set(:Events, events)
    expect(TaskerTraceNative.trace_lifecycle!.size).to eq(StandInPublisher::TASKER_EVENTS.size)
  ensure
    Tasker.send(:remove_const, :Events) if Tasker.const_defined?(:Events, false)
  end

  it "an empty registry subscribes nothing" do
    expect(TaskerTraceNative.trace_lifecycle!(StandInPublisher.new([]))).to eq([])
  end

  it "a huge registry subscribes the lifecycle names among it" do
    many = StandInPublisher.new(Array.new(20_000) { |i| "custom.event_#{i}" } + %w[task.completed workflow.x])
    expect(TaskerTraceNative.trace_lifecycle!(many)).to eq(%w[task.completed workflow.x])
  end
end
