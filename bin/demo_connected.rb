# frozen_string_literal: true

# `bin/demo --connected`: one connected trace, as a Tasker app gets it. A web
# request enqueues a job; the job runs the task (the run's root becomes the
# job span's child); the step runs in a future's thread and makes an HTTP
# call to a local server, which the HTTP client's span records as a child of
# the step span. Printed as a tree of every span of the trace, whoever made
# it, then what an unsampled parent does.
#
# With OTEL_RUBY_SOURCE naming the OpenTelemetry Ruby sources, it runs on the
# real API and SDK (in-memory exporter) with the Net::HTTP instrumentation;
# otherwise on the API stand-in from spec/support, with a small recording
# tracer standing in for the SDK and the instrumentation.
require "net/http"
require "socket"

module DemoConnected
  module_function

  def real_sdk?
    source = ENV.fetch("OTEL_RUBY_SOURCE", nil)
    source && File.directory?(File.join(source, "api"))
  end

  # The app's side: the SDK with Net::HTTP instrumentation, or the stand-in
  # with a recording tracer. Returns [in_span, http_get, finished_spans].
  def app_side
    real_sdk? ? real_app : stand_in_app
  end

  def real_app
    source = ENV.fetch("OTEL_RUBY_SOURCE")
    %w[api sdk common registry semantic_conventions instrumentation/base instrumentation/net_http].each do |dir|
      $LOAD_PATH.unshift(File.join(source, dir, "lib"))
    end
    require "opentelemetry-sdk"
    require "opentelemetry-instrumentation-net_http"
    exporter = OpenTelemetry::SDK::Trace::Export::InMemorySpanExporter.new
    OpenTelemetry::SDK.configure do |c|
      c.logger = Logger.new(File::NULL)
      c.service_name = "orders-app"
      c.use "OpenTelemetry::Instrumentation::Net::HTTP"
      c.add_span_processor(OpenTelemetry::SDK::Trace::Export::SimpleSpanProcessor.new(exporter))
    end
    tracer = OpenTelemetry.tracer_provider.tracer("demo")
    in_span = ->(name, &block) { tracer.in_span(name, &block) }
    spans = lambda do
      exporter.finished_spans.map do |s|
        parent = s.hex_parent_span_id
        { name: s.name, trace_id: s.hex_trace_id, span_id: s.hex_span_id,
          parent: parent == "0000000000000000" ? nil : parent, by: "SDK" }
      end
    end
    ["OpenTelemetry SDK #{OpenTelemetry::SDK::VERSION} + Net::HTTP instrumentation", in_span,
     ->(uri) { Net::HTTP.get(uri) }, spans]
  end

  def stand_in_app
    require_relative "../spec/support/open_telemetry_stand_in"
    OpenTelemetryStandIn.install!
    recorded = []
    trace = OpenTelemetry::Trace
    in_span = lambda do |name, &block|
      parent = trace.current_span.context
      ids = { trace_id: parent.valid? ? parent.trace_id : trace.generate_trace_id, span_id: trace.generate_span_id }
      # As the SDK's default sampler: follow the parent's sampled flag.
      sampled = parent.valid? ? parent.trace_flags.sampled? : true
      flags = sampled ? trace::TraceFlags::SAMPLED : trace::TraceFlags::DEFAULT
      span = trace.non_recording_span(trace::SpanContext.new(**ids, trace_flags: flags))
      if sampled
        recorded << { name: name, trace_id: span.context.hex_trace_id, span_id: span.context.hex_span_id,
                      parent: parent.valid? ? parent.hex_span_id : nil, by: "app" }
      end
      trace.with_span(span) { block.call(span) }
    end
    ["the OpenTelemetry API stand-in (spec/support) + a recording tracer", in_span,
     ->(uri) { in_span.call("HTTP GET") { Net::HTTP.get(uri) } }, -> { recorded }]
  end

  def serve
    server = TCPServer.new("127.0.0.1", 0)
    Thread.new do
      loop do
        client = server.accept
        while (line = client.gets) && line != "\r\n"; end
        client.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        client.close
      end
    end
    server.addr[1]
  end

  def tree(spans, out = $stdout)
    by_parent = spans.group_by { |s| s[:parent] }
    ids = spans.to_h { |s| [s[:span_id], s] }
    roots = spans.reject { |s| ids.key?(s[:parent]) }
    walk = lambda do |span, depth|
      out.puts format("%-44s %s  (%s)", "#{'   ' * depth}#{depth.zero? ? '' : '└─ '}#{span[:name]}", span[:span_id], span[:by])
      (by_parent[span[:span_id]] || []).each { |child| walk.call(child, depth + 1) }
    end
    roots.each { |r| walk.call(r, 0) }
  end

  def main
    mode, in_span, http_get, finished = app_side
    require "tasker_trace_native"
    require_relative "../spec/support/stand_in_publisher"
    port = serve
    publisher = StandInPublisher.new
    TaskerTraceNative.trace_lifecycle!(publisher)
    run = lambda do |task|
      publisher.publish("task.start_requested", task_id: task, task_name: "process_order", to_state: "in_progress")
      Thread.new do # the step runs in a future's thread
        publisher.publish("step.execution_requested", task_id: task, step_id: 7, step_name: "charge_payment")
        publisher.publish("step.before_handle", task_id: task, step_id: 7)
        http_get.call(URI("http://127.0.0.1:#{port}/charges"))
        publisher.publish("step.completed", task_id: task, step_id: 7)
      end.join
      publisher.publish("task.completed", task_id: task)
    end
    in_span.call("POST /orders") { in_span.call("OrderJob perform") { run.call(42) } }
    unsampled = OpenTelemetry::Trace.non_recording_span(
      OpenTelemetry::Trace::SpanContext.new(trace_flags: OpenTelemetry::Trace::TraceFlags::DEFAULT)
    )
    OpenTelemetry::Trace.with_span(unsampled) { run.call(43) }

    gem_spans = TaskerTraceNative.lifecycle_runs.flat_map do |r|
      r[:spans].map { |s| { name: s[:name], trace_id: r[:trace_id], span_id: s[:span_id], parent: s[:parent_span_id], by: "tasker_trace_native" } }
    end
    spans = finished.call + gem_spans
    puts "Connected traces, on #{mode}"
    puts
    spans.group_by { |s| s[:trace_id] }.each do |trace_id, in_trace|
      puts "trace #{trace_id}"
      tree(in_trace)
    end
    stats = TaskerTraceNative.lifecycle_stats
    puts
    puts "Task 43 ran under an unsampled parent: exported runs #{TaskerTraceNative.lifecycle_runs.size}, " \
         "sampled_out #{stats[:sampled_out]}, spans of its trace anywhere: " \
         "#{spans.count { |s| s[:trace_id] == unsampled.context.hex_trace_id }}"
  end
end

DemoConnected.main
