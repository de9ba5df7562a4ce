# frozen_string_literal: true

require "spec_helper"
require "json"

RSpec.describe "Lifecycle tracer: events from many threads", timeout: 120 do
  it "keeps every attempt of one task whose steps run in several threads" do
    threads = 8
    steps_per_thread = 6
    play(ts.web_process(1, "fan_out"))
    step_ids = Array.new(threads * steps_per_thread) { |i| 100 + i }
    play(ts.worker_start(1, "fan_out", step_ids))
    ready = Queue.new
    go = Queue.new
    workers = Array.new(threads) do |t|
      Thread.new do
        ready << true
        go.pop
        steps_per_thread.times do |k|
          id = 100 + (t * steps_per_thread) + k
          play(ts.step_attempt(1, id, "step_#{id}", 1, outcome: k.even? ? :completed : :failed, work: 0.001))
        end
      end
    end
    threads.times { ready.pop }
    threads.times { go << true }
    workers.each(&:join)
    play(ts.finish(1, "fan_out", :completed, total: step_ids.size))
    run = only_run
    spans = attempts(run)
    expect(spans.size).to eq(step_ids.size)
    expect(spans.map { |s| attrs(s)["step_id"] }).to match_array(step_ids)
    expect(spans.map { |s| s[:parent_span_id] }.uniq).to eq([root(run)[:span_id]])
    expect(spans.map { |s| s[:span_id] }.uniq.size).to eq(spans.size)
    by_status = spans.group_by { |s| s[:status][:code] }.transform_values(&:size)
    expect(by_status).to eq("OK" => step_ids.size / 2, "ERROR" => step_ids.size / 2)
    spans.each do |s|
      expect(s[:duration]).to be >= 0.001 * 0.95
      expect(event_names(s)).to eq(["step.before_handle"])
    end
    expect(stats).to include(events_orphaned: 0, events_late: 0, events_dropped: 0, dropped_spans: 0)
  end

  it "loses nothing of thousands of runs recorded from eight threads at once" do
    threads = 8
    runs_per_thread = 400
    events_per_run = nil
    workers = Array.new(threads) do |t|
      Thread.new do
        runs_per_thread.times do |i|
          task = (t * runs_per_thread) + i + 1
          events = ts.events_only(ts.successful_run(task, "order", %w[a b c], first_step_id: task * 10))
          events_per_run ||= events.size
          play(events)
        end
      end
    end
    workers.each(&:join)
    total = threads * runs_per_thread
    expect(stats).to include(finished_runs: total, open_runs: 0, events_recorded: total * events_per_run,
                             events_ignored: 0, events_orphaned: 0, events_late: 0, events_dropped: 0,
                             dropped_spans: 0, evicted_runs: 0, dropped_finished_runs: 0)
    all = runs
    expect(all.size).to eq(total)
    expect(all.map { |r| r[:task_id] }).to match_array(1..total)
    expect(all.map { |r| r[:trace_id] }.uniq.size).to eq(total)
    all.each do |r|
      expect(r[:spans].size).to eq(4)
      expect(attempts(r).map { |s| attrs(s)["step_id"] }).to eq([0, 1, 2].map { |k| (r[:task_id] * 10) + k })
      expect(r[:spans].map { |s| s[:status][:code] }.uniq).to eq(["OK"])
    end
    # And each goes out exactly once.
    json = JSON.parse(Tasker::Telemetry::TraceBackend.instance.export_otlp(drain: true))
    exported = json["resourceSpans"].flat_map { |rs| rs["scopeSpans"].flat_map { |ss| ss["spans"] } }
    expect(exported.size).to eq(total * 4)
    expect(exported.map { |s| s["traceId"] }.uniq.size).to eq(total)
    expect(stats[:finished_runs]).to eq(0)
  end
end
