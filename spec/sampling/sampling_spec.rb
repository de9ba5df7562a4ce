# frozen_string_literal: true

require "spec_helper"
require_relative "../support/sampling_workload"
require_relative "../rails/subprocess_helper"

RSpec.describe "sampling" do
  include SubprocessHelper

  after do
    TaskerTraceNative.configure do |c|
      c.sample_ratio = 1.0
      c.sample_keep_errors = true
      c.sample_keep_slower_than = nil
      c.sample_keep_retried = true
    end
    TaskerTraceNative.lifecycle_reset!
  end

  it "keeps every failing, slow and retried run and about a tenth of the rest", timeout: 120 do
    result = SamplingWorkload.call(42)
    exported = result[:exported]
    expect(exported.uniq.size).to eq(exported.size)
    runs = (0...SamplingWorkload::RUNS).group_by { |i| SamplingWorkload.kind(i) }
    %i[fails slow retried].each do |kind|
      expect(runs.fetch(kind) - exported).to eq([]), "#{kind} runs not exported"
    end
    plain = runs.fetch(:plain).size
    plain_exported = (exported & runs.fetch(:plain)).size
    # Binomial(9,000, 0.1): mean 900, sigma 28.5; within 5 sigma.
    sigma = Math.sqrt(plain * 0.1 * 0.9)
    expect((plain_exported - (plain * 0.1)).abs).to be < 5 * sigma
    expect(result[:stats][:sampled_out]).to eq(plain - plain_exported)
    kept = result[:exporter]
    # Rescued runs have two spans each (the root and the attempt); about 90%
    # of each kind was left out at the head.
    expect(kept[:kept_error_spans]).to be_between(2 * 200, 2 * 300)
    expect(kept[:kept_slow_spans]).to be_between(2 * 120, 2 * 200)
    expect(kept[:kept_retried_spans]).to be_between(2 * 380, 2 * 500)
    expect(kept[:sampled_out]).to eq(result[:stats][:sampled_out])
  end

  it "makes the same decisions in two processes given the same trace ids", timeout: 180 do
    script = File.expand_path("../support/sampling_workload.rb", __dir__)
    env = { "TASKER_TRACE_NATIVE_TEST_HOOKS" => "1" }
    a, b, c = [7, 7, 8].map { |seed| run_command([RbConfig.ruby, "-I", SubprocessHelper::LIB, script, seed.to_s], env: env) }
    [a, b, c].each { |r| expect(r).to be_success, r.describe }
    expect(a.json[:exported]).to eq(b.json[:exported])
    expect(a.json[:sampled_out]).to eq(b.json[:sampled_out])
    expect(a.json[:exported]).not_to eq(c.json[:exported])
  end

  it "leaves the drop-in backend's export whole and samples its traces at OTLP export" do
    TaskerTraceNative.configure { |c| c.sample_ratio = 0.0 }
    backend = Tasker::Telemetry::TraceBackend.instance
    20.times do |i|
      backend.handle_event("task.started", task_id: i)
      backend.handle_event("task.completed", task_id: i)
    end
    expect(backend.export[:traces].size).to eq(20)
    before = TaskerTraceNative.exporter_stats[:sampled_out]
    json = JSON.parse(backend.export_otlp(drain: true))
    spans = json.fetch("resourceSpans").flat_map { |rs| rs.fetch("scopeSpans").flat_map { |s| s.fetch("spans") } }
    expect(spans).to be_empty
    expect(TaskerTraceNative.exporter_stats[:sampled_out] - before).to eq(20)
  end

  it "checks the settings and names them" do
    expect { TaskerTraceNative.configure { |c| c.sample_ratio = 1.5 } }
      .to raise_error(ArgumentError, "sample_ratio must be a Float from 0.0 to 1.0 (got 1.5)")
    expect { TaskerTraceNative.configure { |c| c.sample_keep_errors = nil } }
      .to raise_error(ArgumentError, "sample_keep_errors must be true or false (got nil)")
    expect { TaskerTraceNative.configure { |c| c.sample_keep_slower_than = 0 } }
      .to raise_error(ArgumentError, /\Asample_keep_slower_than must be a positive number of seconds/)
    TaskerTraceNative.configure do |c|
      c.sample_ratio = 0.25
      c.sample_keep_slower_than = 1.5
    end
    expect(TaskerTraceNative.config.sample_ratio).to eq(0.25)
    expect(TaskerTraceNative.config.sample_keep_slower_than).to eq(1.5)
    # Without OTEL_TRACES_SAMPLER the sampler is parent-based, as the
    # specification's default (parentbased_always_on) is.
    expect(TaskerTraceNative.sampler).to eq("ParentBased{root=TraceIdRatioBased{0.250000}}")
  end

  describe "OTEL_TRACES_SAMPLER" do
    OTEL_SAMPLERS = {
      "always_on" => [nil, "AlwaysOnSampler", 1.0],
      "always_off" => [nil, "AlwaysOffSampler", 0.0],
      "traceidratio" => ["0.25", "TraceIdRatioBased{0.250000}", 0.25],
      "parentbased_always_on" => [nil, "ParentBased{root=AlwaysOnSampler}", 1.0],
      "parentbased_always_off" => [nil, "ParentBased{root=AlwaysOffSampler}", 0.0],
      "parentbased_traceidratio" => ["0.5", "ParentBased{root=TraceIdRatioBased{0.500000}}", 0.5]
    }.freeze

    # The variables are read (and warned about) at the first use: a flush.
    SAMPLER_SCRIPT = <<~RUBY
      require "json"
      require "tasker_trace_native"
      TaskerTraceNative.flush
      puts JSON.generate(sampler: TaskerTraceNative.sampler, ratio: TaskerTraceNative.config.sample_ratio,
                         warnings: TaskerTraceNative.exporter_stats[:warnings])
    RUBY

    def sampler_child(value, arg)
      run_ruby(SAMPLER_SCRIPT, env: { "OTEL_TRACES_SAMPLER" => value, "OTEL_TRACES_SAMPLER_ARG" => arg })
    end

    it "takes the six samplers of the specification", timeout: 120 do
      OTEL_SAMPLERS.each do |value, (arg, described, ratio)|
        r = sampler_child(value, arg)
        expect(r).to be_success, r.describe
        expect(r.json).to eq(sampler: described, ratio: ratio, warnings: []), value
        expect(r.stderr).to eq(""), value
      end
    end

    it "warns once about an unknown sampler and ignores it" do
      r = sampler_child("jaeger_remote", nil)
      expect(r).to be_success, r.describe
      expect(r.json[:sampler]).to eq("ParentBased{root=AlwaysOnSampler}")
      message = "OTEL_TRACES_SAMPLER ignored: \"jaeger_remote\" is not a sampler this gem has (always_on, " \
                "always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
      expect(r.json[:warnings]).to eq([message])
      expect(r.stderr.lines).to eq(["tasker_trace_native: #{message}\n"])
    end

    it "lets the sample_ratio setting win over the variable" do
      r = run_ruby(<<~RUBY, env: { "OTEL_TRACES_SAMPLER" => "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG" => "0.5" })
        require "json"
        require "tasker_trace_native"
        TaskerTraceNative.configure { |c| c.sample_ratio = 0.125 }
        puts JSON.generate(sampler: TaskerTraceNative.sampler)
      RUBY
      expect(r.json[:sampler]).to eq("ParentBased{root=TraceIdRatioBased{0.125000}}")
    end
  end
end
