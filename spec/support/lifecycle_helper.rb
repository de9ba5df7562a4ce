# frozen_string_literal: true

# Shared by the lifecycle specs: a fresh tracer with default settings for
# every example (of the whole suite, so no run is left over for another
# spec's export), a stand-in publisher the tracer is subscribed to, and ways
# to look into `lifecycle_runs`.
module LifecycleHelper
  PREFIX = "tasker."

  DEFAULTS = {
    lifecycle_ttl: 3600, lifecycle_max_open_runs: 10_000, lifecycle_max_spans_per_run: 1_000,
    lifecycle_max_finished_runs: 10_000, lifecycle_attributes: [],
    # The model specs place workflow.* and other span events: subscribe to them.
    lifecycle_workflow_events: true
  }.freeze

  def self.reset!
    TaskerTraceNative.lifecycle_filter_parameters = nil
    TaskerTraceNative.configure do |c|
      DEFAULTS.each { |k, v| c.public_send(:"#{k}=", v) }
    end
    TaskerTraceNative.lifecycle_reset!
  end

  # The event stream builders (TaskerEventStream).
  def ts
    TaskerEventStream
  end

  def publisher
    @publisher ||= StandInPublisher.new.tap { |p| TaskerTraceNative.trace_lifecycle!(p) }
  end

  def publish(name, payload = {})
    publisher.publish(name, payload)
  end

  def play(events)
    TaskerEventStream.play(publisher, events)
  end

  def runs(include_open: false)
    TaskerTraceNative.lifecycle_runs(include_open: include_open)
  end

  def only_run(include_open: false)
    all = runs(include_open: include_open)
    expect(all.size).to eq(1), "expected one run, got #{all.size}: #{all.map { |r| r[:task_id] }.inspect}"
    all.first
  end

  def root(run)
    run[:spans].first
  end

  def attempts(run)
    run[:spans].drop(1)
  end

  # A span's (or event's) attributes without the service-name prefix.
  def attrs(span)
    span[:attributes].transform_keys { |k| k.delete_prefix(PREFIX) }
  end

  def event_names(span)
    span[:events].map { |e| e[:name] }
  end

  def stats
    TaskerTraceNative.lifecycle_stats
  end

  def configure_lifecycle(**settings)
    TaskerTraceNative.configure do |c|
      settings.each { |k, v| c.public_send(:"#{k}=", v) }
    end
  end

  # A run without its ids and clock readings (durations included), NaN
  # made comparable: two ways of reading the same events compare equal.
  def comparable(run)
    spans = run[:spans].map do |s|
      s.slice(:name, :status).merge(
        attributes: s[:attributes].reject { |k, _| k.end_with?(".execution_duration") },
        parent: s[:parent_span_id] ? run[:spans].index { |p| p[:span_id] == s[:parent_span_id] } : nil,
        events: s[:events].map { |e| [e[:name], e[:attributes]] },
        open: s[:end_time].nil?
      )
    end
    nan_free({ task_id: run[:task_id], end: run[:end], spans: spans })
  end

  # NaN made comparable (NaN == NaN is false).
  def nan_free(value)
    case value
    when Float then value.nan? ? :nan : value
    when Array then value.map { |v| nan_free(v) }
    when Hash then value.transform_values { |v| nan_free(v) }
    else value
    end
  end
end

RSpec.configure do |config|
  config.include LifecycleHelper, file_path: %r{spec/lifecycle/}
  config.before { LifecycleHelper.reset! }
end
