# frozen_string_literal: true

require "spec_helper"
require "json"
require "base64"
require_relative "support/helpers"

RSpec.describe "TraceBackend#export_otlp" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }

  def spans(json)
    JSON.parse(json).fetch("resourceSpans").flat_map { |rs| rs.fetch("scopeSpans") }.flat_map { |ss| ss.fetch("spans") }
  end

  def attr(span, key)
    found = span.fetch("attributes").find { |kv| kv["key"] == key }
    raise "attribute #{key} missing in #{span['attributes'].inspect}" unless found

    found.fetch("value")
  end

  def root_keys(json)
    spans(json).select { |s| s["parentSpanId"].nil? }.map { |s| attr(s, "tasker.trace_key")["stringValue"] }
  end

  def lifecycle(id, failed: false, **extra)
    backend.handle_event("task.started", { task_id: id, task_name: "order", **extra })
    backend.handle_event("step.before_handle", { task_id: id, workflow_step_id: id * 10 })
    backend.handle_event("step.after_handle", { task_id: id, workflow_step_id: id * 10 })
    if failed
      backend.handle_event("task.failed", { task_id: id, error: "card declined" })
    else
      backend.handle_event("task.completed", { task_id: id })
    end
  end

  it "builds its String safely under GC pressure", :gc_stress_safe, timeout: 300 do
    backend.handle_event("task.started", { task_id: 1, tags: %w[a b] })
    backend.handle_event("task.completed", { task_id: 1 })
    json = backend.export_otlp(drain: true)
    ok = json.start_with?('{"resourceSpans":[{"resource":{"attributes":[') && json.include?('"tasker.tags"')
    expect(ok).to be(true)
    expect(backend.stats[:active_traces]).to eq(0)
  end

  it "returns an OTLP/HTTP JSON ExportTraceServiceRequest with lowerCamelCase keys" do
    lifecycle(1)
    json = backend.export_otlp
    expect(json).to be_a(String)
    expect(json.encoding).to eq(Encoding::UTF_8)
    doc = JSON.parse(json)
    rs = doc.fetch("resourceSpans").first
    expect(rs.fetch("scopeSpans").first.fetch("scope")).to eq("name" => "tasker_trace_native",
                                                              "version" => TaskerTraceNative::VERSION)
    root, child = spans(json)
    expect(root).to include("name" => "task", "kind" => 1, "status" => { "code" => 1 })
    expect(root["traceId"]).to match(/\A[0-9a-f]{32}\z/)
    expect(root["spanId"]).to match(/\A[0-9a-f]{16}\z/)
    expect(root["traceId"]).not_to match(/\A0+\z/)
    expect(root["startTimeUnixNano"]).to match(/\A\d+\z/)
    expect(Integer(root["endTimeUnixNano"])).to be >= Integer(root["startTimeUnixNano"])
    expect(attr(root, "tasker.task_id")).to eq("intValue" => "1")
    expect(child).to include("name" => "step.handle", "parentSpanId" => root["spanId"], "traceId" => root["traceId"])
    expect(json).not_to include('"trace_id"', '"start_time_unix_nano"', '"int_value"')
  end

  it "maps the status and the error message of a failed trace" do
    lifecycle(2, failed: true)
    root = spans(backend.export_otlp).first
    expect(root["status"]).to eq("code" => 2, "message" => "card declined")
    expect(root["events"].last["name"]).to eq("task.failed")
  end

  it "maps Ruby values to OTLP AnyValues" do
    payload = {
      task_id: 3, big: 2**70, wide: 2**62, top: 2**63 - 1, low: -2**62 - 1, bottom: -2**63, past: 2**63, ratio: 0.5, nan: Float::NAN, inf: -Float::INFINITY, state: :pending,
      raw: "\xFF\x00a".b, flag: false, none: nil, "string_key" => "s",
      context: { customer: "c-1", items: [1, "two", nil], at: Time.utc(2026, 1, 2, 3, 4, 5) }
    }
    backend.handle_event("task.started", payload)
    backend.handle_event("task.completed", { task_id: 3 })
    root = spans(backend.export_otlp).first
    expect(attr(root, "tasker.big")).to eq("stringValue" => (2**70).to_s)
    # Past Ruby's Fixnums but within 64 bits: still an intValue.
    expect(%w[wide top low bottom].map { |k| attr(root, "tasker.#{k}") })
      .to eq([2**62, 2**63 - 1, -2**62 - 1, -2**63].map { |n| { "intValue" => n.to_s } })
    expect(attr(root, "tasker.past")).to eq("stringValue" => (2**63).to_s)
    expect(attr(root, "tasker.ratio")).to eq("doubleValue" => 0.5)
    expect(attr(root, "tasker.nan")).to eq("stringValue" => "NaN")
    expect(attr(root, "tasker.inf")).to eq("stringValue" => "-Infinity")
    expect(attr(root, "tasker.state")).to eq("stringValue" => "pending")
    expect(Base64.strict_decode64(attr(root, "tasker.raw").fetch("bytesValue"))).to eq("\xFF\x00a".b)
    expect(attr(root, "tasker.flag")).to eq("boolValue" => false)
    expect(attr(root, "tasker.none")).to eq({})
    expect(attr(root, "tasker.string_key")).to eq("stringValue" => "s")
    context = attr(root, "tasker.context").fetch("kvlistValue").fetch("values")
    expect(context.map { |kv| kv["key"] }).to eq(%w[customer items at])
    expect(context[1]["value"]).to eq("arrayValue" => { "values" => [{ "intValue" => "1" },
                                                                      { "stringValue" => "two" }, {}] })
    expect(context[2]["value"]).to eq("stringValue" => "2026-01-02T03:04:05Z")
  end

  it "covers finished traces and generic events; open traces only with include_open" do
    lifecycle(1)
    backend.handle_event("workflow.viable_steps_discovered", { count: 2 })
    backend.handle_event("task.started", { task_id: 9 })
    names = spans(backend.export_otlp).map { |s| s["name"] }
    expect(names).to eq(%w[task step.handle workflow.viable_steps_discovered])
    with_open = spans(backend.export_otlp(include_open: true))
    expect(with_open.map { |s| s["name"] }).to eq(%w[task step.handle workflow.viable_steps_discovered task])
    expect(with_open.last).not_to have_key("status")
  end

  it "leaves the store as it was without drain, and keeps ids across exports" do
    lifecycle(1)
    first = backend.export_otlp
    expect(backend.traces.keys).to eq(["task_1"])
    expect(spans(backend.export_otlp).map { |s| s["spanId"] }).to eq(spans(first).map { |s| s["spanId"] })
  end

  it "removes what it exported with drain: true, in the same step" do
    lifecycle(1)
    lifecycle(2)
    backend.handle_event("task.started", { task_id: 3 })
    expect(root_keys(backend.export_otlp(drain: true))).to eq(%w[task_1 task_2])
    expect(backend.traces.keys).to eq(["task_3"])
    expect(spans(backend.export_otlp(drain: true))).to eq([])
    expect(root_keys(backend.export_otlp(drain: true, include_open: true))).to eq(["task_3"])
    expect(backend.traces).to be_empty
  end

  it "exports every trace exactly once while writer threads keep adding", timeout: 120 do
    writers = 4
    per_writer = 1500
    threads = Array.new(writers) do |w|
      Thread.new do
        per_writer.times do |i|
          lifecycle((w * 100_000) + i + 1)
          Thread.pass if (i % 25).zero?
        end
      end
    end
    seen = []
    drained_while_writing = 0
    while threads.any?(&:alive?)
      keys = root_keys(backend.export_otlp(drain: true))
      drained_while_writing += keys.size if threads.any?(&:alive?)
      seen.concat(keys)
      Thread.pass
    end
    threads.each(&:join)
    seen.concat(root_keys(backend.export_otlp(drain: true)))
    expected = (0...writers).flat_map { |w| (1..per_writer).map { |i| "task_#{(w * 100_000) + i}" } }
    expect(seen.size).to eq(expected.size)
    expect(seen.tally.values.uniq).to eq([1])
    expect(seen.sort).to eq(expected.sort)
    expect(backend.traces).to be_empty
    expect(drained_while_writing).to be_positive
  end

  it "describes the resource from the service_name and resource_attributes settings" do
    saved = TaskerTraceNative::Native.settings
    TaskerTraceNative::Native.apply_settings(
      service_name: "billing", resource_attributes: { "deployment.environment" => "prod", replicas: 3, "host.name" => "pod-1" }
    )
    lifecycle(1)
    resource = JSON.parse(backend.export_otlp).fetch("resourceSpans").first.fetch("resource").fetch("attributes")
    values = resource.to_h { |kv| [kv["key"], kv["value"]] }
    expect(values).to include(
      "service.name" => { "stringValue" => "billing" },
      "deployment.environment" => { "stringValue" => "prod" },
      "replicas" => { "intValue" => "3" },
      "host.name" => { "stringValue" => "pod-1" },
      "process.pid" => { "intValue" => Process.pid.to_s },
      "telemetry.sdk.name" => { "stringValue" => "tasker_trace_native" },
      "telemetry.sdk.language" => { "stringValue" => "ruby" },
      "telemetry.sdk.version" => { "stringValue" => TaskerTraceNative::VERSION }
    )
    expect(resource.map { |kv| kv["key"] }.uniq.size).to eq(resource.size)
  ensure
    TaskerTraceNative::Native.apply_settings(saved.slice(:service_name, :resource_attributes)) if saved
  end

  describe "protocol:" do
    include OtlpSpecHelpers

    it "gives http/protobuf as a binary String, what push_otlp sends, and smaller than JSON" do
      lifecycle(1)
      lifecycle(2, failed: true)
      protobuf = backend.export_otlp(protocol: "http/protobuf")
      expect(protobuf.encoding).to eq(Encoding::ASCII_8BIT)
      expect(protobuf.getbyte(0)).to eq(0x0A) # field 1 (resource_spans), length-delimited
      expect(protobuf).to include("task_1", "task_2", "card declined")
      expect(protobuf.bytesize).to be < backend.export_otlp.bytesize / 2
      expect(backend.export_otlp(protocol: :"http/protobuf")).to eq(protobuf)
      configure_otlp(compression: "none")
      with_collector({ status: 200 }) do |c|
        expect(backend.push_otlp(endpoint: c.base_url)).to include(sent: 2)
        expect(c.requests.first.raw_body).to eq(protobuf)
      end
    end

    it "is http/json by default, whatever otlp_protocol says" do
      configure_otlp(protocol: "http/protobuf")
      lifecycle(1)
      json = backend.export_otlp
      expect(json.encoding).to eq(Encoding::UTF_8)
      expect(json).to eq(backend.export_otlp(protocol: "http/json"))
      expect(root_keys(json)).to eq(["task_1"])
    end

    it "drains with protobuf too" do
      lifecycle(1)
      expect(backend.export_otlp(drain: true, protocol: "http/protobuf")).to include("task_1")
      expect(backend.traces).to be_empty
      expect(backend.export_otlp(protocol: "http/protobuf")).not_to include("task_1")
    end

    [nil, 5, "", "grpc", "http", "x" * 100_000, :grpc].each do |bad|
      it "refuses protocol: #{bad.inspect[0, 40]} with an ArgumentError naming protocol, before draining" do
        lifecycle(1)
        expect { backend.export_otlp(drain: true, protocol: bad) }
          .to raise_error(ArgumentError, /\Aprotocol must be "http\/protobuf" or "http\/json"/)
        expect(backend.traces.keys).to eq(["task_1"])
      end
    end
  end

  describe "arguments" do
    [nil, "yes", 1].each do |bad|
      it "refuses drain: #{bad.inspect} with an ArgumentError naming drain" do
        lifecycle(1)
        expect { backend.export_otlp(drain: bad) }.to raise_error(ArgumentError, /drain must be true or false/)
        expect(backend.traces.keys).to eq(["task_1"])
      end

      it "refuses include_open: #{bad.inspect} with an ArgumentError naming include_open" do
        expect { backend.export_otlp(include_open: bad) }.to raise_error(ArgumentError, /include_open/)
      end
    end

    it "refuses unknown keywords" do
      expect { backend.export_otlp(drian: true) }.to raise_error(ArgumentError, /drian/)
    end
  end

  it "turns a Rust panic into TaskerTraceNative::Error and loses nothing" do
    lifecycle(1)
    TaskerTraceNative::TestHooks.panic_next_call!
    expect { backend.export_otlp(drain: true) }.to raise_error(TaskerTraceNative::Error, /internal error/)
    expect(backend.traces.keys).to eq(["task_1"])
    expect(root_keys(backend.export_otlp(drain: true))).to eq(["task_1"])
  end
end
