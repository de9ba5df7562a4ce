# frozen_string_literal: true

# A Tasker-shaped run against the real OpenTelemetry Ruby API and SDK, with
# the Net::HTTP instrumentation, loaded from a directory of their sources
# (OTEL_RUBY_SOURCE: api/, sdk/, common/, registry/, semantic_conventions/,
# instrumentation/base/ and instrumentation/net_http/, each with its lib/).
# Prints one JSON line: the SDK's exported spans, the gem's runs and
# resource, and what was left in the context. Run by real_sdk_spec.rb.
source = ENV.fetch("OTEL_RUBY_SOURCE")
%w[api sdk common registry semantic_conventions instrumentation/base instrumentation/net_http].each do |dir|
  $LOAD_PATH.unshift(File.join(source, dir, "lib"))
end
require "json"
require "net/http"
require "socket"
require "opentelemetry-api"
require "opentelemetry-sdk"
require "opentelemetry-instrumentation-net_http"

errors = []
exporter = OpenTelemetry::SDK::Trace::Export::InMemorySpanExporter.new
OpenTelemetry::SDK.configure do |c|
  c.logger = Logger.new(File::NULL)
  c.error_handler = ->(exception: nil, message: nil) { errors << (exception&.message || message) }
  c.use "OpenTelemetry::Instrumentation::Net::HTTP"
  c.add_span_processor(OpenTelemetry::SDK::Trace::Export::SimpleSpanProcessor.new(exporter))
end

require "tasker_trace_native"
require_relative "../support/stand_in_publisher"

# A local HTTP server: the step handler's external call.
server = TCPServer.new("127.0.0.1", 0)
port = server.addr[1]
Thread.new do
  loop do
    client = server.accept
    while (line = client.gets) && line != "\r\n"; end
    client.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    client.close
  end
end

publisher = StandInPublisher.new
TaskerTraceNative.trace_lifecycle!(publisher)
tracer = OpenTelemetry.tracer_provider.tracer("app")

# One run: the task in this (the job's) thread, the step in a future's thread
# making an HTTP call.
run = lambda do |task|
  publisher.publish("task.start_requested", task_id: task, task_name: "order", to_state: "in_progress")
  Thread.new do
    publisher.publish("step.execution_requested", task_id: task, step_id: task * 10, step_name: "charge")
    publisher.publish("step.before_handle", task_id: task, step_id: task * 10)
    Net::HTTP.get(URI("http://127.0.0.1:#{port}/charge/#{task}"))
    publisher.publish("step.completed", task_id: task, step_id: task * 10)
    # The thread's span stays, alone, and answers no span between steps.
    OpenTelemetry::Context.send(:stack).size == 1 && !OpenTelemetry::Trace.current_span.context.valid?
  end.value.then { |clean| raise "more than the thread's span left in the step thread" unless clean }
  publisher.publish("task.completed", task_id: task)
end

job_ids = {}
tracer.in_span("GET /orders", kind: :server) do |request|
  job_ids[:request] = request.context.hex_span_id
  tracer.in_span("OrderJob perform", kind: :consumer) do |job|
    job_ids[:job] = job.context.hex_span_id
    job_ids[:trace] = job.context.hex_trace_id
    run.call(1)
  end
end

# An unsampled parent (a request the app's sampler dropped).
unsampled = OpenTelemetry::Trace.non_recording_span(
  OpenTelemetry::Trace::SpanContext.new(trace_flags: OpenTelemetry::Trace::TraceFlags::DEFAULT)
)
OpenTelemetry::Trace.with_span(unsampled) { run.call(2) }
job_ids[:unsampled_trace] = unsampled.context.hex_trace_id

# As a Rails app with the ActiveRecord instrumentation has it: the state
# machine publishes a run's opening and its task.completed inside its
# transaction's span; the initializer's copy comes after the first.
tracer.in_span("TransactionJob perform", kind: :consumer) do |job|
  job_ids[:transaction_job] = job.context.hex_span_id
  tracer.in_span("ActiveRecord.transaction") do
    publisher.publish("task.start_requested", task_id: 3, task_name: "order", to_state: "in_progress")
  end
  publisher.publish("task.start_requested", task_id: 3, task_name: "order")
  tracer.in_span("orchestration query") { nil } # the run's own SQL
  tracer.in_span("ActiveRecord.transaction") { publisher.publish("task.completed", task_id: 3) }
  job_ids[:after_run] = OpenTelemetry::Trace.current_span.context.hex_span_id
end

# A job that raises with its run open, and the same thread's next job.
begin
  tracer.in_span("FailingJob perform", kind: :consumer) do
    publisher.publish("task.start_requested", task_id: 4, task_name: "order", to_state: "in_progress")
    raise "the job failed"
  end
rescue RuntimeError
  job_ids[:after_failure_clean] = OpenTelemetry::Context.send(:stack).empty?
end
tracer.in_span("NextJob perform", kind: :consumer) { nil }

spans = exporter.finished_spans.map do |s|
  { name: s.name, trace_id: s.hex_trace_id, span_id: s.hex_span_id,
    parent_span_id: s.hex_parent_span_id == "0000000000000000" ? nil : s.hex_parent_span_id }
end
settings = TaskerTraceNative::Native.settings
puts JSON.generate(
  spans: spans, app: job_ids, runs: TaskerTraceNative.lifecycle_runs, stats: TaskerTraceNative.lifecycle_stats,
  service_name: settings[:service_name], resource_attributes: settings[:resource_attributes],
  context_clean: OpenTelemetry::Context.send(:stack).empty?, errors: errors
)
