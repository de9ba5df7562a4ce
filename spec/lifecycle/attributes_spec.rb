# frozen_string_literal: true

require "spec_helper"
require "date"
require "json"
require "active_support/hash_with_indifferent_access"

RSpec.describe "Lifecycle tracer: attributes, secrets and values" do
  def step_attrs(payload = {})
    publish("task.start_requested", to_state: "in_progress", task_id: 1)
    publish("step.execution_requested", { task_id: 1, step_id: 2 }.merge(payload))
    attrs(attempts(only_run(include_open: true)).first)
  end

  def exported_json
    Tasker::Telemetry::TraceBackend.instance.export_otlp(include_open: true)
  end

  describe "the secrets rule" do
    it "never exports step_results, step_inputs, task_context or backtrace by default" do
      secret = "sk_live_do_not_leak"
      play(ts.web_process(1, "order", context: { api_key: secret }))
      play(ts.worker_start(1, "order", [10], context: { api_key: secret }))
      failed = ts.step_attempt(1, 10, "charge", 1, outcome: :failed, retry_after: true).map do |name, payload|
        name.is_a?(String) ? [name, payload.merge(step_results: { token: secret }, backtrace: [secret])] : [name, payload]
      end
      play(failed)
      play(ts.step_attempt(1, 10, "charge", 2).map { |n, p| n.is_a?(String) ? [n, p.merge(step_inputs: { secret => 1 })] : [n, p] })
      play(ts.finish(1, "order", :completed, total: 1))
      everything = JSON.generate(runs(include_open: true)) + exported_json
      expect(everything).not_to include(secret)
      keys = runs.first[:spans].flat_map { |s| s[:attributes].keys + s[:events].flat_map { |e| e[:attributes].keys } }
      expect(keys.uniq - %w[tasker.task_id tasker.task_name tasker.step_id tasker.step_name tasker.attempt_number
                            tasker.retry_limit tasker.error tasker.exception_class tasker.total_steps
                            tasker.completed_steps tasker.failed_steps tasker.execution_duration]).to eq([])
    end

    it "exports each attribute name once, the first value winning, when a chosen key shares a known name" do
      configure_lifecycle(lifecycle_attributes: %i[exception_class error])
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      publish("step.execution_requested", task_id: 1, step_id: 2)
      publish("step.failed", task_id: 1, step_id: 2, error_message: "timed out", error_class: "Net::ReadTimeout",
                             exception_class: "StandardError", error: "E-VALUE")
      shown = attrs(attempts(only_run(include_open: true)).first)
      span = JSON.parse(exported_json)["resourceSpans"][0]["scopeSpans"][0]["spans"]
                 .find { |s| s["name"] == "tasker.step.execution" }
      keys = span["attributes"].map { |a| a["key"] }
      expect(keys).to eq(keys.uniq)
      exported = span["attributes"].to_h { |a| [a["key"].delete_prefix("tasker."), a["value"].values.first] }
      expect(exported.values_at("error", "exception_class")).to eq(shown.values_at("error", "exception_class"))
      expect(span["droppedAttributesCount"]).to be_positive
    end

    it "adds the payload keys named in lifecycle_attributes (Strings or Symbols)" do
      configure_lifecycle(lifecycle_attributes: ["region", :priority])
      expect(TaskerTraceNative.config.lifecycle_attributes).to eq(%w[region priority])
      expect(step_attrs(region: "eu", priority: 3, other: 1)).to include("region" => "eu", "priority" => 3)
      expect(step_attrs.keys).not_to include("other")
    end

    it "makes one read plan per distinct setting, however often settings go back and forth" do
      hooks = TaskerTraceNative::TestHooks
      # The allowlist, the filter decisions and the nested-key filter change
      # in turn: the first round trips meet each combination once.
      4.times { |i| configure_lifecycle(lifecycle_attributes: i.even? ? %w[region] : %w[priority]) }
      made = hooks.read_plans_made
      21.times { |i| configure_lifecycle(lifecycle_attributes: i.even? ? %w[region] : %w[priority]) }
      expect(hooks.read_plans_made).to eq(made)
      a = step_attrs(region: "eu", priority: 3)
      expect(a).to include("region" => "eu")
      expect(a.keys).not_to include("priority")
      configure_lifecycle(lifecycle_attributes: %w[region zone])
      expect(hooks.read_plans_made).to be > made
      expect(step_attrs(zone: "z1")).to include("zone" => "z1")
    end

    it "exports allowlisted and known keys that match the filters as [FILTERED], decided once per key" do
      TaskerTraceNative.lifecycle_filter_parameters = [:token, /\Acard/, "MESSAGE"]
      configure_lifecycle(lifecycle_attributes: %w[api_token card_number region order])
      expect(TaskerTraceNative::Native.lifecycle_filtered_keys)
        .to match_array(%w[error_message api_token card_number])
      a = step_attrs(api_token: "t0k", card_number: "4242", region: "eu", error_message: "boom",
                     order: { "x" => 1 })
      expect(a).to include("api_token" => "[FILTERED]", "card_number" => "[FILTERED]", "error" => "[FILTERED]",
                           "region" => "eu", "order" => { "x" => 1 })
      expect(exported_json).not_to include("t0k", "4242", "boom")
    end

    it "uses the Rails application's filter_parameters when none are set" do
      app = Struct.new(:config).new(Struct.new(:filter_parameters).new([:region]))
      rails = Module.new
      rails.define_singleton_method(:application) { app }
      stub_const("Rails", rails)
      configure_lifecycle(lifecycle_attributes: %w[region])
      expect(step_attrs(region: "eu")).to include("region" => "[FILTERED]")
    end

    it "filters with ActiveSupport::ParameterFilter's rules when it is loaded (procs too)" do
      require "active_support/parameter_filter"
      TaskerTraceNative.lifecycle_filter_parameters = [->(key, value) { value.replace("x") if key == "zone" }]
      configure_lifecycle(lifecycle_attributes: %w[zone region])
      expect(step_attrs(zone: "z1", region: "eu")).to include("zone" => "[FILTERED]", "region" => "eu")
    end

    it "filters an allowlisted key until its filtering was decided" do
      configure_lifecycle(lifecycle_attributes: %w[region])
      publisher # subscribed (which decides the filtering) before the decisions are forgotten
      # Decisions that forget the key (as between two settings changes).
      TaskerTraceNative::Native.set_lifecycle_filters({})
      expect(TaskerTraceNative::Native.lifecycle_filtered_keys).to eq(%w[region])
      expect(step_attrs(region: "eu")).to include("region" => "[FILTERED]")
    end

    it "never filters task_id and step_id, which identify the trace" do
      TaskerTraceNative.lifecycle_filter_parameters = [:id]
      expect(step_attrs).to include("task_id" => 1, "step_id" => 2)
    end
  end

  describe "values" do
    before { configure_lifecycle(lifecycle_attributes: %w[v]) }

    it "keeps Integers, Floats, booleans and Strings typed; Symbols as their names" do
      expect(step_attrs(v: 7)["v"]).to eq(7)
      expect(step_attrs(v: -1.5)["v"]).to eq(-1.5)
      expect(step_attrs(v: false)["v"]).to be(false)
      expect(step_attrs(v: :sym)["v"]).to eq("sym")
      expect(step_attrs(v: "héllo ✓")["v"]).to eq("héllo ✓")
    end

    it "keeps Arrays as structure, at most 128 elements and then a marker", :gc_stress_safe do
      expect(step_attrs(v: [1, "a", :b, nil, 2.5, [3]])["v"]).to eq([1, "a", "b", "", 2.5, [3]])
      long = step_attrs(v: (1..1000).to_a)["v"]
      expect(long.size).to eq(129)
      expect(long.first(128)).to eq((1..128).to_a)
      expect(long.last).to eq("[truncated]")
    end

    it "keeps every Integer that fits in 64 bits an Integer, also past Ruby's Fixnums (2**62)" do
      edges = [2**62, 2**63 - 1, -2**62 - 1, -2**63]
      expect(step_attrs(v: edges, retry_limit: 2**62)).to include("v" => edges, "retry_limit" => 2**62)
      expect(step_attrs(v: 2**63)["v"]).to eq((2**63).to_s)
      expect(step_attrs(v: -2**63 - 1)["v"]).to eq((-2**63 - 1).to_s)
      step = JSON.parse(exported_json)["resourceSpans"][0]["scopeSpans"][0]["spans"]
                 .find { |s| s["name"] == "tasker.step.execution" }
      limit = step["attributes"].find { |a| a["key"] == "tasker.retry_limit" }
      expect(limit["value"]).to eq("intValue" => (2**62).to_s)
    end

    it "gives Integers beyond 64 bits as decimal Strings, Time and Date as ISO 8601, Hashes as structure, others as to_s" do
      require "time"
      expect(step_attrs(v: 2**70)["v"]).to eq((2**70).to_s)
      expect(step_attrs(v: Time.utc(2026, 12, 1, 10, 0, 0))["v"]).to eq("2026-12-01T10:00:00Z")
      expect(step_attrs(v: Date.new(2026, 12, 1))["v"]).to eq("2026-12-01")
      expect(step_attrs(v: { a: 1 })["v"]).to eq("a" => 1)
    end

    it "leaves nil out, and replaces invalid bytes" do
      expect(step_attrs(v: nil).key?("v")).to be(false)
      expect(step_attrs(v: "a\xffb".b)["v"]).to eq("a\uFFFDb")
    end

    it "records Strings up to 4 bytes a character of the value length limit, marked with … beyond" do
      # The export cuts them to the limit (8192 characters by default).
      v = step_attrs(v: "é" * 20_000)["v"]
      expect(v).to eq("#{'é' * (32 * 1024 / 2)}…")
      expect(step_attrs(v: "é" * 10_000)["v"]).to eq("é" * 10_000)
    end

    it "describes objects whose to_s raises as #<ClassName>; interrupts propagate" do
      failing = Class.new { def to_s = raise("nope") }
      stub_const("FailingToS", failing)
      expect(step_attrs(v: FailingToS.new)["v"]).to eq("#<FailingToS>")
      expect(step_attrs(v: BasicObject.new)["v"]).to eq("#<BasicObject>")
      interrupting = Class.new { def to_s = raise(Interrupt) }
      expect { step_attrs(v: interrupting.new) }.to raise_error(Interrupt)
    end

    it "reads String keys when the payload has no :task_id but a \"task_id\" (HashWithIndifferentAccess)" do
      payload = ActiveSupport::HashWithIndifferentAccess.new(task_id: 9, task_name: "hwia", v: 1,
                                                             to_state: "in_progress")
      expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", payload)).to be(true)
      expect(TaskerTraceNative.record_lifecycle_event("task.completed", { "task_id" => 9 })).to be(true)
      expect(attrs(root(only_run))).to include("task_id" => 9, "task_name" => "hwia", "v" => 1)
    end

    it "finds allowlisted keys in a large allowlist, and keys that were dynamic Symbols first" do
      dynamic = "dyn_key_#{Process.pid}_#{rand(1 << 30)}"
      key = dynamic.to_sym # a dynamic Symbol before the allowlist names it
      names = Array.new(200) { |i| "k#{i}" } + [dynamic]
      configure_lifecycle(lifecycle_attributes: names)
      got = step_attrs(k0: 0, k150: 150, key => "dyn", other: 1)
      expect(got).to include("k0" => 0, "k150" => 150, dynamic => "dyn")
      expect(got.keys).not_to include("other")
      configure_lifecycle(lifecycle_attributes: [dynamic])
      expect(step_attrs(key => "small plan")[dynamic]).to eq("small plan")
    end

    it "does not read a Hash's default value" do
      payload = Hash.new { |_h, k| raise "read #{k}" }.merge(task_id: 1)
      expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", payload)).to be(true)
    end
  end

  describe "the attribute prefix" do
    after do
      TaskerTraceNative.configure do |c|
        c.service_name = "tasker"
        c.attribute_prefix = nil
      end
    end

    it "is tasker. by default, whatever the service name (OTEL_SERVICE_NAME names the resource only)" do
      TaskerTraceNative.configure { |c| c.service_name = "orders-worker" }
      publish("task.start_requested", to_state: "in_progress", task_id: 1, task_name: "x")
      expect(runs(include_open: true).first[:spans].first[:attributes]).to eq("tasker.task_name" => "x",
                                                                               "tasker.task_id" => 1)
      expect(TaskerTraceNative.config.service_name).to eq("orders-worker")
    end

    it "follows the attribute_prefix setting" do
      TaskerTraceNative.configure { |c| c.attribute_prefix = "orders" }
      publish("task.start_requested", to_state: "in_progress", task_id: 1, task_name: "x")
      expect(runs(include_open: true).first[:spans].first[:attributes]).to eq("orders.task_name" => "x",
                                                                               "orders.task_id" => 1)
      expect(TaskerTraceNative.config.attribute_prefix).to eq("orders")
    end

    it "defaults to Tasker's telemetry service_name when Tasker is loaded" do
      expect(Tasker).not_to respond_to(:configuration)
      configuration = Struct.new(:telemetry).new(Struct.new(:service_name).new("billing"))
      Tasker.define_singleton_method(:configuration) { configuration }
      publish("task.start_requested", to_state: "in_progress", task_id: 1, task_name: "x")
      expect(runs(include_open: true).first[:spans].first[:attributes].keys).to eq(%w[billing.task_name
                                                                                     billing.task_id])
      # The setting wins over Tasker's name.
      TaskerTraceNative.configure { |c| c.attribute_prefix = "mine" }
      expect(runs(include_open: true).first[:spans].first[:attributes].keys.first).to eq("mine.task_name")
    ensure
      Tasker.singleton_class.send(:remove_method, :configuration) if Tasker.respond_to?(:configuration)
      TaskerTraceNative::Lifecycle.sync_attribute_prefix!
    end

    it "is a non-empty String or nil" do
      expect { TaskerTraceNative.configure { |c| c.attribute_prefix = "" } }
        .to raise_error(ArgumentError, /attribute_prefix must be a non-empty String or nil/)
      expect { TaskerTraceNative.configure { |c| c.attribute_prefix = :x } }
        .to raise_error(ArgumentError, /attribute_prefix/)
    end
  end
end
