# frozen_string_literal: true

require "singleton"

module TaskerTraceNative
  # Ruby-side instance methods of the native backend. The native ones
  # (handle_event, export, traces, stats, reset!) are defined in Rust on the
  # same module.
  module BackendMethods
    # When the backend was created: an ActiveSupport::TimeWithZone where
    # `Time.zone` is set (what `Time.current` gives), else a Time.
    def created_at
      TaskerTraceNative.current_time_at(Native.created_at_ns)
    end
  end

  # Keeps `TraceBackend.instance` one object for the life of the process.
  # Tasker's own file says `include Singleton`, and including Singleton again
  # resets the class's instance: loaded after an instance exists (gem first, or
  # a second load), it would make `.instance` hand out a new object.
  module SingleInstance
    def instance
      @tasker_trace_native_instance ||= super
    end
  end

  class << self
    # Turns epoch nanoseconds into what `Time.current` would have given then.
    def current_time_at(epoch_ns)
      time = Time.at(epoch_ns / 1_000_000_000, epoch_ns % 1_000_000_000, :nanosecond)
      zone = Time.respond_to?(:zone) ? Time.zone : nil
      zone ? time.in_time_zone(zone) : time
    end

    # Called by the extension when handle_event fails inside: logs
    # "TraceBackend error handling <event_name>: <message>" where Rails.logger exists.
    def log_error(event_name, message)
      logger = defined?(::Rails) && ::Rails.respond_to?(:logger) ? ::Rails.logger : nil
      logger&.error("TraceBackend error handling #{event_name}: #{message}")
      nil
    end

    # Makes the native methods serve Tasker::Telemetry::TraceBackend, whether
    # Tasker's own pure-Ruby class is loaded before or after this gem, and for an
    # instance that already exists. Idempotent.
    def install!
      backend_class = define_trace_backend_class
      backend_class.prepend(BackendMethods) unless backend_class.ancestors.include?(BackendMethods)
      meta = backend_class.singleton_class
      meta.prepend(SingleInstance) unless meta.ancestors.include?(SingleInstance)
      # An instance made before the gem loaded is the one to keep.
      backend_class.instance if backend_class.instance_variable_get(:@singleton__instance__)
      backend_class
    end

    private

    def define_trace_backend_class
      tasker = Object.const_defined?(:Tasker, false) ? ::Tasker : Object.const_set(:Tasker, Module.new)
      telemetry = if tasker.const_defined?(:Telemetry, false)
                    tasker::Telemetry
                  else
                    tasker.const_set(:Telemetry, Module.new)
                  end
      klass = if telemetry.const_defined?(:TraceBackend, false)
                telemetry::TraceBackend
              else
                telemetry.const_set(:TraceBackend, Class.new)
              end
      klass.include(Singleton) unless klass.include?(Singleton)
      klass
    end
  end
end
