# frozen_string_literal: true

require "spec_helper"

# Contract: "Limits and configuration" (better: the original grows without bound).
RSpec.describe "TraceBackend limits and configuration" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }

  def configure(**settings)
    TaskerTraceNative.configure do |c|
      settings.each { |k, v| c.public_send(:"#{k}=", v) }
    end
  end

  def limit_names = %i[max_traces max_spans_per_trace timestamp_precision]

  # The limit settings in force (other settings may exist beside them).
  def in_force
    TaskerTraceNative.config.to_h.slice(*limit_names)
  end

  describe "defaults" do
    it "are max_traces 100_000, max_spans_per_trace 10_000, timestamp_precision 0", :gc_stress_safe do
      expect(in_force).to eq(max_traces: 100_000, max_spans_per_trace: 10_000, timestamp_precision: 0)
    end

    it "are what a fresh process starts with" do
      out = IO.popen([RbConfig.ruby, "-I", File.expand_path("../../lib", __dir__), "-e",
                      'require "tasker_trace_native"; ' \
                      'p TaskerTraceNative.config.to_h.slice(:max_traces, :max_spans_per_trace, :timestamp_precision)'], &:read)
      expect(out.strip).to eq("{:max_traces=>100000, :max_spans_per_trace=>10000, :timestamp_precision=>0}")
    end
  end

  describe "TaskerTraceNative.config" do
    it "shows the values in force, frozen", :gc_stress_safe do
      configure(max_traces: 5, max_spans_per_trace: nil, timestamp_precision: 3)
      config = TaskerTraceNative.config
      expect(config).to be_frozen
      expect(config.to_h.slice(*limit_names)).to eq(max_traces: 5, max_spans_per_trace: nil, timestamp_precision: 3)
      expect(config.max_traces).to eq(5)
      expect { config.max_traces = 6 }.to raise_error(FrozenError)
      expect(in_force[:max_traces]).to eq(5)
    end

    it "is returned by configure", :gc_stress_safe do
      expect(TaskerTraceNative.configure { |c| c.max_traces = 9 }.to_h).to include(max_traces: 9)
    end

    it "needs a block", :gc_stress_safe do
      expect { TaskerTraceNative.configure }.to raise_error(ArgumentError, /block/)
    end
  end

  describe "max_traces" do
    it "evicts the oldest (first inserted) trace for a new key and counts it", :gc_stress_safe do
      configure(max_traces: 3)
      5.times { |i| backend.handle_event("task.started", task_id: i) }
      expect(backend.traces.keys).to eq(%w[task_2 task_3 task_4])
      expect(backend.stats[:evicted_traces]).to eq(2)
    end

    it "counts generic records and id-less traces too", :gc_stress_safe do
      configure(max_traces: 2)
      backend.handle_event("task.started", task_id: 1)
      backend.handle_event("workflow.a", {})
      backend.handle_event("task.started", {})
      keys = backend.traces.keys
      expect(keys.size).to eq(2)
      expect(keys[0]).to start_with("generic_")
      expect(keys[1]).to start_with("trace_")
    end

    it "does not evict for a restart, a finish or a span of a stored trace", :gc_stress_safe do
      configure(max_traces: 2)
      backend.handle_event("task.started", task_id: 1)
      backend.handle_event("task.started", task_id: 2)
      backend.handle_event("task.started", task_id: 1)
      backend.handle_event("step.before_x", task_id: 2)
      backend.handle_event("task.completed", task_id: 1)
      expect(backend.traces.keys).to eq(%w[task_1 task_2])
      expect(backend.stats[:evicted_traces]).to eq(0)
    end

    it "makes a finish for an evicted trace an orphan", :gc_stress_safe do
      configure(max_traces: 1)
      backend.handle_event("task.started", task_id: 1)
      backend.handle_event("task.started", task_id: 2)
      expect(backend.handle_event("task.completed", task_id: 1)).to be(true)
      expect(backend.traces.keys).to eq(["task_2"])
      expect(backend.stats[:orphaned_events]).to eq(1)
    end

    it "evicts at once when lowered", :gc_stress_safe do
      10.times { |i| backend.handle_event("task.started", task_id: i) }
      configure(max_traces: 4)
      expect(backend.traces.keys).to eq(%w[task_6 task_7 task_8 task_9])
      expect(backend.stats).to include(evicted_traces: 6, active_traces: 4)
    end

    it "is unbounded when nil" do
      configure(max_traces: 2)
      configure(max_traces: nil)
      50.times { |i| backend.handle_event("task.started", task_id: i) }
      expect(backend.traces.size).to eq(50)
      expect(backend.stats[:evicted_traces]).to eq(0)
    end

    it "keeps one trace at 1", :gc_stress_safe do
      configure(max_traces: 1)
      3.times { backend.handle_event("workflow.x", {}) }
      expect(backend.traces.size).to eq(1)
    end

    it "takes a huge Integer as effectively unbounded", :gc_stress_safe do
      configure(max_traces: 2**80)
      expect(in_force[:max_traces]).to be >= 2**62
    end
  end

  describe "max_spans_per_trace" do
    it "stores spans up to the limit and counts the rest as dropped", :gc_stress_safe do
      configure(max_spans_per_trace: 2)
      backend.handle_event("task.started", task_id: 1)
      5.times { |i| expect(backend.handle_event("step.before_x", task_id: 1, n: i)).to be(true) }
      expect(backend.traces["task_1"][:spans].map { |s| s[:payload][:n] }).to eq([0, 1])
      expect(backend.stats[:dropped_spans]).to eq(3)
    end

    it "stores no spans at 0", :gc_stress_safe do
      configure(max_spans_per_trace: 0)
      backend.handle_event("task.started", task_id: 1)
      backend.handle_event("step.before_x", task_id: 1)
      expect(backend.traces["task_1"][:spans]).to eq([])
      expect(backend.stats[:dropped_spans]).to eq(1)
    end

    it "counts per trace, and a restart starts the count again", :gc_stress_safe do
      configure(max_spans_per_trace: 1)
      backend.handle_event("task.started", task_id: 1)
      backend.handle_event("task.started", task_id: 2)
      2.times { backend.handle_event("step.before_x", task_id: 1) }
      backend.handle_event("step.before_x", task_id: 2)
      backend.handle_event("task.started", task_id: 1)
      backend.handle_event("step.before_x", task_id: 1)
      expect(backend.traces.values.map { |t| t[:spans].size }).to eq([1, 1])
      expect(backend.stats[:dropped_spans]).to eq(1)
    end

    it "is unbounded when nil" do
      configure(max_spans_per_trace: nil)
      backend.handle_event("task.started", task_id: 1)
      12_000.times { backend.handle_event("step.before_x", task_id: 1) }
      expect(backend.traces["task_1"][:spans].size).to eq(12_000)
    end

    it "is 10_000 by default" do
      backend.handle_event("task.started", task_id: 1)
      10_005.times { backend.handle_event("step.before_x", task_id: 1) }
      expect(backend.traces["task_1"][:spans].size).to eq(10_000)
      expect(backend.stats[:dropped_spans]).to eq(5)
    end
  end

  describe "bad values" do
    {
      max_traces: [0, -1, -(2**80), 1.5, 2.0, "5", :five, true, [], Object.new],
      max_spans_per_trace: [-1, -(2**70), 0.5, "1", false, {}],
      timestamp_precision: [-1, 10, 2**64, nil, 3.0, "3", :three, true]
    }.each do |setting, values|
      expected_words = {
        max_traces: "a positive Integer or nil",
        max_spans_per_trace: "a non-negative Integer or nil",
        timestamp_precision: "an Integer from 0 to 9"
      }.fetch(setting)

      values.each do |value|
        it "refuses #{setting} = #{value.inspect} with ArgumentError naming the setting", :gc_stress_safe do
          configure(max_traces: 50, max_spans_per_trace: 60, timestamp_precision: 2)
          before = in_force
          expect { configure(setting => value) }
            .to raise_error(ArgumentError, /\A#{setting} must be #{Regexp.escape(expected_words)}/)
          expect(in_force).to eq(before)
        end
      end
    end

    it "shows the bad value in the message", :gc_stress_safe do
      expect { configure(timestamp_precision: 12) }.to raise_error(ArgumentError, /\(got 12\)/)
      expect { configure(max_traces: "5") }.to raise_error(ArgumentError, /\(got "5"\)/)
    end

    it "changes nothing when a later assignment in the same block is bad", :gc_stress_safe do
      before = in_force
      expect do
        TaskerTraceNative.configure do |c|
          c.max_traces = 3
          c.timestamp_precision = 4
          c.max_spans_per_trace = -1
        end
      end.to raise_error(ArgumentError, /max_spans_per_trace/)
      expect(in_force).to eq(before)
    end

    it "changes nothing when the block raises", :gc_stress_safe do
      before = in_force
      expect do
        TaskerTraceNative.configure do |c|
          c.max_traces = 3
          raise "changed my mind"
        end
      end.to raise_error(RuntimeError, "changed my mind")
      expect(in_force).to eq(before)
    end

    it "does not evict when a lower max_traces is refused", :gc_stress_safe do
      5.times { |i| backend.handle_event("task.started", task_id: i) }
      expect do
        TaskerTraceNative.configure do |c|
          c.max_traces = 2
          c.timestamp_precision = 99
        end
      end.to raise_error(ArgumentError, /timestamp_precision/)
      expect(backend.traces.size).to eq(5)
    end

    it "refuses unknown settings", :gc_stress_safe do
      names = TaskerTraceNative::Configuration::SETTINGS.join(", ")
      expect { TaskerTraceNative.configure { |c| c.max_trace = 1 } }
        .to raise_error(ArgumentError, "unknown setting max_trace (settings: #{names})")
      expect { TaskerTraceNative.configure(&:max_trace) }
        .to raise_error(ArgumentError, "unknown setting max_trace (settings: #{names})")
    end

    it "points a Rails-only setting to config.tasker_trace_native", :gc_stress_safe do
      expect { TaskerTraceNative.configure { |c| c.lifecycle_tracing = false } }
        .to raise_error(ArgumentError, /\Alifecycle_tracing is a Rails setting: set config\.tasker_trace_native\.lifecycle_tracing/)
    end
  end

  it "accepts the edges of each range", :gc_stress_safe do
    configure(max_traces: 1, max_spans_per_trace: 0, timestamp_precision: 0)
    expect(in_force).to eq(max_traces: 1, max_spans_per_trace: 0, timestamp_precision: 0)
    configure(max_traces: nil, max_spans_per_trace: nil, timestamp_precision: 9)
    expect(in_force).to eq(max_traces: nil, max_spans_per_trace: nil, timestamp_precision: 9)
  end
end
