# frozen_string_literal: true

module TaskerTraceNative
  # Drops announced. The background exporter notes, natively, when traces
  # start being dropped (evicted while waiting for export) or exports start
  # failing: one line naming the cause and the count, at most one a minute,
  # and one when it recovers. The lines wait natively until the next event
  # recorded or the next call to `flush`, `shutdown`, `exporter_stats` or
  # `lifecycle_stats` in this process, which hands them here, on the app's
  # thread (never the exporter's): to `Rails.logger` (warn) when Rails is
  # loaded, else to standard error.
  #
  #   tasker_trace_native: 1,204 traces dropped in the last 60 s: HTTP 503 from http://…/v1/traces: … (retrying every 5 s)
  module Announcer
    class << self
      # Writes the lines waiting; returns them.
      def drain
        lines = Native.take_announcements
        lines.each { |line| say(line) }
        lines
      end

      private

      def say(line)
        logger = defined?(::Rails) && ::Rails.respond_to?(:logger) ? ::Rails.logger : nil
        if logger
          logger.warn(line)
        else
          warn(line)
        end
      end
    end
  end
end
