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

RSpec.describe "Lifecycle tracer: filters written for Symbol keys, and filters that fail" do
  def exported_order(filters, order, attributes: %w[order cvv], **extra)
    TaskerTraceNative.lifecycle_filter_parameters = filters
    configure_lifecycle(lifecycle_attributes: attributes)
    publish("task.start_requested", to_state: "in_progress", task_id: 1, order: order, **extra)
    attrs(root(only_run(include_open: true)))
  end

  it "asks a Proc about Symbol keys too, as Tasker's payloads have them" do
    symbol_proc = ->(key, value) { value.replace("[HIDDEN]") if %i[card cvv].include?(key) && value.is_a?(String) }
    got = exported_order([symbol_proc], { card: "4111-secret", ref: "A-1" }, cvv: "123-secret")
    expect(got["order"]).to eq("card" => "[FILTERED]", "ref" => "A-1")
    expect(got["cvv"]).to eq("[FILTERED]")
    expect(JSON.generate(runs(include_open: true))).not_to include("secret")
  end

  it "keeps what a Proc written for String keys leaves, though it raises on Symbols" do
    string_proc = ->(key, value) { value.replace("[HIDDEN]") if key.include?("card") && value.is_a?(String) }
    got = exported_order([string_proc], { card_number: "4111-secret", ref: "A-1" })
    expect(got["order"]).to eq("card_number" => "[FILTERED]", "ref" => "A-1")
  end

  it "asks each Proc alone when one raises, so none hides another's answer" do
    string_proc = ->(key, value) { value.replace("[HIDDEN]") if key.include?("card") && value.is_a?(String) }
    symbol_proc = ->(key, value) { value.replace("[HIDDEN]") if %i[token cvv].include?(key) && value.is_a?(String) }
    [[string_proc, symbol_proc], [symbol_proc, string_proc]].each do |filters|
      TaskerTraceNative.lifecycle_reset!
      got = exported_order(filters, { token: "tok-secret", card_no: "4111-secret", ref: "A-1" }, cvv: "123-secret")
      expect(got["order"]).to eq("token" => "[FILTERED]", "card_no" => "[FILTERED]", "ref" => "A-1")
      expect(got["cvv"]).to eq("[FILTERED]")
    end
  end

  it "filters the value of a nested key cut to its limit, or shown as its class, whenever a filter is in force" do
    long = "#{"x" * 250}_password"
    got = exported_order([:password], { long => "secret-a", "ref" => "A-1" })
    expect(got["order"].values).to eq(["[FILTERED]", "A-1"])
    expect(got["order"].keys.first).to end_with("…") # cut to 256 bytes, as documented
    # A container key is shown as its class: its value is filtered too.
    TaskerTraceNative.lifecycle_reset!
    expect(exported_order([:password], { %w[password] => "secret-b", "ref" => "A-2" })["order"])
      .to eq("#<Array>" => "[FILTERED]", "ref" => "A-2")
    # Without filters a long key's value is kept.
    TaskerTraceNative.lifecycle_reset!
    expect(exported_order([], { long => "plain" })["order"].values).to eq(["plain"])
  end

  it "filters a key a Proc raises about, and keeps the filters in force when a new list is invalid" do
    picky = ->(key, _value) { raise ArgumentError, "picky" if key.to_s == "order" }
    got = exported_order([:token, picky], { ref: "A-1" }, token: "tok-secret", attributes: %w[order token])
    expect(got.values_at("order", "token")).to eq(["[FILTERED]", "[FILTERED]"])
    expect { TaskerTraceNative.lifecycle_filter_parameters = [:password, "card\xFF"] }
      .to raise_error(ArgumentError, /lifecycle_filter_parameters: "card\\xFF" is not valid UTF-8/)
    expect(TaskerTraceNative.lifecycle_filter_parameters).to eq([:token, picky])
    TaskerTraceNative.configure { |c| c.max_traces = 50 } # settings still apply
    expect(TaskerTraceNative.config.max_traces).to eq(50)
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

  it "keeps apart String ids that are not valid UTF-8 or longer than 8 KiB" do
    ids = ["task-\xFF".b.force_encoding("UTF-8"), "task-\xFE".b.force_encoding("UTF-8"),
           "#{"x" * 8192}a", "#{"x" * 8192}b"]
    ids.each_with_index do |id, i|
      TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: id, task_name: "t#{i}" })
    end
    TaskerTraceNative.record_lifecycle_event("task.completed", { task_id: ids[0] })
    got = runs(include_open: true).to_h { |r| [attrs(root(r))["task_name"], r[:end]] }
    expect(got).to eq("t0" => "completed", "t1" => "open", "t2" => "open", "t3" => "open")
    shown = runs(include_open: true).map { |r| r[:task_id] }
    expect(shown.uniq.size).to eq(4)
    expect(shown).to all(be_valid_encoding.and(satisfy { |s| s.bytesize <= 8192 }))
  end

  it "refuses ids that are neither Integer nor String-like" do
    expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: Object.new })).to be(false)
    expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: [1, 2] })).to be(false)
    expect(TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: 4 })).to be(true)
    expect(runs(include_open: true).map { |r| r[:task_id] }).to eq([4])
  end
