# frozen_string_literal: true

require File.join(ROOT, "spec", "support", "stand_in_publisher")
require File.join(ROOT, "spec", "support", "tasker_event_stream")
require File.join(ROOT, "spec", "support", "stream_replayer")

module TaskerTraceNative
  module Bench
    # The lifecycle tracer's cost in the app's thread: per recorded event and
    # per task run of three steps as Tasker publishes it (25 events: 2x
    # task.start_requested, per step 3x execution_requested, before_handle
    # and 3x completed, then 2x task.completed), 25 tasks in flight,
    # interleaved. Task ids cycle, so the tracer stays at a steady size.
    #
    # - direct: `Native.record_lifecycle_event(name, payload)`, what the
    #   subscription calls;
    # - through the stand-in publisher: `publish(name, payload)` with the
    #   tracer subscribed (the publisher's own work, a new event and a merged
    #   payload each time, included);
    # - the stand-in publisher with a listener that does nothing: its own
    #   cost, for scale.
    class LifecycleCases
      IN_FLIGHT = 25

      def initialize(sampler, tasks:)
        @sampler = sampler
        @events = interleaved(tasks)
        @per_run = run_events(0).size
      end

      attr_reader :per_run

      # {lifecycle_event:, lifecycle_publisher_event:, lifecycle_publisher_floor:} in ns per event.
      def run
        n = @events.size
        reset = -> { TaskerTraceNative::Native.lifecycle_reset! }
        results = {}
        native = TaskerTraceNative::Native
        events = @events
        results[:lifecycle_event] = @sampler.measure("lifecycle event", setup: reset, setup_every: n) do |i|
          name, payload = events[i % n]
          native.record_lifecycle_event(name, payload)
        end
        traced = StandInPublisher.new
        TaskerTraceNative.trace_lifecycle!(traced)
        results[:lifecycle_publisher_event] = @sampler.measure("lifecycle via publisher", setup: reset,
                                                                                          setup_every: n) do |i|
          name, payload = events[i % n]
          traced.publish(name, payload)
        end
        floor = StandInPublisher.new
        StandInPublisher::TASKER_EVENTS.each { |name| floor.subscribe(name) { |_event| nil } }
        results[:lifecycle_publisher_floor] = @sampler.measure("publisher, no-op listener") do |i|
          name, payload = events[i % n]
          floor.publish(name, payload)
        end
        check!
        reset.call
        results
      end

      # A stream recorded from the real engine (spec/fixtures/streams), as
      # the subscription receives it by default (the events the trace model
      # uses), through the listener the subscription installs, one event at
      # a time, timed one by one: back to back (hot), and with a sweep over
      # `sweep_mb` MiB of memory between events (cold, as in the engine,
      # where each event comes after a millisecond or more of other work).
      # Returns median ns per event and per run, and the calls per run.
      def recorded(stream: "order_complete", reps: 11, sweep_mb: 16)
        names = TaskerTraceNative::Native::LIFECYCLE_SPAN_EVENT_NAMES
        events = StreamReplayer.load(stream).select { |e| names.include?(e.name) }
                               .map { |e| StandInPublisher::Event.new(e.name, e.payload) }
        sweep = "\x01".b * (sweep_mb << 20)
        listener = TaskerTraceNative::Lifecycle::LISTENER
        out = { recorded_calls_per_run: events.size }
        { hot: nil, cold: sweep }.each do |label, memory|
          per_event = []
          per_run = Array.new(reps) do
            TaskerTraceNative::Native.lifecycle_reset!
            events.sum do |event|
              memory&.count("\x02") # reads every byte: evicts the caches
              t = Bench.monotonic_ns
              listener.call(event)
              (Bench.monotonic_ns - t).tap { |ns| per_event << ns }
            end
          end
          check!
          out[:"recorded_#{label}_event"] = Bench.median(per_event)
          out[:"recorded_#{label}_p90"] = per_event.sort[(per_event.size * 9) / 10]
          out[:"recorded_#{label}_run"] = Bench.median(per_run)
        end
        TaskerTraceNative::Native.lifecycle_reset!
        out
      end

      private

      # The 25 events of one run of task `task`.
      def run_events(task)
        s = TaskerEventStream
        start = s.worker_start(task, "order_fulfillment", [1, 2, 3].map { |k| (task * 10) + k }).first(2)
        steps = %w[validate_cart charge_payment ship_order].each_with_index.flat_map do |name, k|
          s.step_attempt(task, (task * 10) + k + 1, name, 1)
        end
        finish = s.finish(task, "order_fulfillment", :completed, total: 3).select { |n, _| n == "task.completed" }
        s.events_only(start + steps + finish)
      end

      # `tasks` runs, IN_FLIGHT at a time, their events interleaved.
      def interleaved(tasks)
        (1..tasks).each_slice(IN_FLIGHT).flat_map do |group|
          streams = group.map { |t| run_events(t) }
          streams.first.size.times.flat_map { |i| streams.map { |events| events[i] } }
        end
      end

      # The measured work really recorded runs.
      def check!
        stats = TaskerTraceNative.lifecycle_stats
        return if stats[:events_recorded].positive? && stats[:events_refused].zero?

        raise "lifecycle bench recorded nothing: #{stats.inspect}"
      end
    end
  end
end
