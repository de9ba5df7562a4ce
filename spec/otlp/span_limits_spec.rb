# frozen_string_literal: true

require "spec_helper"
require "json"
require_relative "support/helpers"

# OpenTelemetry's span limits: each variable (in a fresh process, read at
# the first export) and each setting, with a payload over it, and what was
# cut, in the OTLP dropped_*_count fields and in exporter_stats[:limit_cuts].
RSpec.describe "Span limits" do
  include OtlpSpecHelpers

  # A drop-in trace whose root span has 8 attributes (trace_key, task_id,
  # note, k1..k5) and 3 span events of 4 attributes each; and a task run
  # twice by the lifecycle tracer (its second root links to the first).
  RECORD = <<~RUBY
    b = Tasker::Telemetry::TraceBackend.instance
    b.handle_event("task.started", { task_id: 1, note: "abcdefghij", k1: 1, k2: 2, k3: 3, k4: 4, k5: 5 })
    3.times { |i| b.handle_event("step.before_x\#{i}", { task_id: 1, a: 1, b: 2, c: 3 }) }
    b.handle_event("task.completed", { task_id: 1 })
    2.times do
      TaskerTraceNative.record_lifecycle_event("task.start_requested", task_id: 7, to_state: "in_progress")
      TaskerTraceNative.record_lifecycle_event("task.completed", task_id: 7)
    end
  RUBY

  # What the export says about the drop-in root, its events and the
  # lifecycle's second root, and the cut counts.
  SUMMARY = <<~RUBY
    body = JSON.parse(b.export_otlp(protocol: "http/json"))
    spans = body.dig("resourceSpans", 0, "scopeSpans", 0, "spans")
    root = spans.find { |s| s["name"] == "task" }
    linked = spans.find { |s| s["links"] || s["droppedLinksCount"] }
    value = ->(key) { root["attributes"].find { |a| a["key"] == key }&.dig("value", "stringValue") }
    puts JSON.generate(
      attributes: root["attributes"].size, dropped_attributes: root["droppedAttributesCount"].to_i,
      events: root.fetch("events", []).size, dropped_events: root["droppedEventsCount"].to_i,
      event_attributes: root.fetch("events", []).map { |e| [e["attributes"].size, e["droppedAttributesCount"].to_i] },
      links: linked.fetch("links", []).size, dropped_links: linked["droppedLinksCount"].to_i,
      note: value.("tasker.note"), trace_key: value.("tasker.trace_key"),
      cuts: TaskerTraceNative.exporter_stats[:limit_cuts], config: TaskerTraceNative.config.to_h.slice(*ARGV.map(&:to_sym))
    )
  RUBY

  NO_CUTS = { attribute_values: 0, span_attributes: 0, span_events: 0, span_links: 0, event_attributes: 0,
              link_attributes: 0 }.freeze
  WHOLE = { attributes: 8, dropped_attributes: 0, events: 3, dropped_events: 0, event_attributes: [[4, 0]] * 3,
            links: 1, dropped_links: 0, note: "abcdefghij", trace_key: "task_1" }.freeze

  def summary(env, *settings)
    out, err, ok = fresh_ruby(env, "require 'json'; #{RECORD}; #{SUMMARY}", *settings)
    raise "child failed:\n#{out}\n#{err}" unless ok

    JSON.parse(out.lines.last, symbolize_names: true)
  end

  it "cuts nothing under the defaults" do
    result = summary({}, "attribute_value_length_limit", "attribute_count_limit", "span_event_count_limit")
    expect(result).to eq(WHOLE.merge(cuts: NO_CUTS, config: { attribute_value_length_limit: 8192,
                                                                attribute_count_limit: 128,
                                                                span_event_count_limit: 128 }))
  end

  {
    ["OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4", :attribute_value_length_limit] =>
      [{ note: "abcd", trace_key: "task" }, { attribute_values: 2 }],
    ["OTEL_ATTRIBUTE_COUNT_LIMIT", "3", :attribute_count_limit] =>
      [{ attributes: 3, dropped_attributes: 5, event_attributes: [[3, 1]] * 3 },
       { span_attributes: 5, event_attributes: 3 }],
    ["OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "2", :span_attribute_count_limit] =>
      [{ attributes: 2, dropped_attributes: 6, note: nil }, { span_attributes: 6 }],
    ["OTEL_SPAN_EVENT_COUNT_LIMIT", "1", :span_event_count_limit] =>
      [{ events: 1, dropped_events: 2, event_attributes: [[4, 0]] }, { span_events: 2 }],
    ["OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "1", :event_attribute_count_limit] =>
      [{ event_attributes: [[1, 3]] * 3 }, { event_attributes: 9 }],
    ["OTEL_SPAN_LINK_COUNT_LIMIT", "0", :span_link_count_limit] =>
      [{ links: 0, dropped_links: 1 }, { span_links: 1 }],
    # Links carry no attributes here: the limit is taken, and cuts nothing.
    ["OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "0", :link_attribute_count_limit] => [{}, {}]
  }.each do |(variable, value, setting), (changed, cut)|
    it "honours #{variable}=#{value}: the export is cut and the cuts are counted" do
      result = summary({ variable => value }, setting.to_s)
      expect(result).to eq(WHOLE.merge(changed, cuts: NO_CUTS.merge(cut), config: { setting => value.to_i }))
    end
  end

  it "takes the settings of the same meaning, which win over the variables" do
    script = <<~RUBY
      TaskerTraceNative.configure do |c|
        c.span_event_count_limit = 2
        c.attribute_value_length_limit = nil
        c.event_attribute_count_limit = 2
      end
      #{RECORD}
      #{SUMMARY}
    RUBY
    env = { "OTEL_SPAN_EVENT_COUNT_LIMIT" => "1", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT" => "3" }
    out, err, ok = fresh_ruby(env, "require 'json'; #{script}", "span_event_count_limit")
    expect(ok).to be(true), err
    result = JSON.parse(out.lines.last, symbolize_names: true)
    expect(result).to eq(WHOLE.merge(events: 2, dropped_events: 1, event_attributes: [[2, 2]] * 2,
                                     cuts: NO_CUTS.merge(span_events: 1, event_attributes: 4),
                                     config: { span_event_count_limit: 2 }))
  end

  it "refuses bad limit settings, naming them" do
    expect { TaskerTraceNative.configure { |c| c.span_event_count_limit = -1 } }
      .to raise_error(ArgumentError, "span_event_count_limit must be an Integer from 0 to 1000000000 (got -1)")
    expect { TaskerTraceNative.configure { |c| c.span_attribute_count_limit = "5" } }
      .to raise_error(ArgumentError, "span_attribute_count_limit must be an Integer from 0 to 1000000000, or nil " \
                                     '(the attribute_count_limit) (got "5")')
    expect { TaskerTraceNative.configure { |c| c.attribute_value_length_limit = 1.5 } }
      .to raise_error(ArgumentError, "attribute_value_length_limit must be an Integer from 0 to 1000000000, or " \
                                     "nil (no limit) (got 1.5)")
    expect { TaskerTraceNative.configure { |c| c.export_max_queue_size = 0 } }
      .to raise_error(ArgumentError, "export_max_queue_size must be an Integer from 1 to 1000000 (got 0)")
  end

  it "maps OTEL_BSP_MAX_QUEUE_SIZE onto export_max_queue_size" do
    out, err, ok = fresh_ruby({ "OTEL_BSP_MAX_QUEUE_SIZE" => "300" },
                              "puts TaskerTraceNative.config.export_max_queue_size")
    expect(ok).to be(true), err
    expect(out.strip).to eq("300")
    expect(TaskerTraceNative.config.export_max_queue_size).to eq(2048)
  end
end
