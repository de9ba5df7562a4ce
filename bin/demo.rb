# frozen_string_literal: true

# bin/demo's body, in two parts:
# 1. the lifecycle tracer (bin/demo_lifecycle.rb): Tasker's own published
#    events through a stand-in publisher, one trace per task run, and a
#    waterfall of one run;
# 2. the drop-in backend: a Tasker-like engine runs a few hundred
#    order-processing tasks (steps, retries, failures), publishing lifecycle
#    events through an EventRouter-style router that forwards them to
#    Tasker::Telemetry::TraceBackend.instance.handle_event, exactly as
#    Tasker's router calls the trace backend. Then it summarises what the
#    backend holds.
#
#   bin/demo                              # replay and summarise
#   bin/demo --otlp http://localhost:4318 # ... then send the traces to an OTLP/HTTP
#                                         # collector through the background exporter
#   bin/demo --connected                  # one connected trace: request, job, task,
#                                         # step, HTTP call (bin/demo_connected.rb)

require "json"
# `--otlp URL`: the collector's base URL (or its full /v1/traces URL).
otlp_url = nil
args = ARGV.dup
until args.empty?
  arg = args.shift
  case arg
  when "--connected"
    require_relative "demo_connected"
    exit
  when "--otlp" then otlp_url = args.shift
  when /\A--otlp=(.*)\z/ then otlp_url = Regexp.last_match(1)
  else abort "usage: bin/demo [--otlp URL | --connected]  (unknown argument #{arg.inspect})"
  end
  abort "bin/demo: --otlp takes an http:// or https:// URL (got #{otlp_url.inspect})" \
    if arg.start_with?("--otlp") && !otlp_url.to_s.match?(%r{\Ahttps?://\S+\z})
end
# The exporter takes its endpoint from OpenTelemetry's variable, read when
# the gem loads (below).
ENV["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_url if otlp_url
ENV.delete("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") if otlp_url

require "tasker_trace_native"
require_relative "demo_lifecycle"

# Routes each published event to the backends mapped for it, like Tasker's
# EventRouter: every lifecycle event goes to the trace backend.
class DemoEventRouter
  attr_reader :routed

  def initialize
    @routed = 0
  end

  def route_event(event_name, payload)
    @routed += 1
    Tasker::Telemetry::TraceBackend.instance.handle_event(event_name, payload)
  end
end

# A deterministic stand-in for Tasker's engine: tasks of a few kinds, each with
# a chain of steps; some steps fail and are retried, some tasks fail for good.
class DemoWorkflow
  TASK_KINDS = {
    "process_order" => %w[validate_cart reserve_inventory charge_payment create_shipment send_confirmation],
    "sync_inventory" => %w[fetch_supplier_feed diff_stock apply_adjustments],
    "refund_payment" => %w[load_order issue_refund notify_customer notify_accounting]
  }.freeze

  def initialize(router, tasks:, in_flight:, seed:)
    @router = router
    @tasks = tasks
    @in_flight = in_flight
    @rng = Random.new(seed)
    @step_ids = 0
  end

  # Interleaves the events of `in_flight` tasks at a time, as workers would.
  # Payloads are built before the clock starts; the timed part is routing.
  def run
    queue = (1..@tasks).map { |task_id| events_for(task_id) }
    active = queue.shift(@in_flight).map { |events| [events, 0] }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    until active.empty?
      active.each do |cursor|
        events, i = cursor
        name, payload = events[i]
        @router.route_event(name, payload)
        cursor[1] = i + 1
      end
      active.reject! { |events, i| i >= events.size }
      active << [queue.shift, 0] while active.size < @in_flight && !queue.empty?
    end
    Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
  end

  private

  def events_for(task_id)
    kind, steps = TASK_KINDS.to_a[task_id % TASK_KINDS.size]
    context = { customer_id: 10_000 + task_id, region: %w[eu-west us-east ap-south][task_id % 3],
                items: Array.new(1 + (task_id % 4)) { |i| "sku-#{task_id}-#{i}" }, priority: task_id % 5 }
    events = []
    events << ["task.initialize_requested", { task_id: task_id, task_name: kind }]
    events << ["task.started", { task_id: task_id, task_name: kind, context: context }]
    events << ["workflow.viable_steps_discovered", { task_id: task_id, step_count: steps.size }]
    failed = nil
    steps.each do |step_name|
      @step_ids += 1
      step = { task_id: task_id, workflow_step_id: @step_ids, step_name: step_name }
      attempts = @rng.rand < 0.12 ? 2 : 1
      attempts += 1 if @rng.rand < 0.03
      attempts.times do |attempt|
        events << ["step.before_handle", step.merge(attempt: attempt + 1)]
        last = attempt == attempts - 1
        if last && @rng.rand < 0.04
          failed = "#{step_name}: upstream returned 503"
          events << ["step.after_handle", step.merge(attempt: attempt + 1, error: failed)]
        elsif !last
          events << ["step.after_handle", step.merge(attempt: attempt + 1, error: "timeout, retrying")]
          events << ["step.retry_requested", step.merge(attempt: attempt + 1, backoff_seconds: 2**attempt)]
        else
          events << ["step.after_handle", step.merge(attempt: attempt + 1, duration_ms: @rng.rand(5..400))]
        end
      end
      break if failed
    end
    events << if failed
                ["task.failed", { task_id: task_id, task_name: kind, error: failed }]
              else
                ["task.completed", { task_id: task_id, task_name: kind }]
              end
    events
  end
end

puts "tasker_trace_native #{TaskerTraceNative::VERSION} demo (Ruby #{RUBY_VERSION})"
puts
LifecycleDemo.main
puts

tasks = Integer(ENV.fetch("DEMO_TASKS", "600"))
backend = Tasker::Telemetry::TraceBackend.instance
backend.reset!
if otlp_url
  # On, but holding everything until the flush below, so that the summary
  # still sees every trace in the store.
  TaskerTraceNative.configure do |c|
    c.exporter = :otlp
    c.export_schedule_delay = 3600
    c.export_max_batch_size = 1_000_000
  end
end
router = DemoEventRouter.new
workflow = DemoWorkflow.new(router, tasks: tasks, in_flight: 25, seed: 42)

elapsed = workflow.run

export = backend.export
traces = export[:traces]
task_traces = traces.select { |_, t| t.key?(:start_time) }
generic = traces.size - task_traces.size
statuses = task_traces.values.map { |t| t[:status] || "open" }.tally.sort.to_h
spans = task_traces.values.map { |t| t[:spans].size }
durations = task_traces.values.filter_map { |t| t[:duration] }
stats = backend.stats

puts "## The drop-in TraceBackend: the EventRouter's events, recorded as the pure-Ruby backend does"
puts
puts "replayed          #{router.routed} events from #{tasks} tasks through the router"
puts "events/second     #{(router.routed / elapsed).round.to_s.reverse.scan(/\d{1,3}/).join(',').reverse} " \
     "(#{(elapsed * 1e6 / router.routed).round(2)} µs an event, routing included)"
puts "traces            #{traces.size} (#{task_traces.size} task traces, #{generic} generic events)"
puts "statuses          #{statuses.map { |k, v| "#{k}: #{v}" }.join(', ')}"
puts "spans per trace   min #{spans.min}, mean #{(spans.sum.to_f / spans.size).round(1)}, max #{spans.max}"
puts "durations         min #{format('%.6f', durations.min)} s, max #{format('%.6f', durations.max)} s"
puts "stats             #{stats.slice(:events_handled, :rejected_events, :orphaned_events, :evicted_traces, :dropped_spans).map { |k, v| "#{k}=#{v}" }.join(' ')}"
puts
key, sample = task_traces.find { |_, t| t[:status] == "error" && t[:spans].size >= 4 } || task_traces.first
puts "one trace (#{key}, first 4 spans of #{sample[:spans].size}):"
shown = sample.merge(spans: sample[:spans].first(4))
puts JSON.pretty_generate(shown)

if otlp_url
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  result = TaskerTraceNative.flush(timeout: 30)
  took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
  stats = TaskerTraceNative.exporter_stats
  puts
  if result[:error]
    puts "otlp              #{result[:sent]} traces sent, #{result[:failed]} not delivered: #{result[:error]}"
  else
    puts "otlp              #{result[:sent]} traces (#{stats[:exported_spans]} spans) sent to #{otlp_url} " \
         "by the background exporter in #{(took * 1000).round} ms"
  end
  puts "exporter stats    #{stats.slice(:exports, :failed_exports, :retries, :dropped_traces, :queued).map { |k, v| "#{k}=#{v}" }.join(' ')}"
  exit(result[:error] ? 1 : 0)
end
