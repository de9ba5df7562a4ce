# frozen_string_literal: true

module TaskerTraceNative
  # The instance methods of the native backend, prepended into
  # Tasker::Telemetry::TraceBackend by `TaskerTraceNative.install!`. The
  # native ones (handle_event, export, traces, stats, reset!) are defined in
  # Rust on this module; the ones below are written in Ruby.
  module BackendMethods
    # When the backend was created: an ActiveSupport::TimeWithZone where
    # `Time.zone` is set (what `Time.current` gives), else a Time.
    def created_at
      TaskerTraceNative.current_time_at(Native.created_at_ns)
    end

    # OpenTelemetry export (OTLP/HTTP, protobuf or JSON). The work is native:
    # selection, encoding and the network wait run in Rust with the GVL
    # released.
    #
    # An OTLP/HTTP ExportTraceServiceRequest for the finished traces and
    # generic events; open traces too with `include_open: true`. With
    # `drain: true` what was exported is removed from the store in the same
    # step, so each trace is exported exactly once even with writers running.
    # `protocol: "http/json"` (the default) gives a UTF-8 JSON String,
    # `"http/protobuf"` a binary (ASCII-8BIT) String.
    def export_otlp(drain: false, include_open: false, protocol: "http/json")
      Native.export_otlp(drain, include_open, protocol)
    end

    # Drains the finished traces and generic events and POSTs them to the
    # collector, retrying 429/502/503/504 and connection failures with
    # backoff and Retry-After within `timeout`. Each argument left nil takes
    # its setting (`otlp_endpoint`, `otlp_timeout`, `otlp_protocol`, whose
    # defaults come from the OTEL_EXPORTER_OTLP_* variables); `headers:` are
    # sent on top of `otlp_headers`. `endpoint:` is a base URL
    # (`/v1/traces` is appended unless it ends so); `timeout:` is in seconds.
    #
    # Returns `{ sent:, status:, error:, rejected: }`: `sent` counts the
    # traces and generic events delivered, `rejected` the spans the collector
    # refused (partial success, with its message in `error`). What was not
    # delivered is back in the store. An interrupt (Thread#kill, Timeout,
    # Interrupt) returns at once, the traces back in the store; one cut off
    # while its request was on the wire may also have arrived.
    def push_otlp(endpoint: nil, headers: {}, timeout: nil, protocol: nil)
      Native.push_otlp(endpoint, headers, timeout, protocol)
    end
  end
end
