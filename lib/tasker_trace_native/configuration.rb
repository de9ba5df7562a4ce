# frozen_string_literal: true

module TaskerTraceNative
  # The backend's settings. `TaskerTraceNative.configure` yields a copy of the
  # settings in force; each assignment is checked at once (ArgumentError naming
  # the setting), and the whole set is put in force only when the block returns
  # without error.
  class Configuration
    SETTINGS = %i[max_traces max_spans_per_trace timestamp_precision service_name resource_attributes].freeze

    attr_reader(*SETTINGS)

    def self.in_force
      new(**Native.limits, **Native.otlp_settings)
    end

    def initialize(max_traces:, max_spans_per_trace:, timestamp_precision:, service_name:, resource_attributes:)
      self.max_traces = max_traces
      self.max_spans_per_trace = max_spans_per_trace
      self.timestamp_precision = timestamp_precision
      self.service_name = service_name
      self.resource_attributes = resource_attributes
    end

    SETTINGS.each do |setting|
      define_method(:"#{setting}=") do |value|
        Native.check_setting(setting, value)
        instance_variable_set(:"@#{setting}", value)
      end
    end

    # Puts these settings in force (validated again, all or nothing).
    def apply!
      # The OTLP settings first: they are checked again (a Hash can be changed
      # in place after it was assigned) before anything is put in force. The
      # limits are immutable values already checked when they were assigned.
      Native.apply_otlp_settings(service_name, resource_attributes)
      Native.apply_limits(max_traces, max_spans_per_trace, timestamp_precision)
      self
    end

    def to_h
      SETTINGS.to_h { |s| [s, public_send(s)] }
    end

    def ==(other)
      other.is_a?(Configuration) && other.to_h == to_h
    end

    def inspect
      "#<TaskerTraceNative::Configuration #{to_h.map { |k, v| "#{k}=#{v.inspect}" }.join(' ')}>"
    end
  end

  class << self
    # The settings in force (a frozen copy).
    def config
      Configuration.in_force.freeze
    end

    # Changes settings:
    #   TaskerTraceNative.configure { |c| c.max_traces = 50_000 }
    # A bad value raises ArgumentError naming the setting; then nothing changes.
    def configure
      raise ArgumentError, "TaskerTraceNative.configure needs a block" unless block_given?

      draft = Configuration.in_force
      yield draft
      draft.apply!
      config
    end
  end
end
