# frozen_string_literal: true

module TaskerTraceNative
  # OpenTelemetry export (OTLP/HTTP JSON). The work is native: selection,
  # encoding and the network wait run in Rust with the GVL released.
  module BackendMethods
    # An OTLP/HTTP JSON ExportTraceServiceRequest (a String) for the finished
    # traces and generic events; open traces too with `include_open: true`.
    # With `drain: true` what was exported is removed from the store in the
    # same step, so each trace is exported exactly once even with writers
    # running.
    def export_otlp(drain: false, include_open: false)
      Native.export_otlp(drain, include_open)
    end

    # Drains the finished traces and generic events and POSTs them to
    # `<endpoint>/v1/traces` (Content-Type: application/json), retrying
    # 429/502/503/504 with backoff and Retry-After within `timeout` seconds.
    # Without `endpoint:` the OTEL_EXPORTER_OTLP_TRACES_ENDPOINT /
    # OTEL_EXPORTER_OTLP_ENDPOINT variables apply, else
    # http://localhost:4318/v1/traces; `headers:` are added to those of
    # OTEL_EXPORTER_OTLP_HEADERS. Returns `{ sent:, status:, error: }`: `sent`
    # counts the traces and generic events delivered; on failure they are back
    # in the store, `sent` is 0 and `error` says why.
    def push_otlp(endpoint: nil, headers: {}, timeout: 10)
      Native.push_otlp(endpoint, headers, timeout)
    end
  end
end
