# frozen_string_literal: true

# App-side scenarios of connected traces, in a fresh process: on the real
# OpenTelemetry Ruby API and SDK (in-memory exporter) when OTEL_RUBY_SOURCE
# names their sources, otherwise on the API stand-in (spec/support) with a
# small recording tracer standing in for the SDK. Prints one JSON line: per
# scenario, the spans the app's tracer recorded, the gem's runs, and whether
# the app's context was left as it was. Run by app_scenarios_spec.rb.
require "json"

source = ENV.fetch("OTEL_RUBY_SOURCE", nil)
real = source && File.directory?(File.join(source, "api"))
errors = []
if real
  %w[api sdk common registry semantic_conventions].each { |dir| $LOAD_PATH.unshift(File.join(source, dir, "lib")) }
  require "opentelemetry-sdk"
  exporter = OpenTelemetry::SDK::Trace::Export::InMemorySpanExporter.new
  OpenTelemetry::SDK.configure do |c|
    c.logger = Logger.new(File::NULL)
    c.error_handler = ->(exception: nil, message: nil) { errors << (exception&.message || message) }
    c.add_span_processor(OpenTelemetry::SDK::Trace::Export::SimpleSpanProcessor.new(exporter))
  end
  tracer = OpenTelemetry.tracer_provider.tracer("app")
  in_span = ->(name, &block) { tracer.in_span(name, &block) }
  recorded = lambda do
    exporter.finished_spans.map do |s|
      parent = s.hex_parent_span_id
      { name: s.name, trace_id: s.hex_trace_id, span_id: s.hex_span_id,
        parent: parent == "0000000000000000" ? nil : parent }
    end
  end
else
  require_relative "../support/open_telemetry_stand_in"
  OpenTelemetryStandIn.install!
  spans = []
  trace = OpenTelemetry::Trace
  in_span = lambda do |name, &block|
    parent = trace.current_span.context
    ids = { trace_id: parent.valid? ? parent.trace_id : trace.generate_trace_id, span_id: trace.generate_span_id }
    span = trace.non_recording_span(trace::SpanContext.new(**ids, trace_flags: trace::TraceFlags::SAMPLED))
    begin
      trace.with_span(span) { block.call(span) }
    ensure
      spans << { name: name, trace_id: span.context.hex_trace_id, span_id: span.context.hex_span_id,
                 parent: parent.valid? ? parent.hex_span_id : nil }
    end
  end
  recorded = -> { spans }
end

require "tasker_trace_native"
require_relative "../support/stand_in_publisher"

publisher = StandInPublisher.new
TaskerTraceNative.trace_lifecycle!(publisher)
publish = ->(name, **payload) { publisher.publish(name, **payload) }
stack = -> { OpenTelemetry::Context.send(:stack).dup }
results = {}

# Runs the scenario `name`: what it returns, and whether the publishing
# thread's context stack is what it was before.
scenario = lambda do |name, &block|
  before = stack.call
  out = block.call
  after = stack.call
  results[name] = { out: out, context_kept: after.size == before.size && after.zip(before).all? { |a, b| a.equal?(b) } }
end

# A task run inline inside another task's step, in the same thread: the
# outer step's calls after the inner run ended are still its children.
scenario.call(:nested) do
  publish.call("task.start_requested", task_id: 1, task_name: "outer", to_state: "in_progress")
  publish.call("step.execution_requested", task_id: 1, step_id: 10, step_name: "call_inner")
  publish.call("step.before_handle", task_id: 1, step_id: 10)
  in_span.call("before inner") { nil }
  publish.call("task.start_requested", task_id: 2, task_name: "inner", to_state: "in_progress")
  publish.call("step.execution_requested", task_id: 2, step_id: 20, step_name: "work")
  in_span.call("inner call") { nil }
  publish.call("step.completed", task_id: 2, step_id: 20)
  in_span.call("inner orchestration") { nil }
  publish.call("task.completed", task_id: 2)
  in_span.call("after inner") { nil }
  publish.call("step.completed", task_id: 1, step_id: 10)
  publish.call("task.completed", task_id: 1)
  in_span.call("after outer") { nil }
  nil
end

# A step thread whose context is cleared between steps (as code that resets
# the context at a job's boundary does): its next steps' calls are still
# their children.
scenario.call(:cleared) do
  publish.call("task.start_requested", task_id: 3, task_name: "cleared", to_state: "in_progress")
  thread_stack = Thread.new do
    [31, 32, 33].each do |step|
      publish.call("step.execution_requested", task_id: 3, step_id: step, step_name: "s#{step}")
      in_span.call("call of #{step}") { nil }
      publish.call("step.completed", task_id: 3, step_id: step)
      OpenTelemetry::Context.clear if step == 31
    end
    stack.call.size
  end.value
  publish.call("task.completed", task_id: 3)
  thread_stack
end

# A step's handler carries its context into another thread (a future's, as
# the concurrent-ruby instrumentation does): the work there is the step's
# child, whether the step runs in the run's thread, in a thread of its own
# (the thread's span), or in a thread the run's root was carried into.
carry = lambda do |&work|
  context = OpenTelemetry::Context.current
  Thread.new { OpenTelemetry::Context.with_current(context, &work) }.value
end
scenario.call(:carried) do
  in_span.call("fan-out job") do
    publish.call("task.start_requested", task_id: 4, task_name: "fan_out", to_state: "in_progress")
    publish.call("step.execution_requested", task_id: 4, step_id: 41, step_name: "inline")
    carry.call { in_span.call("carried from 41") { nil } }
    publish.call("step.completed", task_id: 4, step_id: 41)
    Thread.new do
      publish.call("step.execution_requested", task_id: 4, step_id: 42, step_name: "own_thread")
      carry.call { in_span.call("carried from 42") { nil } }
      publish.call("step.completed", task_id: 4, step_id: 42)
      # Between steps, what it carries is what was current below its span.
      carry.call { in_span.call("carried between steps") { nil } }
    end.join
    carry.call do
      publish.call("step.execution_requested", task_id: 4, step_id: 43, step_name: "carried_root")
      carry.call { in_span.call("carried from 43") { nil } }
      publish.call("step.completed", task_id: 4, step_id: 43)
    end
    carry.call { in_span.call("carried from the run") { nil } }
    publish.call("task.completed", task_id: 4)
  end
  nil
end

puts JSON.generate(
  real: real ? true : false, spans: recorded.call, runs: TaskerTraceNative.lifecycle_runs,
  results: results, errors: errors.map(&:to_s) + (real ? [] : OpenTelemetry.errors.map(&:to_s))
)
