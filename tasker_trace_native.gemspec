# frozen_string_literal: true

require_relative "lib/tasker_trace_native/version"

Gem::Specification.new do |spec|
  spec.name = "tasker_trace_native"
  spec.version = TaskerTraceNative::VERSION
  spec.authors = ["tasker_trace_native contributors"]
  spec.license = "MIT"
  spec.summary = "A native (Rust) drop-in for Tasker's Tasker::Telemetry::TraceBackend"
  spec.description = <<~DESC
    Tasker's in-memory trace backend reimplemented in Rust behind the same
    singleton API: faster, bounded, safe under threads, fork and hostile input,
    with microsecond durations and OpenTelemetry export (OTLP/HTTP, protobuf
    or JSON, over http or https).
  DESC
  spec.required_ruby_version = ">= 3.1"

  spec.files = Dir[
    "Cargo.toml", "Cargo.lock",
    "src/**/*.rs", "benches/**/*.rs", "tests/**/*.rs",
    "ext/tasker_trace_native/Cargo.toml", "ext/tasker_trace_native/src/**/*.rs",
    "lib/**/*.rb",
    "README.md", "LICENSE", "CHANGELOG.md"
  ]
  spec.require_paths = ["lib"]
  # RubyGems' own cargo builder compiles the binding crate at install time.
  spec.extensions = ["ext/tasker_trace_native/Cargo.toml"]
  spec.metadata["cargo_crate_name"] = "tasker_trace_native"
  spec.metadata["rubygems_mfa_required"] = "true"
end
