# frozen_string_literal: true

# tasker_trace_native: Tasker's Tasker::Telemetry::TraceBackend, in Rust.
#
#   require "tasker_trace_native"
#   Tasker::Telemetry::TraceBackend.instance.handle_event("task.started", task_id: 1)

require_relative "tasker_trace_native/version"
require_relative "tasker_trace_native/error"
require_relative "tasker_trace_native/native"
require_relative "tasker_trace_native/warnings"
require_relative "tasker_trace_native/configuration"
require_relative "tasker_trace_native/backend_methods"
require_relative "tasker_trace_native/single_instance"
require_relative "tasker_trace_native/trace_backend"
require_relative "tasker_trace_native/lifecycle"
require_relative "tasker_trace_native/fork_hook"
require_relative "tasker_trace_native/open_telemetry_span"
require_relative "tasker_trace_native/open_telemetry_thread_span"
require_relative "tasker_trace_native/context_listener"
require_relative "tasker_trace_native/context_detach_guard"
require_relative "tasker_trace_native/sdk_resource"
require_relative "tasker_trace_native/exporter"
require_relative "tasker_trace_native/announcer"

# The OTEL_* variables are read at the first use (an export, a push, an
# event, a flush) and at each `configure`, not here: see docs/configuration.md.
TaskerTraceNative.install!
TaskerTraceNative::Lifecycle.sync_filters!
TaskerTraceNative::Exporter.arm_at_exit

# Rails integration: now if Rails is loaded, else when Rails loads later.
if defined?(Rails::Railtie)
  require_relative "tasker_trace_native/railtie"
else
  require_relative "tasker_trace_native/railtie_loader"
  TaskerTraceNative::RailtieLoader.arm
end

