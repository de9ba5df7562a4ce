# frozen_string_literal: true

module TaskerTraceNative
  # The one voice for warnings about settings and variables (an unusable
  # OTEL_* value, a timeout that is likely meant in seconds, ...). Every
  # warning goes through `warn`, native ones included: each distinct message
  # is said once per process, to `Rails.logger` when Rails is loaded and has
  # one, else to stderr, and is listed in `exporter_stats[:warnings]`. The
  # extension calls `emit` on the Ruby thread that met the warning (the one
  # that read the environment), never from a native thread.
  module Warnings
    PREFIX = "tasker_trace_native: "

    class << self
      # Gives a warning (once per distinct message).
      def warn(message)
        Native.setting_warning(message.to_s)
      end

      # Says one warning where the application looks: called by the extension.
      def emit(message)
        logger = rails_logger
        if logger
          logger.warn("#{PREFIX}#{message}")
        else
          Kernel.warn("#{PREFIX}#{message}")
        end
        nil
      end

      private

      def rails_logger
        return nil unless defined?(::Rails) && ::Rails.respond_to?(:logger)

        ::Rails.logger
      end
    end
  end
end
