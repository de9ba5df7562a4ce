# frozen_string_literal: true

require "spec_helper"
require_relative "exporter_helper"

# An endpoint with a password in it (`http://user:password@host`, sent as
# Basic authentication) never shows the password: not in flush's error,
# exporter_stats, the warnings on standard error, the message at exit,
# `config.inspect` or an ArgumentError.
RSpec.describe "Background exporter: an endpoint's password" do
  ENDPOINT_SECRET = "hunter2-SECRET"

  # A port on 127.0.0.1 that refuses connections.
  let(:closed_port) { TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] } }

  it "stays out of every message about the endpoint" do
    url = "http://otel:#{ENDPOINT_SECRET}@127.0.0.1:#{closed_port}/v1/traces"
    env = exporter_env(Struct.new(:url).new(url), delay_ms: 60_000, extra: { "OTEL_BSP_EXPORT_TIMEOUT" => "300" })
    result = run_child(<<~RUBY, env: env)
      3.times { |i| lifecycle(i + 1) }
      flushed = TaskerTraceNative.flush(timeout: 5)
      TaskerTraceNative.configure { |c| c.otlp_endpoint = "http://otel:#{ENDPOINT_SECRET}@127.0.0.1:#{closed_port}" }
      shown = TaskerTraceNative.config.inspect
      refused = begin
        TaskerTraceNative.configure { |c| c.otlp_endpoint = "http://otel:#{ENDPOINT_SECRET}@127.0.0.1:99999" }
      rescue ArgumentError => e
        e.message
      end
      report(error: flushed[:error], failed: flushed[:failed], last_error: TaskerTraceNative.exporter_stats[:last_error],
             inspect: shown, refused: refused, endpoint: TaskerTraceNative.config.otlp_endpoint)
    RUBY
    expect_success(result)
    report = reports(result).last
    shown = "otel:***@127.0.0.1:#{closed_port}"
    expect(report[:failed]).to eq(3)
    expect(report[:error]).to include("(http://#{shown}/v1/traces)")
    expect(report[:last_error]).to include("(http://#{shown}/v1/traces)")
    expect(report[:inspect]).to include("otlp_endpoint=\"http://#{shown}\"")
    expect(report[:refused]).to eq("otlp_endpoint must be an http:// or https:// URL String, or nil " \
                                   '(got "http://otel:***@127.0.0.1:99999"): http://otel:***@127.0.0.1:99999 ' \
                                   'has the port "99999", not a port number (1 to 65535)')
    # The setting itself is what was given.
    expect(report[:endpoint]).to eq("http://otel:#{ENDPOINT_SECRET}@127.0.0.1:#{closed_port}")
    expect(result.stderr).to include("exports failing", "not exported at exit", shown)
    expect(result.stdout.sub(report[:endpoint], "") + result.stderr).not_to include(ENDPOINT_SECRET)
  end

  it "stays out of the warning about an unusable endpoint variable" do
    env = exporter_env(Struct.new(:url).new("otel:#{ENDPOINT_SECRET}@collector:4318"))
    result = run_child("TaskerTraceNative.configure { }; report(warnings: TaskerTraceNative.exporter_stats[:warnings])",
                       env: env)
    expect_success(result)
    warning = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ignored: otel:***@collector:4318 has no scheme " \
              "(write http://otel:***@collector:4318 or https://otel:***@collector:4318)"
    expect(reports(result).last[:warnings]).to eq([warning])
    expect(result.stderr).to eq("tasker_trace_native: #{warning}\n")
  end
end
