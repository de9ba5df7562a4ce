# frozen_string_literal: true

require "spec_helper"
require_relative "exporter_helper"

# The exporter's settings and methods, in this process with the exporter off
# (the default): no thread is ever started here. What the exporter does when
# on is in the other files of spec/exporter, each in a process of its own.
RSpec.describe "Background exporter: settings and methods" do
  around do |example|
    saved = TaskerTraceNative.config.to_h.slice(*ExporterSpecHelper::SETTINGS)
    example.run
  ensure
    TaskerTraceNative.configure { |c| saved.each { |k, v| c.public_send(:"#{k}=", v) } }
  end

  it "is off by default, with OpenTelemetry's batch span processor figures" do
    expect(TaskerTraceNative.config.to_h.slice(*ExporterSpecHelper::SETTINGS))
      .to eq(exporter: :none, export_schedule_delay: 5.0, export_max_batch_size: 512, export_timeout: 30.0)
  end

  it "lists its settings among the Configuration's (and so the Railtie's)" do
    expect(TaskerTraceNative::Configuration::SETTINGS).to include(*ExporterSpecHelper::SETTINGS)
  end

  it "takes :otlp or \"otlp\", and seconds as Integers or Floats, and reports them" do
    TaskerTraceNative.configure do |c|
      c.exporter = "otlp"
      c.export_schedule_delay = 0.25
      c.export_max_batch_size = 1_000_000
      c.export_timeout = 2
    end
    expect(TaskerTraceNative.config.to_h.slice(*ExporterSpecHelper::SETTINGS))
      .to eq(exporter: :otlp, export_schedule_delay: 0.25, export_max_batch_size: 1_000_000, export_timeout: 2.0)
    expect(TaskerTraceNative.exporter_stats).to include(enabled: true, running: false)
    TaskerTraceNative.configure { |c| c.exporter = :none }
    expect(TaskerTraceNative.exporter_stats).to include(enabled: false, running: false)
  end

  {
    exporter: [nil, 1, [], {}, "", :"", :jaeger, "OTLP", "otlp ", true],
    export_schedule_delay: [nil, "5", :five, [], 0, 0.0, 0.0001, -1, 86_400.5, 10**30, Float::INFINITY, Float::NAN],
    export_max_batch_size: [nil, "512", 1.5, 512.0, [], 0, -1, 1_000_001, 10**30],
    export_timeout: [nil, "30", {}, 0, -0.5, 86_401, 10**30, -Float::INFINITY, Float::NAN]
  }.each do |setting, bad_values|
    bad_values.each do |bad|
      it "refuses #{setting} = #{bad.inspect} with an ArgumentError naming the setting; nothing changes" do
        before = TaskerTraceNative.config.to_h
        expect do
          TaskerTraceNative.configure do |c|
            c.exporter = :otlp
            c.public_send(:"#{setting}=", bad)
          end
        end.to raise_error(ArgumentError, /\A#{setting} must be/)
        expect(TaskerTraceNative.config.to_h).to eq(before)
      end
    end
  end

  %i[flush shutdown].each do |method|
    describe "TaskerTraceNative.#{method}" do
      it "does nothing with the exporter off" do
        expect(TaskerTraceNative.public_send(method)).to eq(sent: 0, failed: 0, error: nil)
        expect(TaskerTraceNative.public_send(method, timeout: 0.5)).to eq(sent: 0, failed: 0, error: nil)
      end

      [nil, "5", :five, [], 0, 0.0, -1, 86_401, 10**30, Float::INFINITY, Float::NAN].each do |bad|
        it "refuses timeout: #{bad.inspect} with an ArgumentError naming it" do
          expect { TaskerTraceNative.public_send(method, timeout: bad) }
            .to raise_error(ArgumentError, /\Atimeout must be a positive number of seconds/)
        end
      end

      it "refuses unknown and positional arguments" do
        expect { TaskerTraceNative.public_send(method, 5) }.to raise_error(ArgumentError)
        expect { TaskerTraceNative.public_send(method, deadline: 5) }.to raise_error(ArgumentError)
      end
    end
  end

  it "refuses what is not a monotonic time for Native.adopt_inherited, changing nothing" do
    before = TaskerTraceNative::Native.unowned_before
    expect(before).to be_nil # the original process owns everything it holds
    { "x" => TypeError, [] => TypeError, {} => TypeError, -1 => RangeError, 2**70 => RangeError }.each do |bad, error|
      expect { TaskerTraceNative::Native.adopt_inherited(bad) }.to raise_error(error)
    end
    expect(TaskerTraceNative::Native.unowned_before).to eq(before)
  end

  it "reports its stats in a fixed shape" do
    stats = TaskerTraceNative.exporter_stats
    expect(stats.keys).to eq(%i[enabled running pid exports failed_exports exported_traces exported_spans retries
                                rejected_traces rejected_spans dropped_traces queued inherited_discarded
                                sampled_out kept_error_spans
                                kept_slow_spans kept_retried_spans last_error last_error_at
                                next_attempt_at warnings limit_cuts])
    expect(stats).to include(enabled: false, running: false, pid: Process.pid, exports: 0, last_error: nil,
                             last_error_at: nil, next_attempt_at: nil, warnings: [])
  end

  it "reads OTEL_TRACES_EXPORTER, OTEL_SDK_DISABLED and OTEL_BSP_* (milliseconds) as they are now" do
    script = 'require "json"; require "tasker_trace_native"; ' \
             "c = TaskerTraceNative.config; s = TaskerTraceNative.exporter_stats; " \
             "puts JSON.generate(c.to_h.slice(:exporter, :export_schedule_delay, :export_max_batch_size, " \
             ":export_timeout).merge(enabled: s[:enabled], warnings: s[:warnings]))"
    run = lambda do |env|
      result = run_ruby(script, env: env, timeout: 30)
      expect(result.status.success?).to be(true), result.describe
      result.json
    end
    on = run.call("OTEL_TRACES_EXPORTER" => "otlp", "OTEL_BSP_SCHEDULE_DELAY" => "250",
                  "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => "64", "OTEL_BSP_EXPORT_TIMEOUT" => "1500",
                  "OTEL_SDK_DISABLED" => nil)
    expect(on).to eq(exporter: "otlp", export_schedule_delay: 0.25, export_max_batch_size: 64,
                     export_timeout: 1.5, enabled: true, warnings: [])
    disabled = run.call("OTEL_TRACES_EXPORTER" => "otlp", "OTEL_SDK_DISABLED" => "true")
    expect(disabled).to include(exporter: "otlp", enabled: false)
    bad = run.call("OTEL_TRACES_EXPORTER" => "zipkin", "OTEL_BSP_SCHEDULE_DELAY" => "soon",
                   "OTEL_SDK_DISABLED" => nil)
    expect(bad).to include(exporter: "none", export_schedule_delay: 5.0, enabled: false)
    # Warned about at the first use (here a flush), not before.
    expect(bad[:warnings]).to eq([])
    script = script.sub("require \"tasker_trace_native\"; ", "require \"tasker_trace_native\"; TaskerTraceNative.flush; ")
    bad = run.call("OTEL_TRACES_EXPORTER" => "zipkin", "OTEL_BSP_SCHEDULE_DELAY" => "soon",
                   "OTEL_SDK_DISABLED" => nil)
    expect(bad[:warnings].join("\n")).to include("OTEL_TRACES_EXPORTER ignored", "OTEL_BSP_SCHEDULE_DELAY ignored")
  end
end
