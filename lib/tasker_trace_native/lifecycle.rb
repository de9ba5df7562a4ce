# frozen_string_literal: true

module TaskerTraceNative
  # The lifecycle tracer: Tasker's own published events (the ones its
  # Tasker::Events::Publisher sends, not the EventRouter's) made into one
  # trace per task run, natively. Each event costs one native call; reading
  # the payload, the clock, the trace model and its bounds are in Rust.
  #
  #   TaskerTraceNative.trace_lifecycle!            # Tasker::Events::Publisher.instance
  #   TaskerTraceNative.lifecycle_stats             # => {open_runs: 3, finished_runs: 12, ...}
  #   TaskerTraceNative.lifecycle_runs              # => [{trace_id: "…", task_id: 42, end: "completed", spans: [...]}]
  #   Tasker::Telemetry::TraceBackend.instance.push_otlp  # the runs go out with the backend's traces
  #
  # In a Rails app the Railtie calls trace_lifecycle! after boot (unless
  # `config.tasker_trace_native.lifecycle_tracing = false`).
  module Lifecycle
    # Registered event names that are lifecycle events.
    NAMESPACES = /\A(?:task|step|workflow|observability\.(?:task|step))\./.freeze

    # Events waiting to be read, on the plain path (no OpenTelemetry context
    # to answer for): step events and task.start_requested, each as its
    # name, payload, clock reading and thread. The extension puts them here
    # and reads them, in order, before any other event (those may end a
    # run), when 64 wait, and before anything reads or changes the tracer
    # (lifecycle_stats, lifecycle_runs, an export, settings). An event
    # arrives with every cache cold; reading a run's events together costs
    # a fraction of reading each on its own. Only the extension touches it.
    PENDING = []

    # The one listener every subscription shares: the event's id and payload
    # go to the native tracer as they are, in one native call that records
    # the event (or counts a step event that repeats the one before it, or
    # leaves it in PENDING). With connected traces in use (see
    # ContextListener) it answers what the publishing thread must do about
    # its OpenTelemetry context, which is nothing for most events.
    LISTENER = proc do |event|
      answer = Native.listen(event.id, event.payload, PENDING)
      ContextListener.answer(event, answer) unless answer.nil?
    end

    # What a filtered value looks like (as in Rails' filter_parameters).
    FILTERED = "[FILTERED]"

    # The names subscribed on a publisher are kept on the publisher itself
    # (this instance variable), so they live exactly as long as it does and
    # publishers are told apart by identity. A frozen publisher's are kept
    # here instead, by identity, for the life of the process.
    SUBSCRIBED = :@__tasker_trace_native_subscribed__
    @frozen_publishers = {}.compare_by_identity
    @lock = Mutex.new
    @filter_parameters = nil

    class << self
      # Subscribes the native tracer to the lifecycle events `publisher` has
      # registered that the trace model uses (all of them with
      # `lifecycle_workflow_events`); returns the names subscribed by this
      # call (none the second time).
      def subscribe(publisher)
        unless publisher.respond_to?(:subscribe)
          raise ArgumentError, "publisher must respond to subscribe(event_name) { |event| ... } " \
                               "(got #{publisher.inspect[0, 80]})"
        end

        sync_filters!
        sync_attribute_prefix!
        connected = ContextListener.refresh!
        SdkResource.adopt! if connected
        @lock.synchronize do
          done = subscribed_names(publisher)
          candidates(publisher).each_with_object([]) do |id, added|
            name = id.to_s
            next if done.key?(name) || !subscribed?(publisher, id)

            done[name] = true
            added << name
          end
        end
      end

      # The event ids `publisher` has registered, as it keeps them: a
      # dry-events publisher's bus (`__bus__.events`), or its class's
      # registry (`events`); nil when it shows none.
      def registered_event_ids(publisher)
        registry = if publisher.respond_to?(:__bus__)
                     publisher.__bus__.events
                   elsif publisher.class.respond_to?(:events)
                     publisher.class.events
                   end
        registry.respond_to?(:keys) ? registry.keys : nil
      end

      # Tasker's own telemetry service name (`Tasker.configuration.telemetry
      # .service_name`, what its TelemetrySubscriber prefixes keys with), or
      # nil when Tasker is not loaded or has none. Never OTEL_SERVICE_NAME.
      def tasker_service_name
        return nil unless defined?(::Tasker) && ::Tasker.respond_to?(:configuration)

        telemetry = ::Tasker.configuration.telemetry
        name = telemetry.respond_to?(:service_name) ? telemetry.service_name : nil
        name.is_a?(String) && !name.strip.empty? ? name : nil
      rescue StandardError
        nil
      end

      # Makes Tasker's service name (else "tasker") the prefix used while the
      # `attribute_prefix` setting is nil.
      def sync_attribute_prefix!
        Native.set_default_attribute_prefix(tasker_service_name || "tasker")
      end

      # The filters in force: `TaskerTraceNative.lifecycle_filter_parameters`
      # when set, else the Rails application's `filter_parameters`, else none.
      def filter_parameters
        return @filter_parameters unless @filter_parameters.nil?

        app = defined?(::Rails) && ::Rails.respond_to?(:application) ? ::Rails.application : nil
        app ? Array(app.config.filter_parameters) : []
      end

      def filter_parameters=(filters)
        filters = filters.nil? ? nil : Array(filters)
        unless filters.nil? || filters.all? { |f| f.is_a?(String) || f.is_a?(Symbol) || f.is_a?(Regexp) || f.respond_to?(:call) }
          raise ArgumentError, "lifecycle_filter_parameters must be an Array of Strings, Symbols, Regexps " \
                               "or Procs, or nil (got #{filters.inspect[0, 80]})"
        end
        invalid = filters&.find { |f| (f.is_a?(String) || f.is_a?(Symbol)) && !f.to_s.valid_encoding? }
        if invalid
          raise ArgumentError, "lifecycle_filter_parameters: #{invalid.inspect[0, 80]} is not valid " \
                               "#{invalid.to_s.encoding}"
        end
        previous = @filter_parameters
        @filter_parameters = filters&.dup&.freeze
        begin
          sync_filters!
        rescue StandardError
          # The filters in force stay as they were, here and natively.
          @filter_parameters = previous
          sync_filters!
          raise
        end
        @filter_parameters
      end

      # Decides, once per payload key name (the known keys and
      # `lifecycle_attributes`), whether its values are exported as
      # "[FILTERED]", and hands the decisions to the native tracer, with the
      # String and Symbol filters for keys nested in Hash values (matched
      # natively) and whether Regexp or Proc filters must be asked about
      # those (see filtered_path?): no filtering happens per event in Ruby
      # unless a nested key meets such a filter for the first time.
      def sync_filters!
        names = Native::LIFECYCLE_PAYLOAD_KEYS | Native.settings.fetch(:lifecycle_attributes)
        filters = filter_parameters
        filtered = filtered_names(names, filters)
        Native.set_lifecycle_filters(names.to_h { |n| [n, filtered.include?(n)] })
        strings = filters.select { |f| f.is_a?(String) || f.is_a?(Symbol) }.map(&:to_s)
        Native.set_lifecycle_value_filters(strings, strings.size < filters.size)
        filtered
      end

      # The names among `names` that `filters` match (see filtered_path?).
      def filtered_names(names, filters)
        return [] if filters.empty?

        names.select { |n| filtered_path?([n], filters) }
      end

      # Whether `filters` match the key at the end of `keys` (the keys from
      # the payload key down, ["order", "customer", "card"]), as Rails'
      # ActiveSupport::ParameterFilter filters a nested Hash: through it
      # where it is loaded, else by the same rules: Strings and Symbols
      # match the key as case-insensitive substrings, or the dotted path
      # when they contain a dot; Regexps match the key, or the dotted path
      # when their source has an escaped dot; a Proc is called with the key
      # and a probe value, and filters when it changes the probe. The
      # extension calls this (once per path and thread) for nested keys the
      # String filters leave, when Regexp or Proc filters are in force.
      # Tasker's payload keys are Symbols and the extension asks with
      # Strings: a Proc is asked about both (either filtering filters). When
      # a filter raises, each is asked alone: one that raises on both forms
      # of the key filters it; one that raises on one form only (a Proc
      # written for Strings, `k.include?`, given a Symbol) is answered by
      # the other, and never hides another filter's answer.
      def filtered_path?(keys, filters = filter_parameters)
        return false if filters.empty?

        begin
          return true if filtered_as?(keys, filters)
          return false unless filters.any? { |f| f.respond_to?(:call) }

          filtered_as?(symbols(keys), filters)
        rescue StandardError
          filtered_alone?(keys, filters)
        end
      end

      private

      # The names subscribed on `publisher` so far (see SUBSCRIBED).
      def subscribed_names(publisher)
        return @frozen_publishers[publisher] ||= {} if publisher.frozen?

        publisher.instance_variable_get(SUBSCRIBED) || publisher.instance_variable_set(SUBSCRIBED, {})
      end

      def filtered_alone?(keys, filters)
        filters.any? do |filter|
          as_string = answer_alone(keys, filter)
          next true if as_string == true
          next false unless filter.respond_to?(:call)

          as_symbol = answer_alone(symbols(keys), filter)
          as_symbol == true || (as_string == :raised && as_symbol == :raised)
        end
      end

      # true, false, or :raised.
      def answer_alone(keys, filter)
        filtered_as?(keys, [filter])
      rescue StandardError
        :raised
      end

      def symbols(keys)
        keys.map { |k| k.to_s.to_sym }
      end

      def filtered_as?(keys, filters)
        if defined?(::ActiveSupport::ParameterFilter)
          probe = keys.reverse.inject(+"probe") { |inner, key| { key => inner } }
          value = parameter_filter(filters).filter(probe)
          keys.each { |key| value = value[key] if value.is_a?(Hash) }
          value != "probe"
        else
          path = keys.join(".")
          filters.any? { |f| rule_match?(f, keys.last, path) }
        end
      end

      # The registered lifecycle names the trace model uses to open, merge
      # and close spans (Native::LIFECYCLE_SPAN_EVENT_NAMES); with the
      # `lifecycle_workflow_events` setting, every registered lifecycle name
      # (workflow.*, transitions, enqueueing become span events).
      def candidates(publisher)
        everything = Native.settings.fetch(:lifecycle_workflow_events)
        ids = registered_event_ids(publisher)
        return everything ? Native::LIFECYCLE_EVENT_NAMES : Native::LIFECYCLE_SPAN_EVENT_NAMES if ids.nil?

        ids.select do |id|
          next false unless (id.is_a?(String) || id.is_a?(Symbol)) && NAMESPACES.match?(id.to_s)

          everything || Native::LIFECYCLE_SPAN_EVENT_NAMES.include?(id.to_s)
        end
      end

      # A publisher that does not know a name raises: that name is skipped.
      # Every name gets the one LISTENER, which takes the context path when
      # it is in use.
      def subscribed?(publisher, id)
        publisher.subscribe(id, &LISTENER)
        true
      rescue StandardError
        false
      end

      # An ActiveSupport::ParameterFilter for `filters`, kept while they stay.
      def parameter_filter(filters)
        cached = @parameter_filter
        return cached.last if cached && cached.first == filters

        made = ::ActiveSupport::ParameterFilter.new(filters)
        @parameter_filter = [filters.dup.freeze, made]
        made
      end

      def rule_match?(filter, key, path)
        case filter
        when Regexp then filter.match?(filter.source.include?("\\.") ? path : key.to_s)
        when String, Symbol
          text = filter.to_s
          (text.include?(".") ? path : key.to_s).downcase.include?(text.downcase)
        else
          probe = +"probe"
          filter.arity == 3 ? filter.call(key.dup, probe, {}) : filter.call(key.dup, probe)
          probe != "probe"
        end
      end
    end
  end

  class << self
    # Subscribes the native lifecycle tracer to `publisher`'s lifecycle
    # events (Tasker::Events::Publisher.instance by default) and returns the
    # names it subscribed to. Names the publisher has not registered are
    # skipped; a second call on the same publisher adds nothing.
    def trace_lifecycle!(publisher = nil)
      publisher ||= default_publisher
      Lifecycle.subscribe(publisher)
    end

    # Records one lifecycle event directly (what the subscription does):
    # true when the tracer took it, false when refused (a payload that is not
    # a Hash, a name that is neither a String nor a Symbol). Never raises for
    # its input.
    def record_lifecycle_event(name, payload = {})
      Native.record_lifecycle_event(name, payload)
    end

    # Counters and sizes of the lifecycle tracer (see the README).
    def lifecycle_stats
      Announcer.drain
      Native.lifecycle_stats
    end

    # The finished runs waiting for export (and the open ones with
    # `include_open: true`) as plain Hashes, oldest first; removes nothing.
    #
    #   [{trace_id: "<32 hex>", task_id: 42 (or a String id),
    #     end: "completed" | "failed" | "pending" | "cancelled" | "resolved_manually" | "open",
    #     spans: [                        # the root first, then one per step attempt
    #       {span_id: "<16 hex>", parent_span_id: nil | "<16 hex>",
    #        name: "tasker.task.execution" | "tasker.step.execution",
    #        start_time: 1796116863015194624,   # Unix nanoseconds (the OTLP export's numbers)
    #        end_time: Integer | nil,           # nil while open
    #        duration: 0.000105066 | nil,       # Float seconds
    #        status: {code: "OK" | "ERROR" | "UNSET", message: nil | String},
    #        attributes: {"tasker.task_id" => 42, "tasker.task_name" => "order", ...},
    #        events: [{name: "observability.step.backoff", time: Integer, attributes: {...}}],
    #        links: [{trace_id: "<32 hex>", span_id: "<16 hex>"}]}]}]   # root: the task's previous run
    #
    # Attribute keys are prefixed with `<attribute_prefix>.`: the setting, else
    # Tasker's `config.telemetry.service_name`, else `tasker.` (never the
    # OpenTelemetry service name, which names the resource only).
    def lifecycle_runs(include_open: false)
      Lifecycle.sync_attribute_prefix!
      Native.lifecycle_runs(include_open)
    end

    # The run with `trace_id` (waiting for export, or open) drawn as a
    # waterfall, as the console exporter draws it (`exporter = :console`):
    # a header line, one row per span with a bar on the run's time axis, the
    # error message under a failed span. nil when no such run is held.
    def lifecycle_waterfall(trace_id, color: false)
      Native.lifecycle_waterfall(trace_id, color)
    end

    # The head sampler in force, described as OpenTelemetry SDKs describe
    # theirs: "AlwaysOnSampler", "TraceIdRatioBased{0.100000}",
    # "ParentBased{root=AlwaysOffSampler}" (see docs/sampling.md).
    def sampler
      Native.sampler
    end

    # Forgets every run and zeroes the lifecycle counters.
    def lifecycle_reset!
      Native.lifecycle_reset!
    end

    # Filters for lifecycle attributes, replacing Rails' filter_parameters
    # for them (nil: Rails' again).
    def lifecycle_filter_parameters
      Lifecycle.filter_parameters
    end

    def lifecycle_filter_parameters=(filters)
      Lifecycle.filter_parameters = filters
    end

    # Called by the extension when record_lifecycle_event fails inside.
    def log_lifecycle_error(event_name, message)
      logger = defined?(::Rails) && ::Rails.respond_to?(:logger) ? ::Rails.logger : nil
      logger&.error("TaskerTraceNative lifecycle tracer error recording #{event_name}: #{message}")
      nil
    end

    private

    def default_publisher
      unless defined?(::Tasker::Events::Publisher) && ::Tasker::Events::Publisher.respond_to?(:instance)
        raise ArgumentError, "trace_lifecycle! needs a publisher: Tasker::Events::Publisher is not loaded"
      end

      ::Tasker::Events::Publisher.instance
    end
  end
end
