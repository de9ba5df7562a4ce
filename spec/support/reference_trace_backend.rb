# frozen_string_literal: true

require "active_support"
require "active_support/core_ext/time"
require "concurrent"
require "socket"

module TaskerTraceNative
  module Spec
    # A pure-Ruby trace backend that behaves like the original Tasker
    # TraceBackend, written from the behaviour contract, for differential specs
    # and benchmarks. It is a plain class: make fresh ones with `.new`.
    #
    # Default (original) mode, like the engine's backend:
    # - stores references to the caller's payloads in a Concurrent::Hash;
    # - `created_at` is `Time.current` (a TimeWithZone in `Time.zone`, else a
    #   local Time), timestamps are `Time.current.iso8601`: the zone's offset,
    #   `Z` only in UTC;
    # - durations parse those timestamps back with `Time.zone.parse`, so they
    #   are whole seconds (nil without `Time.zone`, as the original rescues);
    # - generated keys are `"generic_#{Time.current.to_f}"` and
    #   `"trace_#{Time.current.to_f}"`, which can collide within one tick;
    # - `traces` is the live Hash; any StandardError inside handle_event makes
    #   it return false (logged to Rails.logger where that exists); `reset!`
    #   returns the emptied Hash.
    #
    # `contract: true` applies the contract's deliberate improvements instead,
    # so its export can be compared with the native backend's: event names must
    # be Strings or Symbols (a Symbol is stored as a String) with an encoding a
    # regexp can match; payloads are copied at arrival (other objects become
    # Strings, self-containing containers "[...]", too-deep ones
    # "[depth limit]"); durations come from the monotonic clock rounded to 6
    # decimals; timestamps are UTC whatever `Time.zone` is; generated keys
    # never collide; `max_traces` and `max_spans_per_trace` are enforced;
    # `stats` has the counters; `traces` is a copy.
    class ReferenceTraceBackend
      MAX_DEPTH = 128
      RECURSION_MARKER = "[...]"
      DEPTH_LIMIT_MARKER = "[depth limit]"
      KEY_FIELDS = [%i[task_id task], %i[workflow_step_id step], %i[operation operation]].freeze

      attr_reader :created_at, :instance_id, :max_traces, :max_spans_per_trace

      # Number of times a generated (`generic_`/`trace_`) key overwrote an
      # existing trace (original mode only; never happens in contract mode).
      attr_reader :generated_key_collisions

      def initialize(contract: false, max_traces: nil, max_spans_per_trace: nil)
        @contract = contract
        @max_traces = max_traces
        @max_spans_per_trace = max_spans_per_trace
        @traces = Concurrent::Hash.new
        @monotonic_starts = Concurrent::Hash.new
        @created_at = current_time
        @instance_id = Socket.gethostname
        @last_generated_ns = 0
        @generated_key_collisions = 0
        @lock = Mutex.new
        @stamp_lock = Mutex.new
        zero_counters
      end

      def contract?
        @contract
      end

      # handle_event(event_name, payload = {}) -> true or false
      def handle_event(event_name, payload = {})
        return reject unless payload.is_a?(Hash)

        if contract?
          event_name = contract_event_name(event_name)
          return reject if event_name.nil?
        end

        # One Hash per event, as the engine builds it (its allocation is part
        # of what the benchmarks compare).
        trace_data = { event_name: event_name, timestamp: timestamp_now, payload: payload,
                       instance_id: @instance_id }
        case event_name
        when /\.started$/
          handle_start(trace_data)
        when /\.completed$/, /\.failed$/
          handle_finish(trace_data)
        when /\.before_/, /\.after_/
          handle_span(trace_data)
        else
          handle_generic(trace_data)
        end
        count(:@events_handled)
        true
      rescue StandardError => e
        log_error(event_name, e)
        reject
      rescue ScriptError, SystemStackError => e
        # The original lets these through; the native backend (documented)
        # refuses the event and logs, as for a StandardError.
        raise unless contract?

        log_error(event_name, e)
        reject
      end

      def export
        {
          traces: copy_traces,
          metadata: {
            backend: "trace",
            instance_id: @instance_id,
            created_at: iso8601(@created_at),
            exported_at: timestamp_now,
            trace_count: @traces.size
          }
        }
      end

      # The live Hash in original mode (as the engine's attr_reader), a copy in
      # contract mode.
      def traces
        contract? ? copy_traces : @traces
      end

      def stats
        base = {
          active_traces: @traces.size,
          backend_uptime: current_time - @created_at,
          instance_id: @instance_id
        }
        return base unless contract?

        base.merge(
          events_handled: @events_handled,
          rejected_events: @rejected_events,
          orphaned_events: @orphaned_events,
          evicted_traces: @evicted_traces,
          dropped_spans: @dropped_spans,
          max_traces: @max_traces
        )
      end

      def reset!
        cleared = @lock.synchronize do
          @monotonic_starts.clear
          zero_counters
          @traces.clear
        end
        contract? ? nil : cleared
      end

      private

      def zero_counters
        @events_handled = 0
        @rejected_events = 0
        @orphaned_events = 0
        @evicted_traces = 0
        @dropped_spans = 0
      end

      # `Time.current`: Time.zone's now, else the local Time.
      def current_time
        Time.current
      end

      # A time in the timestamp format: the original's `iso8601` in its own
      # zone; the contract's in UTC.
      def iso8601(time)
        contract? ? time.getutc.iso8601 : time.iso8601
      end

      def timestamp_now
        iso8601(current_time)
      end

      def log_error(event_name, error)
        return unless defined?(::Rails) && ::Rails.respond_to?(:logger)

        ::Rails.logger&.error("TraceBackend error handling #{event_name}: #{error.message}")
      end

      def reject
        count(:@rejected_events)
        false
      end

      # Counters exist in contract mode only (the original has none).
      def count(counter)
        return unless contract?

        @lock.synchronize { instance_variable_set(counter, instance_variable_get(counter) + 1) }
      end

      # Contract mode takes a lock for each store update, after every call into
      # the payload's own Ruby code is done; original mode relies on
      # Concurrent::Hash alone, like the engine.
      def store_update(&block)
        contract? ? @lock.synchronize(&block) : yield
      end

      def monotonic_now
        contract? ? Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond) : nil
      end

      def handle_start(trace_data)
        event_name = trace_data[:event_name]
        timestamp = trace_data[:timestamp]
        payload = trace_data[:payload]
        key = trace_key(payload)
        record = {
          start_time: timestamp,
          event_name: event_name,
          payload: stored_payload(payload),
          spans: []
        }
        started = monotonic_now
        store_update do
          if @traces.key?(key)
            @generated_key_collisions += 1 if key.start_with?("trace_")
          else
            make_room
          end
          @traces[key] = record
          @monotonic_starts[key] = started if started
        end
      end

      def handle_finish(trace_data)
        event_name = trace_data[:event_name]
        timestamp = trace_data[:timestamp]
        payload = trace_data[:payload]
        key = trace_key(payload)
        stored_payload(payload) # copied (and so checked) like every payload in contract mode
        finished = monotonic_now
        status = event_name.include?("failed") ? "error" : "success" if contract?
        store_update do
          trace = @traces[key]
          next orphan unless trace

          trace[:end_time] = timestamp
          trace[:duration] = duration(trace, key, timestamp, finished)
          # In original mode a Symbol name raises here, after end_time and
          # duration are set, exactly as the engine's backend does.
          trace[:status] = status || (event_name.include?("failed") ? "error" : "success")
        end
      end

      def handle_span(trace_data)
        event_name = trace_data[:event_name]
        timestamp = trace_data[:timestamp]
        payload = trace_data[:payload]
        key = trace_key(payload)
        span = { timestamp: timestamp, event_name: event_name, payload: stored_payload(payload) }
        store_update do
          trace = @traces[key]
          next orphan unless trace

          if contract? && @max_spans_per_trace && trace[:spans].size >= @max_spans_per_trace
            @dropped_spans += 1
          else
            trace[:spans] << span
          end
        end
      end

      # The contract's shape: timestamp, event_name, payload, type (no instance_id).
      def handle_generic(trace_data)
        event_name = trace_data[:event_name]
        timestamp = trace_data[:timestamp]
        payload = trace_data[:payload]
        record = { timestamp: timestamp, event_name: event_name, payload: stored_payload(payload),
                   type: "generic" }
        store_update do
          key = "generic_#{generated_stamp}"
          if @traces.key?(key)
            @generated_key_collisions += 1
          else
            make_room
          end
          @traces[key] = record
        end
      end

      def orphan
        @orphaned_events += 1 if contract?
        nil
      end

      def duration(trace, key, timestamp, finished)
        if contract?
          ((finished - @monotonic_starts.fetch(key)) / 1e9).round(6)
        else
          original_duration(trace[:start_time], timestamp)
        end
      end

      # The original's calculate_duration: its timestamps parsed back in
      # Time.zone (whole seconds), nil when that fails (no Time.zone).
      def original_duration(start_time, end_time)
        return nil unless start_time && end_time

        (Time.zone.parse(end_time) - Time.zone.parse(start_time)).round(6)
      rescue StandardError
        nil
      end

      # The first truthy of payload[:task_id], [:workflow_step_id], [:operation].
      def trace_key(payload)
        KEY_FIELDS.each do |field, prefix|
          value = payload[field]
          return "#{prefix}_#{value}" if value
        end
        "trace_#{generated_stamp}"
      end

      # `<seconds>.<fraction>`: the original's Float, or in contract mode
      # strictly increasing nanoseconds.
      def generated_stamp
        return current_time.to_f unless contract?

        ns = @stamp_lock.synchronize do
          now = Process.clock_gettime(Process::CLOCK_REALTIME, :nanosecond)
          @last_generated_ns = now > @last_generated_ns ? now : @last_generated_ns + 1
        end
        format("%<s>d.%<ns>09d", s: ns / 1_000_000_000, ns: ns % 1_000_000_000)
      end

      def make_room
        return unless contract? && @max_traces

        while @traces.size >= @max_traces
          key, = @traces.shift
          @monotonic_starts.delete(key)
          @evicted_traces += 1
        end
      end

      def copy_traces
        return @traces.transform_values(&:dup) unless contract?

        # Stored records hold only copied plain values, so a Marshal round
        # trip is a complete, independent deep copy.
        Marshal.load(Marshal.dump(@lock.synchronize { Hash[@traces] }))
      end

      # --- contract mode: names and payload copies ---------------------------

      def contract_event_name(name)
        name = case name
               when Symbol then name.name.dup
               when String then name
               else return nil
               end
        return nil unless name.valid_encoding? && name.encoding.ascii_compatible?

        name
      end

      def stored_payload(payload)
        contract? ? copy_value(payload, [], 1) : payload
      end

      def copy_value(value, path, depth)
        case value
        when nil, true, false, Integer, Float, Symbol then value
        when String then String.new(value)
        when Array, Hash then copy_container(value, path, depth)
        else describe_object(value)
        end
      end

      def copy_container(value, path, depth)
        return DEPTH_LIMIT_MARKER.dup if depth > MAX_DEPTH
        return RECURSION_MARKER.dup if path.any? { |seen| seen.equal?(value) }

        path.push(value)
        begin
          if value.is_a?(Array)
            value.map { |item| copy_value(item, path, depth + 1) }
          else
            copy_pairs(value, path, depth)
          end
        ensure
          path.pop
        end
      end

      def copy_pairs(hash, path, depth)
        out = {}
        # Keys equal once copied (objects with one to_s, equal Strings of a
        # compare_by_identity Hash): the first keeps its value.
        Hash.instance_method(:each_pair).bind_call(hash) do |k, v|
          key = copy_value(k, path, depth + 1)
          value = copy_value(v, path, depth + 1)
          out[key] = value unless out.key?(key)
        end
        out
      end

      # Any other object: its iso8601 where it responds to it, else its to_s;
      # "#<ClassName>" when that raises a StandardError (or, as documented, a
      # ScriptError or SystemStackError) or is not a String, or for a
      # BasicObject.
      def describe_object(value)
        return class_placeholder(value) unless Object === value # rubocop:disable Style/CaseEquality

        text = value.respond_to?(:iso8601) ? value.iso8601 : value.to_s
        text.is_a?(String) ? String.new(text) : class_placeholder(value)
      rescue StandardError, ScriptError, SystemStackError
        class_placeholder(value)
      end

      def class_placeholder(value)
        klass = Kernel.instance_method(:class).bind_call(value)
        name = Module.instance_method(:name).bind_call(klass) || Module.instance_method(:to_s).bind_call(klass)
        "#<#{name}>"
      end
    end
  end
end
