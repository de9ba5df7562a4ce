# frozen_string_literal: true

require "spec_helper"
require "socket"

# Contract: "export → { traces:, metadata: }".
RSpec.describe "TraceBackend#export" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }
  let(:iso_second) { /\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\z/ }

  it "returns traces and metadata, in that order", :gc_stress_safe do
    expect(backend.export.keys).to eq(%i[traces metadata])
  end

  it "returns an empty traces Hash for an empty backend", :gc_stress_safe do
    export = backend.export
    expect(export[:traces]).to eq({})
    expect(export[:metadata][:trace_count]).to eq(0)
  end

  it "lists traces in first-insertion order, whatever their kind", :gc_stress_safe do
    backend.handle_event("task.started", task_id: 3)
    backend.handle_event("workflow.noted", {})
    backend.handle_event("task.started", task_id: 1)
    backend.handle_event("task.started", operation: "b")
    backend.handle_event("task.started", task_id: 3)
    keys = backend.export[:traces].keys
    expect(keys[0]).to eq("task_3")
    expect(keys[1]).to start_with("generic_")
    expect(keys[2..]).to eq(%w[task_1 operation_b])
  end

  it "has the metadata of the original", :gc_stress_safe do
    backend.handle_event("task.started", task_id: 1)
    backend.handle_event("workflow.noted", {})
    before = Time.now.utc.floor
    metadata = backend.export[:metadata]
    after = Time.now.utc
    expect(metadata.keys).to eq(%i[backend instance_id created_at exported_at trace_count])
    expect(metadata).to include(backend: "trace", instance_id: Socket.gethostname, trace_count: 2)
    expect(metadata[:created_at]).to match(iso_second)
    expect(metadata[:exported_at]).to match(iso_second)
    expect(Time.iso8601(metadata[:exported_at])).to be_between(before, after)
    expect(metadata[:created_at]).to eq(backend.created_at.getutc.iso8601)
  end

  it "returns an independent copy: changing it changes nothing stored", :gc_stress_safe do
    backend.handle_event("task.started", task_id: 1, list: [1], text: "a")
    backend.handle_event("step.before_x", task_id: 1)
    export = backend.export
    record = export[:traces]["task_1"]
    record[:payload][:list] << 2
    record[:payload][:text] << "b"
    record[:spans].clear
    record[:event_name] << "!"
    record[:extra] = 1
    export[:traces]["fake"] = {}
    export[:metadata][:trace_count] = 99
    again = backend.export
    expect(again[:traces].keys).to eq(["task_1"])
    expect(again[:traces]["task_1"]).to include(event_name: "task.started", payload: { task_id: 1, list: [1], text: "a" })
    expect(again[:traces]["task_1"][:spans].size).to eq(1)
    expect(again[:traces]["task_1"]).not_to include(:extra)
    expect(again[:metadata][:trace_count]).to eq(1)
  end

  it "builds new objects on every call", :gc_stress_safe do
    backend.handle_event("task.started", task_id: 1)
    a = backend.export
    b = backend.export
    expect(a).to eq(b.merge(metadata: a[:metadata]))
    expect(a[:traces]).not_to equal(b[:traces])
    expect(a[:traces]["task_1"][:payload]).not_to equal(b[:traces]["task_1"][:payload])
  end

  it "is not changed by events after it was taken", :gc_stress_safe do
    backend.handle_event("task.started", task_id: 1)
    export = backend.export
    backend.handle_event("step.before_x", task_id: 1)
    backend.handle_event("task.completed", task_id: 1)
    backend.handle_event("task.started", task_id: 2)
    expect(export[:traces].keys).to eq(["task_1"])
    expect(export[:traces]["task_1"][:spans]).to be_empty
    expect(export[:traces]["task_1"]).not_to include(:end_time)
  end

  it "exports many traces, each with its own payload" do
    1000.times { |i| backend.handle_event("task.started", task_id: i, n: i) }
    traces = backend.export[:traces]
    expect(traces.size).to eq(1000)
    expect(traces.keys).to eq((0...1000).map { |i| "task_#{i}" })
    expect(traces.values.map { |t| t[:payload][:n] }).to eq((0...1000).to_a)
  end
end
