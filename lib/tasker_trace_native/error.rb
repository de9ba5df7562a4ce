# frozen_string_literal: true

module TaskerTraceNative
  # What the extension raises for an internal failure (a Rust panic caught
  # at the boundary, an OTLP encoding failure). Defined here rather than in
  # Rust; the extension looks it up when it raises.
  class Error < StandardError; end
end
