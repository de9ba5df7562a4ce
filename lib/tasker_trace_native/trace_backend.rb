# frozen_string_literal: true

require "singleton"

# Tasker::Telemetry::TraceBackend, served natively: `TaskerTraceNative.install!`
# prepends BackendMethods (and SingleInstance on its singleton class), and
# the extension calls `TaskerTraceNative.log_error` when handle_event fails
# inside.
module TaskerTraceNative
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
