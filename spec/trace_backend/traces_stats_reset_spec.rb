# frozen_string_literal: true

require "spec_helper"
require "socket"

# Contract: "traces, stats, reset!".
RSpec.describe "TraceBackend#traces, #stats and #reset!" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }

  def fill
    backend.handle_event("task.started", task_id: 1, list: [1])
    backend.handle_event("step.before_x", task_id: 1)
    backend.handle_event("task.completed", task_id: 1)
    backend.handle_event("workflow.noted", {})
  end

  describe "#traces" do
    it "equals export[:traces]", :gc_stress_safe do
      fill
      expect(backend.traces).to eq(backend.export[:traces])
      expect(backend.traces).to be_an_instance_of(Hash)
    end

    it "is a copy (better: the original returned its live Hash)", :gc_stress_safe do
      fill
      copy = backend.traces
      copy.clear
      backend.traces["task_1"][:payload][:list] << 2
      expect(backend.traces.size).to eq(2)
      expect(backend.traces["task_1"][:payload][:list]).to eq([1])
    end
  end

  describe "#stats" do
    it "reports active_traces, backend_uptime and instance_id like the original", :gc_stress_safe do
      fill
      stats = backend.stats
      expect(stats.keys.first(3)).to eq(%i[active_traces backend_uptime instance_id])
      expect(stats[:active_traces]).to eq(2)
      expect(stats[:instance_id]).to eq(Socket.gethostname)
      expect(stats[:backend_uptime]).to be_a(Float)
    end

    it "measures backend_uptime in seconds since created_at" do
      before = Time.now - backend.created_at
      uptime = backend.stats[:backend_uptime]
      after = Time.now - backend.created_at
      expect(uptime).to be_between(before - 0.001, after + 0.001)
      sleep 0.05
      expect(backend.stats[:backend_uptime]).to be >= uptime + 0.05
    end

    it "adds the counters (better)", :gc_stress_safe do
      expect(backend.stats.keys).to eq(
        %i[active_traces backend_uptime instance_id events_handled rejected_events orphaned_events
           evicted_traces dropped_spans max_traces]
      )
    end

    it "counts what happened", :gc_stress_safe do
      TaskerTraceNative.configure do |c|
        c.max_traces = 2
        c.max_spans_per_trace = 1
      end
      backend.handle_event("task.started", task_id: 1)   # handled
      backend.handle_event("step.before_a", task_id: 1)  # handled
      backend.handle_event("step.before_b", task_id: 1)  # handled, span dropped
      backend.handle_event("task.completed", task_id: 9) # handled, orphan
      backend.handle_event("step.after_a", {})           # handled, orphan
      backend.handle_event("task.started", nil)          # rejected
      backend.handle_event(42, {})                       # rejected
      backend.handle_event("task.started", task_id: 2)   # handled
      backend.handle_event("task.started", task_id: 3)   # handled, evicts task_1
      expect(backend.stats).to include(
        active_traces: 2, events_handled: 7, rejected_events: 2, orphaned_events: 2,
        evicted_traces: 1, dropped_spans: 1, max_traces: 2
      )
    end

    it "shows an unbounded max_traces as nil", :gc_stress_safe do
      TaskerTraceNative.configure { |c| c.max_traces = nil }
      expect(backend.stats[:max_traces]).to be_nil
    end
  end

  describe "#reset!" do
    it "removes every trace and zeroes the counters", :gc_stress_safe do
      fill
      backend.handle_event("task.completed", task_id: 2)
      backend.handle_event("x", nil)
      expect(backend.reset!).to be_nil
      expect(backend.traces).to eq({})
      expect(backend.export[:metadata][:trace_count]).to eq(0)
      expect(backend.stats).to include(
        active_traces: 0, events_handled: 0, rejected_events: 0, orphaned_events: 0,
        evicted_traces: 0, dropped_spans: 0
      )
    end

    it "keeps the settings and created_at, and does not reuse generic keys", :gc_stress_safe do
      TaskerTraceNative.configure { |c| c.max_traces = 7 }
      created = backend.created_at
      backend.handle_event("workflow.a", {})
      before = backend.traces.keys.first
      backend.reset!
      backend.handle_event("workflow.b", {})
      expect(backend.stats[:max_traces]).to eq(7)
      expect(backend.created_at).to eq(created)
      expect(backend.traces.keys.first).not_to eq(before)
    end

    it "lets a restarted trace start afresh", :gc_stress_safe do
      fill
      backend.reset!
      backend.handle_event("task.completed", task_id: 1)
      expect(backend.traces).to be_empty
      backend.handle_event("task.started", task_id: 1)
      expect(backend.traces["task_1"][:spans]).to be_empty
    end
  end
end
