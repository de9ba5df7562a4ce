# frozen_string_literal: true

require "spec_helper"
require "json"

# Structured values under allowlisted keys: exported as structure (never a
# Ruby `to_s`/`inspect`), with every nested key filtered as Rails'
# ParameterFilter filters it; and task ids that cannot be told apart are
# refused rather than merged.
RSpec.describe "Lifecycle tracer: nested values and their secrets" do
  SECRETS = %w[hunter2 tok-9f8e s3cr3t-value 4242-pin card-0000-1111].freeze

  let(:order) do
    {
      id: 7,
      customer: { name: "Ann", password: "hunter2", card: "card-0000-1111" },
      items: [{ sku: "A1", token: "tok-9f8e" }, { sku: "B2" }],
      "api_SECRET_key" => "s3cr3t-value",
      pin: "4242-pin",
      billing: { card: "visible-card" }
    }
  end

  let(:filters) do
    [:password, "token", /secret/i, ->(key, value) { value.replace("x") if key == "pin" && value.is_a?(String) },
     "order.customer.card"]
  end

  def record_run
    publish("task.start_requested", to_state: "in_progress", task_id: 1, task_name: "order", order: order)
    publish("step.execution_requested", task_id: 1, step_id: 2, order: order, error_message: "boom")
    publish("step.failed", task_id: 1, step_id: 2, order: order, error_message: "failed")
  end

  def everything_exported
    backend = Tasker::Telemetry::TraceBackend.instance
    [JSON.generate(runs(include_open: true)),
     backend.export_otlp(include_open: true),
     backend.export_otlp(include_open: true, protocol: "http/protobuf").b]
  end

  before do
    TaskerTraceNative.lifecycle_filter_parameters = filters
    configure_lifecycle(lifecycle_attributes: %w[order])
    record_run
  end

  it "exports a Hash under an allowlisted key as structure, with nested secrets filtered" do
    value = attrs(root(only_run(include_open: true)))["order"]
    expect(value).to eq(
      "id" => 7,
      "customer" => { "name" => "Ann", "password" => "[FILTERED]", "card" => "[FILTERED]" },
      "items" => [{ "sku" => "A1", "token" => "[FILTERED]" }, { "sku" => "B2" }],
      "api_SECRET_key" => "[FILTERED]",
      "pin" => "[FILTERED]",
      "billing" => { "card" => "visible-card" }
    )
  end

  it "lets none of the secret values out, in lifecycle_runs, JSON or protobuf" do
    everything_exported.each do |text|
      SECRETS.each { |secret| expect(text).not_to include(secret.b) }
      expect(text).to include("visible-card".b, "Ann".b)
      expect(text).not_to include("=>".b)
    end
  end

  it "filters with the Rails application's filter_parameters when none are set" do
    TaskerTraceNative.lifecycle_filter_parameters = nil
    app = Struct.new(:config).new(Struct.new(:filter_parameters).new([:password]))
    rails = Module.new
    rails.define_singleton_method(:application) { app }
    stub_const("Rails", rails)
    configure_lifecycle(lifecycle_attributes: %w[order])
    TaskerTraceNative.lifecycle_reset!
    publish("task.start_requested", to_state: "in_progress", task_id: 3, order: { id: 7, customer: { password: "hunter2" } })
    value = attrs(root(only_run(include_open: true)))["order"]
    expect(value).to eq("id" => 7, "customer" => { "password" => "[FILTERED]" })
    everything_exported.each { |text| expect(text).not_to include("hunter2".b) }
  end
end

RSpec.describe "Lifecycle tracer: task ids" do
  it "refuses and counts task ids whose to_s raises, instead of merging their tasks" do
    failing = Class.new { def to_s = raise("no name") }
    stub_const("OpaqueId", failing)
    before = TaskerTraceNative.lifecycle_stats
    2.times do
      expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: OpaqueId.new })).to be(false)
    end
    after = TaskerTraceNative.lifecycle_stats
    expect(after[:events_refused] - before[:events_refused]).to eq(2)
    expect(runs(include_open: true)).to eq([])
  end

  it "refuses ids that are neither Integer nor String-like" do
    expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: Object.new })).to be(false)
    expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: [1, 2] })).to be(false)
    expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: 4 })).to be(true)
    expect(runs(include_open: true).map { |r| r[:task_id] }).to eq([4])
  end
end