end

RSpec.describe "Lifecycle tracer: what cannot be filtered key by key" do
  def exported(filters, **payload)
    TaskerTraceNative.lifecycle_filter_parameters = filters
    configure_lifecycle(lifecycle_attributes: %w[order note])
    publish("task.start_requested", to_state: "in_progress", task_id: 1, **payload)
    attrs(root(only_run(include_open: true)))
  end

  def everything_exported
    backend = Tasker::Telemetry::TraceBackend.instance
    [JSON.generate(runs(include_open: true)), backend.export_otlp(include_open: true),
     backend.export_otlp(include_open: true, protocol: "http/protobuf").b]
  end

  # Params-like: what Rails' ActionController::Parameters is to a payload.
  let(:params_class) do
    Class.new do
      def initialize(hash) = @hash = hash
      def to_h = @hash
      def each_pair(&) = @hash.each_pair(&)
      def to_s = @hash.to_s
    end
  end

  it "shows an object that holds other values as its class, never its to_s" do
    require "ostruct"
    require "set"
    secret = { customer: { password: "S3CRET-nested" } }
    got = exported([:password],
                   order: { struct: OpenStruct.new(secret), set: Set[secret], params: params_class.new(secret),
                            at: Time.utc(2026, 12, 3), amount: BigDecimal("1.5") },
                   note: OpenStruct.new(secret))
    expect(got["order"]).to include("struct" => "#<OpenStruct>", "set" => "#<Set>",
                                    "at" => "2026-12-03T00:00:00Z", "amount" => "0.15e1")
    expect(got["order"]["params"]).to start_with("#<")
    expect(got["note"]).to eq("#<OpenStruct>")
    everything_exported.each { |text| expect(text).not_to include("S3CRET".b) }
  end

  it "matches String filters with Unicode's full case folding, as Rails' Regexps do" do
    got = exported([:password, "ssn"], order: { "paſſword" => "S3CRET-a", "PAßWORD" => "S3CRET-b",
                                                "ſſn" => "S3CRET-c", "ref" => "A-1" })
    expect(got["order"]).to eq("paſſword" => "[FILTERED]", "PAßWORD" => "[FILTERED]",
                               "ſſn" => "[FILTERED]", "ref" => "A-1")
  end

  it "matches keys in other ASCII-compatible encodings as their UTF-8 text, as Ruby's Regexps do" do
    latin1 = "pa\xDFword".dup.force_encoding(Encoding::ISO_8859_1) # "paßword"
    got = exported([:password], order: { latin1 => "S3CRET-latin1", "caf\xE9".dup.force_encoding("ISO-8859-1") => "A-1" })
    expect(got["order"]).to eq("paßword" => "[FILTERED]", "café" => "A-1")
    everything_exported.each { |text| expect(text).not_to include("S3CRET".b) }
  end

  it "asks a Regexp about each path as it is: a key holding NUL shares no answer with another path" do
    got = exported([/\Apin\z/i], order: { "a\0pin" => "x" })
    expect(got["order"]).to eq("a\u0000pin" => "x")
    publish("task.start_requested", to_state: "in_progress", task_id: 2, order: { "a" => { "pin" => "S3CRET-pin" } })
    second = runs(include_open: true).find { |r| r[:task_id] == 2 }
    expect(attrs(root(second))["order"]).to eq("a" => { "pin" => "[FILTERED]" })
    everything_exported.each { |text| expect(text).not_to include("S3CRET".b) }
  end

  it "filters the value of a key no Regexp can match, or whose to_s fails, when a filter is in force" do
    raising_key = Object.new
    def raising_key.to_s = raise("no text")
    got = exported([:password], order: { "password".encode("UTF-16LE") => "S3CRET-utf16",
                                         "pass\xFFword" => "S3CRET-broken",
                                         raising_key => "S3CRET-key", "ref" => "A-1" })
    expect(got["order"].values).to eq(["[FILTERED]", "[FILTERED]", "[FILTERED]", "A-1"])
    everything_exported.each { |text| expect(text).not_to include("S3CRET".b) }
  end
end
