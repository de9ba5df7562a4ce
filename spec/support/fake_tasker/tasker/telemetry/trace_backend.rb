# frozen_string_literal: true

# A stand-in for the Tasker engine's pure-Ruby lib/tasker/telemetry/trace_backend.rb,
# for spec/load_order_spec.rb: it reopens the class with `include Singleton`, an
# `initialize` that builds a Concurrent::Hash, and every public method in Ruby.
# Each Ruby method marks the instance, so a spec can tell when Ruby served a
# call instead of the native backend.
#
# Only the load-order spec's child processes put spec/support/fake_tasker on the
# load path; spec_helper requires every file under spec/support, so elsewhere
# this file does nothing.
return unless $LOAD_PATH.any? { |dir| File.expand_path(dir) == File.expand_path("../..", __dir__) }

require "singleton"
require "socket"
require "concurrent"
require "active_support"
require "active_support/core_ext/time"

module Tasker
  module Telemetry
    class TraceBackend
      include Singleton

      attr_reader :traces, :created_at, :ruby_calls

      def initialize
        @traces = Concurrent::Hash.new
        @created_at = Time.current
        @instance_id = Socket.gethostname
        @ruby_calls = []
      end

      def handle_event(event_name, payload = {})
        @ruby_calls << :handle_event
        return false unless payload.is_a?(Hash)

        @traces["ruby_#{@traces.size}"] = { event_name: event_name, payload: payload }
        true
      end

      def export
        @ruby_calls << :export
        { traces: @traces.transform_values(&:dup),
          metadata: { backend: "trace", instance_id: @instance_id, created_at: @created_at.iso8601,
                      exported_at: Time.current.iso8601, trace_count: @traces.size } }
      end

      def reset!
        @ruby_calls << :reset!
        @traces.clear
      end

      def stats
        @ruby_calls << :stats
        { active_traces: @traces.size, backend_uptime: Time.current - @created_at, instance_id: @instance_id }
      end
    end
  end
end
