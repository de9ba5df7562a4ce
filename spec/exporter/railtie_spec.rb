# frozen_string_literal: true

require "spec_helper"
require_relative "exporter_helper"

# `config.tasker_trace_native.exporter = :otlp` through the Railtie, in a
# booted Rails application that then forks a worker, as Puma's preload_app!
# does: no exporter thread exists after boot, the worker starts its own at
# its first event, and the master never starts one.
RSpec.describe "Background exporter: Rails" do
  let(:receiver) { ExporterSpecHelper::Receiver.new }

  after { receiver.close }

  # A minimal application (no database) with `settings` in
  # config.tasker_trace_native.
  def app(settings)
    lines = settings.map { |k, v| "  config.tasker_trace_native.#{k} = #{v.inspect}" }.join("\n")
    <<~RUBY
      require "rails"
      require "logger"
      class SpecApp < Rails::Application
        config.root = Dir.pwd
        config.eager_load = false
        config.logger = Logger.new(nil)
        config.secret_key_base = "0" * 64
      #{lines}
      end
    RUBY
  end

  it "is turned on by config.tasker_trace_native and starts no thread at boot", timeout: 120 do
    script = app(exporter: :otlp, export_schedule_delay: 0.2) + <<~'RUBY'
      SpecApp.initialize!
      stats = TaskerTraceNative.exporter_stats
      report(boot: { threads: exporter_threads, enabled: stats[:enabled], running: stats[:running],
                     config: TaskerTraceNative.config.to_h.slice(:exporter, :export_schedule_delay) })
      worker = fork do
        lifecycle(7)
        flushed = TaskerTraceNative.flush(timeout: 10)
        report(worker: { pid: Process.pid, threads: exporter_threads, flushed: flushed })
      end
      Process.wait(worker)
      report(master: { threads: exporter_threads, running: TaskerTraceNative.exporter_stats[:running] })
    RUBY
    env = exporter_env(receiver, extra: { "OTEL_TRACES_EXPORTER" => nil, "OTEL_BSP_SCHEDULE_DELAY" => nil })
    result = run_child(script, env: env, timeout: 90)
    expect_success(result)
    out = reports(result).to_h { |r| [r.keys.first, r.values.first] }
    expect(out[:boot]).to eq(threads: 0, enabled: true, running: false,
                             config: { exporter: "otlp", export_schedule_delay: 0.2 })
    expect(out[:worker]).to include(threads: 1, flushed: { sent: 1, failed: 0, error: nil })
    expect(out[:master]).to eq(threads: 0, running: false)
    expect(receiver.trace_keys).to eq([["task_7", out[:worker][:pid]]])
  end

  it "stops the boot on a bad exporter setting, naming it" do
    script = app(exporter: :zipkin) + <<~'RUBY'
      begin
        SpecApp.initialize!
      rescue ArgumentError => e
        report(error: e.message)
      end
    RUBY
    result = run_child(script, env: exporter_env(receiver).merge("OTEL_TRACES_EXPORTER" => nil), timeout: 90)
    expect_success(result)
    expect(reports(result).last[:error])
      .to eq("config.tasker_trace_native.exporter must be :none, :otlp, :console or [:otlp, :console] " \
          "(got :zipkin)")
  end
end
