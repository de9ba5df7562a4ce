# frozen_string_literal: true

require "spec_helper"
require "json"
require "open3"
require "rbconfig"

# The native methods must serve Tasker::Telemetry::TraceBackend whether Tasker's
# pure-Ruby class (a stand-in in spec/support/fake_tasker) loads before or after
# the gem, including for an instance made before the gem loaded. A process can
# load the extension only once, so each order runs in a fresh Ruby process.
RSpec.describe "Load order of the gem and Tasker's own TraceBackend", timeout: 120 do
  root = File.expand_path("..", __dir__)
  lib_dir = File.join(root, "lib")
  fake_tasker_dir = File.join(root, "spec", "support", "fake_tasker")

  steps = {
    tasker: 'require "tasker/telemetry/trace_backend"',
    gem: 'require "tasker_trace_native"',
    instance: "early = Tasker::Telemetry::TraceBackend.instance",
    reload_tasker: 'load $LOADED_FEATURES.grep(%r{tasker/telemetry/trace_backend\.rb\z}).first'
  }

  probe = <<~RUBY
    klass = Tasker::Telemetry::TraceBackend
    backend = klass.instance
    methods = %i[handle_event export reset! stats traces created_at]
    taken = backend.handle_event(:"task.started", { task_id: 1, list: [1] })
    backend.handle_event("step.before_x", { task_id: 1 })
    backend.handle_event("task.completed", { task_id: 1 })
    refused = backend.handle_event(42, {})
    export = backend.export
    new_error = begin; klass.new; nil; rescue NoMethodError => e; e.class.name; end
    TaskerTraceNative.install!
    result = {
      same_instance: early.nil? || early.equal?(backend),
      owners: methods.map { |m| backend.method(m).owner.name }.uniq,
      first_ancestor: klass.ancestors.first.name,
      prepended_once: klass.ancestors.count(TaskerTraceNative::BackendMethods) == 1,
      singleton: klass.include?(Singleton),
      new_error: new_error,
      taken: taken,
      refused: refused,
      keys: export[:traces].keys,
      event_name: export[:traces]["task_1"][:event_name],
      status: export[:traces]["task_1"][:status],
      spans: export[:traces]["task_1"][:spans].size,
      traces_class: backend.traces.class.name,
      counters: backend.stats.key?(:events_handled),
      created_at_class: backend.created_at.class.name,
      ruby_calls: backend.instance_variable_defined?(:@ruby_calls) ? backend.ruby_calls : nil,
      ruby_store_size: backend.instance_variable_defined?(:@traces) ? backend.instance_variable_get(:@traces).size : nil,
      tasker_ruby_loaded: $LOADED_FEATURES.any? { |f| f.end_with?("tasker/telemetry/trace_backend.rb") }
    }
    backend.reset!
    result[:after_reset] = backend.export[:traces].size
    puts JSON.generate(result)
  RUBY

  run_order = lambda do |order|
    script = ["early = nil", *order.map { |s| steps.fetch(s) }, probe].join("\n")
    out, err, status = Open3.capture3(RbConfig.ruby, "-rjson", "-I", lib_dir, "-I", fake_tasker_dir, "-e", script)
    raise "child for #{order.inspect} failed (#{status.inspect}):\n#{err}" unless status.success?

    JSON.parse(out.lines.last, symbolize_names: true)
  end

  native_behaviour = {
    owners: ["TaskerTraceNative::BackendMethods"],
    first_ancestor: "TaskerTraceNative::BackendMethods",
    prepended_once: true,
    singleton: true,
    new_error: "NoMethodError",
    same_instance: true,
    taken: true,
    refused: false,
    keys: ["task_1"],
    event_name: "task.started",
    status: "success",
    spans: 1,
    traces_class: "Hash",
    counters: true,
    created_at_class: "Time",
    after_reset: 0
  }

  {
    "Tasker, then an instance, then the gem" => %i[tasker instance gem],
    "Tasker, then the gem, then the instance" => %i[tasker gem instance],
    "the gem, then Tasker, then the instance" => %i[gem tasker instance],
    "the gem, then an instance, then Tasker" => %i[gem instance tasker],
    "Tasker, an instance, the gem, then Tasker's file loaded again" => %i[tasker instance gem reload_tasker]
  }.each do |label, order|
    it "serves the native methods when loading #{label}" do
      result = run_order.call(order)
      expect(result).to include(native_behaviour)
      expect(result[:tasker_ruby_loaded]).to be(true)
      # None of Tasker's Ruby methods ran, and its Ruby store stayed empty.
      expect(result[:ruby_calls]).to eq([]) if order.index(:instance) && order.index(:tasker) < order.index(:instance)
      expect(result[:ruby_store_size]).to eq(0).or be_nil
    end
  end

  it "keeps the instance that existed before the gem loaded" do
    result = run_order.call(%i[tasker instance gem])
    expect(result[:same_instance]).to be(true)
    expect(result[:ruby_calls]).to eq([])
    expect(result[:ruby_store_size]).to eq(0)
  end

  it "defines the class itself when Tasker is not loaded at all" do
    result = run_order.call(%i[gem instance])
    expect(result).to include(native_behaviour)
    expect(result[:tasker_ruby_loaded]).to be(false)
    expect(result[:ruby_calls]).to be_nil
  end

  it "uses the app's Symbols when they existed as dynamic Symbols before the gem loaded" do
    # `to_sym`, `%i[]` and JSON's symbolize_names make dynamic Symbols; the
    # gem's keys and payload lookups must be those very Symbols.
    script = <<~RUBY
      names = %w[traces metadata task_id workflow_step_id status spans duration active_traces max_traces]
      syms = names.to_h { |n| [n, n.to_sym] }
      require "tasker_trace_native"
      b = Tasker::Telemetry::TraceBackend.instance
      b.handle_event("task.started", { syms["task_id"] => 1 })
      b.handle_event("step.before_x", { syms["workflow_step_id"] => 2, syms["task_id"] => 1 })
      b.handle_event("task.completed", { syms["task_id"] => 1 })
      e = b.export
      t = e[syms["traces"]]
      puts JSON.generate(
        keys: t&.keys, status: t && t["task_1"][syms["status"]], spans: t && t["task_1"][syms["spans"]].size,
        duration: t && t["task_1"][syms["duration"]].is_a?(Float), metadata: !e[syms["metadata"]].nil?,
        active: b.stats[syms["active_traces"]], max: TaskerTraceNative::Native.settings[syms["max_traces"]],
        same: e.keys.first.equal?(syms["traces"])
      )
    RUBY
    out, err, status = Open3.capture3(RbConfig.ruby, "-rjson", "-I", lib_dir, "-e", script)
    expect(status).to be_success, err
    expect(JSON.parse(out, symbolize_names: true)).to eq(
      keys: ["task_1"], status: "success", spans: 1, duration: true, metadata: true, active: 1, max: 100_000,
      same: true
    )
  end

  it "would let Tasker's Ruby methods serve without the gem (the stand-in works)" do
    script = [steps[:tasker], <<~RUBY].join("\n")
      b = Tasker::Telemetry::TraceBackend.instance
      b.handle_event("task.started", { task_id: 1 })
      puts JSON.generate(calls: b.ruby_calls, keys: b.export[:traces].keys)
    RUBY
    out, err, status = Open3.capture3(RbConfig.ruby, "-rjson", "-I", fake_tasker_dir, "-e", script)
    expect(status).to be_success, err
    expect(JSON.parse(out, symbolize_names: true)).to eq(calls: %w[handle_event export], keys: ["ruby_0"])
  end
end
