# frozen_string_literal: true

require "spec_helper"
require "rbconfig"

RSpec.describe "OTLP resource settings" do
  around do |example|
    saved = TaskerTraceNative.config
    example.run
  ensure
    TaskerTraceNative.configure do |c|
      c.service_name = saved.service_name
      c.resource_attributes = saved.resource_attributes
    end
  end

  def fresh_config(env)
    script = 'require "tasker_trace_native"; c = TaskerTraceNative.config; ' \
             "puts Marshal.dump([c.service_name, c.resource_attributes]).unpack1('H*')"
    out = IO.popen(env, [RbConfig.ruby, "-I", File.expand_path("../../lib", __dir__), "-e", script], &:read)
    raise "child failed" unless $?.success?

    Marshal.load([out.strip].pack("H*")) # rubocop:disable Security/MarshalLoad
  end

  it "takes a service name and resource attributes, shown by config" do
    TaskerTraceNative.configure do |c|
      c.service_name = "billing"
      c.resource_attributes = { "deployment.environment" => "prod", team: :core, replicas: 3, ratio: 0.5,
                                canary: true, zones: %w[a b] }
    end
    config = TaskerTraceNative.config
    expect(config.service_name).to eq("billing")
    expect(config.resource_attributes).to eq("deployment.environment" => "prod", "team" => :core, "replicas" => 3,
                                             "ratio" => 0.5, "canary" => true, "zones" => %w[a b])
    expect(config.to_h).to include(service_name: "billing")
  end

  {
    service_name: ["", "  ", :billing, 5, nil, "\xFF".b],
    resource_attributes: [nil, [], "a=b", { 1 => "x" }, { "" => "x" }, { "a" => { "b" => 1 } }, { "a" => nil },
                          { "a" => [{}] }]
  }.each do |setting, bad_values|
    bad_values.each do |bad|
      it "refuses #{setting} = #{bad.inspect} with an ArgumentError naming the setting; nothing changes" do
        before = TaskerTraceNative.config.to_h
        expect do
          TaskerTraceNative.configure do |c|
            c.max_traces = 7
            c.public_send(:"#{setting}=", bad)
          end
        end.to raise_error(ArgumentError, /\A#{setting} must be/)
        expect(TaskerTraceNative.config.to_h).to eq(before)
      end
    end
  end

  it "checks resource_attributes again when applied (a Hash changed in place); nothing changes" do
    before = TaskerTraceNative.config.to_h
    expect do
      TaskerTraceNative.configure do |c|
        c.max_traces = 7
        attributes = { "team" => "a" }
        c.resource_attributes = attributes
        attributes["bad"] = { "nested" => 1 }
      end
    end.to raise_error(ArgumentError, /\Aresource_attributes must be/)
    expect(TaskerTraceNative.config.to_h).to eq(before)
  end

  it "names the service after a service.name in resource_attributes, unless service_name is given too" do
    script = <<~RUBY
      require "tasker_trace_native"
      require "json"
      TaskerTraceNative.configure { |c| c.resource_attributes = { "service.name" => :orders, "team" => "a" } }
      b = Tasker::Telemetry::TraceBackend.instance
      b.handle_event("task.started", task_id: 1)
      b.handle_event("task.completed", task_id: 1)
      sent = JSON.parse(b.export_otlp)["resourceSpans"][0]["resource"]["attributes"]
                 .find { |a| a["key"] == "service.name" }["value"]["stringValue"]
      first = [TaskerTraceNative.config.service_name, sent]
      TaskerTraceNative.configure { |c| c.service_name = "billing" }
      given = TaskerTraceNative.config.service_name
      puts JSON.generate(first: first, given: given)
    RUBY
    env = { "OTEL_SERVICE_NAME" => "from_env", "OTEL_RESOURCE_ATTRIBUTES" => nil }
    out = IO.popen(env, [RbConfig.ruby, "-I", File.expand_path("../../lib", __dir__), "-e", script], &:read)
    expect($?).to be_success
    # Ruby first, then the environment: the setting's service.name wins over
    # OTEL_SERVICE_NAME, and service_name over both.
    expect(JSON.parse(out)).to eq("first" => %w[orders orders], "given" => "billing")
  end

  it "defaults to OTEL_SERVICE_NAME, else service.name in OTEL_RESOURCE_ATTRIBUTES, else tasker" do
    none = { "OTEL_SERVICE_NAME" => nil, "OTEL_RESOURCE_ATTRIBUTES" => nil }
    expect(fresh_config(none)).to eq(["tasker", {}])
    expect(fresh_config(none.merge("OTEL_SERVICE_NAME" => "orders",
                                   "OTEL_RESOURCE_ATTRIBUTES" => "service.name=x,deployment.environment=prod%20eu")))
      .to eq(["orders", { "deployment.environment" => "prod eu" }])
    expect(fresh_config(none.merge("OTEL_RESOURCE_ATTRIBUTES" => "service.name=x,team=a")))
      .to eq(["x", { "team" => "a" }])
    # A malformed value is ignored whole, as the specification asks.
    expect(fresh_config(none.merge("OTEL_RESOURCE_ATTRIBUTES" => "team=a,broken")))
      .to eq(["tasker", {}])
  end
end
