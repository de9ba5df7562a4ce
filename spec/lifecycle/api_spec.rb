# frozen_string_literal: true

require "spec_helper"
require "bigdecimal"
require "active_support"
require "active_support/core_ext/integer/time"

# Wrong types, empty values and huge values for every public method and
# setting of the lifecycle tracer.
RSpec.describe "Lifecycle tracer: the public methods and settings" do
  describe ".record_lifecycle_event" do
    it "returns true for a String or Symbol name and a Hash payload, even with nothing to record" do
      expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: 1 })).to be(true)
      expect(TaskerTraceNative.record_lifecycle_event(:"task.completed", { task_id: 1 })).to be(true)
      expect(TaskerTraceNative.record_lifecycle_event("anything", {})).to be(true)
      expect(TaskerTraceNative.record_lifecycle_event("", {})).to be(true)
      expect(TaskerTraceNative.record_lifecycle_event("task.completed")).to be(true)
      expect(stats).to include(events_recorded: 2, events_ignored: 3, events_refused: 0)
    end

    it "refuses other names and payloads with false, counted, and never raises for them" do
      [[nil, {}], [42, {}], [["task.completed"], {}], ["task.completed", nil], ["task.completed", [1]],
       ["task.completed", "task_id=1"], [Object.new, { task_id: 1 }]].each do |name, payload|
        expect(TaskerTraceNative.record_lifecycle_event(name, payload)).to be(false)
      end
      expect(stats[:events_refused]).to eq(7)
    end

    it "takes huge and odd names and payloads" do
      expect(TaskerTraceNative.record_lifecycle_event("x" * 1_000_000, { task_id: 1 })).to be(true)
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      expect(TaskerTraceNative.record_lifecycle_event("workflow.#{'y' * 2000}", { task_id: 1 })).to be(true)
      expect(TaskerTraceNative.record_lifecycle_event("task\xff.x".b, { task_id: 1 })).to be(true)
      big = (1..100_000).to_h { |i| [:"k#{i}", "v" * 100] }.merge(task_id: 1, step_results: "z" * 20_000_000)
      expect(TaskerTraceNative.record_lifecycle_event("workflow.big", big)).to be(true)
      names = event_names(root(only_run(include_open: true)))
      expect(names.first).to eq("workflow.#{'y' * (1024 - 'workflow.'.size)}") # names are cut at 1 KiB
      expect(names.last).to eq("workflow.big")
      expect(names[1]).to eq("task\uFFFD.x")
    end

    it "takes odd ids: Bignums, Symbols, empty and huge Strings; refuses Floats, true and objects, counted" do
      [2**80, :sym, "", "t" * 100_000].each do |id|
        expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: id })).to be(true)
      end
      [1.5, Object.new, true].each do |id|
        expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: id })).to be(false)
      end
      ids = runs(include_open: true).map { |r| r[:task_id] }
      expect(ids[0, 3]).to eq([(2**80).to_s, "sym", ""])
      # Longer than 8 KiB: its start, then a hash of all of it.
      expect(ids[3]).to match(/\At{8000,}…#\h{16}\z/)
      expect(ids[3].bytesize).to be <= 8 * 1024
      expect(stats[:events_refused]).to eq(3)
      expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { task_id: false })).to be(true)
      expect(stats[:events_ignored]).to eq(1)
    end

    it "returns false on an internal failure, logged, and keeps working" do
      TaskerTraceNative::TestHooks.panic_next_call!
      expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: 1 })).to be(false)
      expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: 1 })).to be(true)
      expect(stats).to include(events_refused: 1, open_runs: 1)
    end

    it "raises for a wrong number of arguments" do
      expect { TaskerTraceNative.record_lifecycle_event }.to raise_error(ArgumentError)
      expect { TaskerTraceNative::Native.record_lifecycle_event("x") }.to raise_error(ArgumentError)
    end
  end

  describe ".lifecycle_runs" do
    it "takes include_open true or false only, naming the argument" do
      expect(TaskerTraceNative.lifecycle_runs).to eq([])
      expect(TaskerTraceNative.lifecycle_runs(include_open: true)).to eq([])
      [nil, 1, "yes", :true].each do |bad|
        expect { TaskerTraceNative.lifecycle_runs(include_open: bad) }
          .to raise_error(ArgumentError, /\Ainclude_open must be true or false \(got /)
      end
      expect { TaskerTraceNative.lifecycle_runs(include_open: "x" * 1_000_000) }.to raise_error(ArgumentError) do |e|
        expect(e.message.size).to be < 200
      end
    end

    it "has the documented shape", :gc_stress_safe do
      publish("task.start_requested", to_state: "in_progress", task_id: 1, task_name: "t")
      publish("step.execution_requested", task_id: 1, step_id: 2)
      publish("step.failed", task_id: 1, step_id: 2, error_message: "boom")
      publish("task.failed", task_id: 1, error_message: "boom")
      run = only_run
      expect(run.keys).to eq(%i[trace_id task_id end sampled spans])
      expect(run[:sampled]).to be(true)
      expect(run[:trace_id]).to match(/\A\h{32}\z/)
      span = run[:spans].last
      expect(span.keys).to eq(%i[span_id parent_span_id name start_time end_time duration status attributes events
                                 links])
      expect(span[:span_id]).to match(/\A\h{16}\z/)
      expect(span[:start_time]).to be_an(Integer).and be > 1_700_000_000 * 10**9
      expect(span[:duration]).to be_a(Float)
      expect(span[:duration]).to be_within(1e-9).of((span[:end_time] - span[:start_time]) / 1e9)
      expect(span[:status]).to eq(code: "ERROR", message: "boom")
    end

    it "returns copies: changing them changes nothing" do
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      runs(include_open: true).first[:spans].first[:attributes].clear
      expect(attrs(root(only_run(include_open: true)))).to eq("task_id" => 1)
    end
  end

  describe ".lifecycle_stats and .lifecycle_reset!" do
    it "report every counter, zeroed by reset" do
      expect(stats.keys).to eq(%i[open_runs finished_runs expired_runs evicted_runs dropped_finished_runs
                                  dropped_spans events_recorded events_repeated events_ignored events_orphaned
                                  events_late events_dropped events_refused sampled_out context_restores])
      expect(stats.values.uniq).to eq([0])
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      publish("task.completed", task_id: 2)
      expect(stats).to include(open_runs: 1, events_recorded: 1, events_orphaned: 1)
      expect(TaskerTraceNative.lifecycle_reset!).to be_nil
      expect(stats.values.uniq).to eq([0])
      expect(runs(include_open: true)).to eq([])
    end

    it "turns a panic into TaskerTraceNative::Error" do
      TaskerTraceNative::TestHooks.panic_next_call!
      expect { TaskerTraceNative.lifecycle_stats }.to raise_error(TaskerTraceNative::Error, /injected test panic/)
      expect(TaskerTraceNative.lifecycle_stats).to be_a(Hash)
    end
  end

  describe "settings" do
    def setting_error(name, value)
      expect { TaskerTraceNative.configure { |c| c.public_send(:"#{name}=", value) } }
        .to raise_error(ArgumentError) { |e| return e.message }
    end

    it "have defaults" do
      expect(TaskerTraceNative.config.to_h).to include(
        lifecycle_ttl: 3600, lifecycle_max_open_runs: 10_000, lifecycle_max_spans_per_run: 1_000,
        lifecycle_max_finished_runs: 10_000, lifecycle_attributes: []
      )
    end

    it "take lifecycle_ttl as seconds: Integer, Float, Rational, BigDecimal or ActiveSupport::Duration" do
      [[90, 90], [0.25, 0.25], [Rational(1, 2), 0.5], [BigDecimal("1.5"), 1.5], [2.minutes, 120]].each do |v, want|
        configure_lifecycle(lifecycle_ttl: v)
        expect(TaskerTraceNative.config.lifecycle_ttl).to eq(want)
      end
    end

    it "refuse bad values with ArgumentError naming the setting; nothing changes" do
      [0, -1, Float::NAN, Float::INFINITY, 1e30, "60", nil, [], Complex(1, 1)].each do |bad|
        expect(setting_error(:lifecycle_ttl, bad)).to match(/\Alifecycle_ttl must be a positive number of seconds \(got /)
      end
      %i[lifecycle_max_open_runs lifecycle_max_spans_per_run lifecycle_max_finished_runs].each do |name|
        [0, -5, nil, 1.5, "10", -(2**100)].each do |bad|
          expect(setting_error(name, bad)).to match(/\A#{name} must be a positive Integer \(got /)
        end
      end
      [nil, "region", [1], [""], ["x" * 257], Array.new(257) { |i| "k#{i}" }, [nil], [["a"]]].each do |bad|
        expect(setting_error(:lifecycle_attributes, bad)).to start_with("lifecycle_attributes must be an Array of ")
      end
      # The payload keys that never leave the process.
      [%i[region task_context], ["step_results"], [:step_inputs], ["backtrace"]].each do |bad|
        expect(setting_error(:lifecycle_attributes, bad))
          .to match(/\Alifecycle_attributes must be .*: #{bad.last} is never exported/)
      end
      expect(TaskerTraceNative.config.to_h).to include(lifecycle_ttl: 3600, lifecycle_attributes: [])
    end

    it "take huge counts (saturating) and the largest allowlist" do
      configure_lifecycle(lifecycle_max_open_runs: 2**100, lifecycle_attributes: Array.new(256) { |i| :"k#{i}" })
      expect(TaskerTraceNative.config.lifecycle_max_open_runs).to eq(2**64 - 1).or eq(2**63 - 1)
      expect(TaskerTraceNative.config.lifecycle_attributes.size).to eq(256)
      configure_lifecycle(lifecycle_attributes: [])
      expect(TaskerTraceNative.config.lifecycle_attributes).to eq([])
    end

    it "deduplicate the allowlist and ignore known keys in it" do
      configure_lifecycle(lifecycle_attributes: ["region", :region, "task_name"])
      expect(TaskerTraceNative.config.lifecycle_attributes).to eq(%w[region task_name])
      publish("task.start_requested", to_state: "in_progress", task_id: 1, task_name: "t", region: "eu")
      expect(attrs(root(only_run(include_open: true)))).to eq("task_id" => 1, "task_name" => "t", "region" => "eu")
    end
  end

  describe ".lifecycle_filter_parameters=" do
    it "takes Strings, Symbols, Regexps and Procs, or nil; refuses others naming the setting" do
      TaskerTraceNative.lifecycle_filter_parameters = ["a", :b, /c/, ->(_k, _v) {}]
      expect(TaskerTraceNative.lifecycle_filter_parameters.size).to eq(4)
      TaskerTraceNative.lifecycle_filter_parameters = []
      expect(TaskerTraceNative.lifecycle_filter_parameters).to eq([])
      [[1], [nil], Object.new].each do |bad|
        expect { TaskerTraceNative.lifecycle_filter_parameters = bad }
          .to raise_error(ArgumentError, /\Alifecycle_filter_parameters must be an Array of /)
      end
      TaskerTraceNative.lifecycle_filter_parameters = Array.new(10_000) { |i| "f#{i}" }
      expect(TaskerTraceNative::Native.lifecycle_filtered_keys).to eq([])
    end

    it "Native.set_lifecycle_filters refuses what is not a Hash of names to booleans" do
      [nil, [], { "a" => 1 }, { 1 => true }, { "" => true }, { "x" * 300 => true }].each do |bad|
        expect { TaskerTraceNative::Native.set_lifecycle_filters(bad) }
          .to raise_error(ArgumentError, /\Alifecycle filters must be a Hash of payload key names/)
      end
      expect(TaskerTraceNative::Native.set_lifecycle_filters({ "error_message" => true })).to be(true)
      expect(TaskerTraceNative::Native.lifecycle_filtered_keys).to eq(["error_message"])
    end
  end
end
