# frozen_string_literal: true

module TaskerTraceNative
  # The background exporter (off by default). Turned on by
  # `TaskerTraceNative.configure { |c| c.exporter = :otlp }`,
  # `config.tasker_trace_native.exporter = :otlp` or OTEL_TRACES_EXPORTER=otlp,
  # it is a native thread that sends finished traces to an OTLP/HTTP
  # collector every `export_schedule_delay` seconds without taking the GVL.
  # The thread starts at the first event recorded in each process (never at
  # load or boot), so a forking server's workers each start their own.
  module Exporter
    # How long the at_exit shutdown waits for the last export, in seconds.
    AT_EXIT_TIMEOUT = 5

    class << self
      # Registers the at_exit shutdown once, at load: whether the exporter is
      # on is known only once the environment is read (at the first use), so
      # the handler asks then. Forked children inherit it.
      def arm_at_exit
        return if defined?(@armed)

        @armed = true
        at_exit { Exporter.shutdown_at_exit }
      end

      # The at_exit handler: the last export, bounded by AT_EXIT_TIMEOUT. A
      # failure is reported on stderr (the traces are lost with the process).
      def shutdown_at_exit
        return unless Native.exporter_enabled?

        result = TaskerTraceNative.shutdown(timeout: AT_EXIT_TIMEOUT)
        return unless result[:error] && (result[:failed].positive? || result[:error].start_with?("timed out"))

        warn "tasker_trace_native: #{lost_at_exit(result)} not exported at exit, lost with the process: " \
             "#{result[:error].sub(/; what was not delivered waits in the store/, "")}"
      end

      # How many finished traces the process still held after the last
      # export, as words ("3 traces"); "traces" when that cannot be read.
      def lost_at_exit(result)
        held = [result[:failed], TaskerTraceNative.exporter_stats[:queued].to_i].max
        held.positive? ? "#{held} trace#{"s" unless held == 1}" : "traces"
      rescue StandardError
        "traces"
      end
    end
  end

  class << self
    # Exports everything finished now and waits for it (at most `timeout`
    # seconds, with the GVL released): `{sent:, failed:, error:}`. `sent`
    # counts the traces delivered while it waited; `failed` those the last
    # export could not deliver (they wait in the store for the next one).
    # Call it before `exit!` (Resque's forked jobs), which skips at_exit.
    # With the exporter off it does nothing: `{sent: 0, failed: 0, error: nil}`.
    def flush(timeout: 5)
      Native.exporter_flush(timeout)
    ensure
      Announcer.drain
    end

    # Flushes, then stops the exporter thread of this process (at most
    # `timeout` seconds; an export still in flight then is abandoned).
    # Registered with at_exit when the exporter is on.
    def shutdown(timeout: 5)
      Native.exporter_shutdown(timeout)
    ensure
      Announcer.drain
    end

    # The exporter of this process: `enabled`, `running`, `pid`, `exports`,
    # `failed_exports`, `exported_traces`, `exported_spans`, `retries`,
    # `rejected_traces` and `rejected_spans` (what the collector refused for
    # good: a 400, partial successes' rejected spans; never sent again),
    # `dropped_traces` (evicted before they could be exported), `queued`
    # (finished, waiting now), `inherited_discarded` (finished before a fork:
    # the parent's to export), `last_error`, `last_error_at`,
    # `next_attempt_at` (after failed exports, when the next attempt is due;
    # nil otherwise), `warnings` (every distinct warning about settings and
    # variables given in this process), `limit_cuts` (what each span limit
    # cut, counted at each encoding: `attribute_values`, `span_attributes`,
    # `span_events`, `span_links`, `event_attributes`, `link_attributes`),
    # `sampled_out` (traces and runs sampling left out: not drops) and
    # `kept_error_spans`, `kept_slow_spans`, `kept_retried_spans` (spans of
    # runs the head sampling left out that each keep rule brought back).
    # Before this process's first use, `enabled` says whether the environment
    # as it is now turns the exporter on.
    def exporter_stats
      Announcer.drain
      stats = Native.exporter_stats
      at_ns = stats.delete(:last_error_at_ns)
      next_ns = stats.delete(:next_attempt_at_ns)
      warnings = stats.delete(:warnings)
      cuts = stats.delete(:limit_cuts)
      stats.merge(last_error_at: at_ns && current_time_at(at_ns),
                  next_attempt_at: next_ns && current_time_at(next_ns), warnings: warnings, limit_cuts: cuts)
    end
  end
end
