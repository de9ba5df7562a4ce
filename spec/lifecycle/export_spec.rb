# frozen_string_literal: true

require "spec_helper"
require "json"
require "socket"

RSpec.describe "Lifecycle tracer: OTLP export with the backend's traces" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }

  def spans_of(json)
    JSON.parse(json).fetch("resourceSpans").flat_map { |rs| rs["scopeSpans"].flat_map { |ss| ss["spans"] } }
  end

  def lifecycle_spans(json)
    spans_of(json).select { |s| s["name"].start_with?("tasker.task.execution", "tasker.step.execution") }
  end

  def value(attribute)
    v = attribute["value"]
    v.key?("intValue") ? Integer(v["intValue"]) : v.values.first
  end

  def a_finished_run(task)
    play(ts.worker_start(task, "order", [task * 10]))
    play(ts.step_attempt(task, task * 10, "charge", 1))
    play(ts.finish(task, "order", :completed, total: 1))
  end

  # One request per connection, answered with `status`; records bodies.
  def with_receiver(status)
    server = TCPServer.new("127.0.0.1", 0)
    bodies = Queue.new
    thread = Thread.new do
      4.times do
        socket = server.accept
        headers = {}
        socket.gets
        while (line = socket.gets) && line != "\r\n"
          k, v = line.split(":", 2)
          headers[k.downcase] = v.strip
        end
        bodies << [headers["content-type"], socket.read(headers.fetch("content-length", "0").to_i)]
        socket.write("HTTP/1.1 #{status} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\n" \
                     "Connection: close\r\n\r\n{}")
        socket.close
      end
    rescue IOError, SystemCallError
      nil
    end
    yield "http://127.0.0.1:#{server.addr[1]}", bodies
  ensure
    server&.close
    thread&.join(2) || thread&.kill
  end

  it "carries the finished runs in export_otlp beside the backend's traces, one trace per run" do
    a_finished_run(1)
    a_finished_run(2)
    backend.handle_event("task.started", task_id: 77)
    backend.handle_event("task.completed", task_id: 77)
    json = backend.export_otlp
    spans = lifecycle_spans(json)
    expect(spans.size).to eq(4)
    expect(spans.map { |s| s["traceId"] }.uniq.size).to eq(2)
    roots = spans.select { |s| s["parentSpanId"].to_s.empty? }
    expect(roots.map { |s| s["name"] }).to eq(["tasker.task.execution"] * 2)
    spans.reject { |s| s["parentSpanId"].to_s.empty? }.each do |child|
      parent = roots.find { |r| r["traceId"] == child["traceId"] }
      expect(child["parentSpanId"]).to eq(parent["spanId"])
    end
    attributes = roots.first["attributes"].to_h { |a| [a["key"], value(a)] }
    expect(attributes).to include("tasker.task_id" => 1, "tasker.task_name" => "order", "tasker.total_steps" => 1)
    # The lifecycle_runs Hashes are the same spans.
    run = runs.first
    expect(roots.first["spanId"]).to eq(root(run)[:span_id])
    expect(Integer(roots.first["startTimeUnixNano"])).to eq(root(run)[:start_time])
    expect(Integer(roots.first["endTimeUnixNano"])).to eq(root(run)[:end_time])
    expect(spans_of(json).map { |s| s["name"] }).to include("task")
  end

  it "drains each finished run exactly once, and with include_open exports open runs without removing them" do
    a_finished_run(1)
    publish("task.start_requested", to_state: "in_progress", task_id: 2)
    expect(lifecycle_spans(backend.export_otlp).size).to eq(2)
    expect(lifecycle_spans(backend.export_otlp).size).to eq(2)
    first = lifecycle_spans(backend.export_otlp(drain: true, include_open: true))
    expect(first.size).to eq(3)
    open_root = first.find { |s| s["parentSpanId"].to_s.empty? && s["status"].nil? }
    expect(Integer(open_root["endTimeUnixNano"])).to be >= Integer(open_root["startTimeUnixNano"])
    expect(lifecycle_spans(backend.export_otlp(drain: true))).to eq([])
    expect(stats).to include(finished_runs: 0, open_runs: 1)
    publish("task.completed", task_id: 2)
    expect(lifecycle_spans(backend.export_otlp(drain: true)).size).to eq(1)
    expect(lifecycle_spans(backend.export_otlp(drain: true))).to eq([])
  end

  it "loses no run when export_otlp fails inside" do
    a_finished_run(1)
    TaskerTraceNative::TestHooks.panic_next_call!
    expect { backend.export_otlp(drain: true) }.to raise_error(TaskerTraceNative::Error)
    expect(stats[:finished_runs]).to eq(1)
  end

  it "pushes the runs with push_otlp and counts each run as sent" do
    a_finished_run(1)
    a_finished_run(2)
    backend.handle_event("task.started", task_id: 5)
    backend.handle_event("task.completed", task_id: 5)
    with_receiver(200) do |url, bodies|
      result = backend.push_otlp(endpoint: url, timeout: 5)
      expect(result).to include(sent: 3, status: 200, error: nil)
      type, body = bodies.pop
      expect(lifecycle_spans(body).size).to eq(4) if type == "application/json"
    end
    expect(stats[:finished_runs]).to eq(0)
    expect(backend.push_otlp(endpoint: "http://127.0.0.1:9", timeout: 1)).to include(sent: 0, status: nil)
  end

  it "keeps the runs when the collector fails, and delivers them on the next push" do
    a_finished_run(1)
    with_receiver(500) do |url, _|
      expect(backend.push_otlp(endpoint: url, timeout: 5)).to include(sent: 0, status: 500)
    end
    expect(stats[:finished_runs]).to eq(1)
    with_receiver(200) do |url, _|
      expect(backend.push_otlp(endpoint: url, timeout: 5)).to include(sent: 1, status: 200)
    end
    expect(stats[:finished_runs]).to eq(0)
  end

  it "leaves TraceBackend.instance.export unaffected" do
    backend.handle_event("task.started", task_id: 1)
    before = backend.export[:traces]
    a_finished_run(1)
    publish("task.start_requested", to_state: "in_progress", task_id: 2)
    after = backend.export
    expect(after[:traces]).to eq(before)
    expect(after[:metadata][:trace_count]).to eq(1)
    expect(backend.stats[:events_handled]).to eq(1)
  end
end
