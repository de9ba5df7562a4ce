# frozen_string_literal: true

require "spec_helper"
require_relative "../rails/subprocess_helper"

# Connected traces against the real OpenTelemetry Ruby API and SDK with the
# Net::HTTP instrumentation, in a fresh process (real_sdk_scenario.rb). They
# are not packaged for this system: give a directory holding `git archive`s
# of their sources as OTEL_RUBY_SOURCE (see docs/connected-traces.md).
RSpec.describe "Connected traces with the real OpenTelemetry SDK" do
  include SubprocessHelper

  source = ENV.fetch("OTEL_RUBY_SOURCE", nil)
  before do
    skip "set OTEL_RUBY_SOURCE to a directory with the OpenTelemetry Ruby sources " \
         "(api, sdk, common, registry, semantic_conventions, instrumentation/base, " \
         "instrumentation/net_http) to run these" unless source && File.directory?(File.join(source.to_s, "api"))
  end

  let(:result) do
    env = { "OTEL_RUBY_SOURCE" => source, "OTEL_SERVICE_NAME" => "orders-app",
            "OTEL_RESOURCE_ATTRIBUTES" => "deployment.environment=test" }
    out = run_command([RbConfig.ruby, "-I", SubprocessHelper::LIB, File.expand_path("real_sdk_scenario.rb", __dir__)],
                      env: env, timeout: 120)
    expect(out).to be_success, out.describe
    out.json
  end

  it "nests the step's HTTP client span under the step span, and the run under the job's span" do
    spans = result[:spans]
    run = result[:runs].fetch(0)
    root, attempt = run[:spans]
    http = spans.find { |s| s[:name] == "HTTP GET" }
    expect(http).not_to be_nil, spans.inspect
    expect(http[:parent_span_id]).to eq(attempt[:span_id])
    expect(http[:trace_id]).to eq(run[:trace_id])
    expect(run[:trace_id]).to eq(result[:app][:trace])
    expect(root[:parent_span_id]).to eq(result[:app][:job])
    expect(attempt[:parent_span_id]).to eq(root[:span_id])
    expect(spans.find { |s| s[:name] == "OrderJob perform" }[:parent_span_id]).to eq(result[:app][:request])
  end

  it "exports nothing of a run under an unsampled parent, nor of its HTTP call" do
    expect(result[:runs].map { |r| r[:task_id] }).to eq([1, 3]) # task 2 sampled out, 4 still open
    expect(result[:stats]).to include(sampled_out: 1, context_restores: 0)
    expect(result[:spans].map { |s| s[:trace_id] }).not_to include(result[:app][:unsampled_trace])
    expect(result[:spans].count { |s| s[:name] == "HTTP GET" }).to eq(1)
  end

  it "keeps the root current past the transaction its opening was published in, and leaves no error" do
    run = result[:runs].find { |r| r[:task_id] == 3 }
    spans = result[:spans]
    transactions = spans.select { |s| s[:name] == "ActiveRecord.transaction" }
    expect(run[:spans].first[:parent_span_id]).to eq(transactions.first[:span_id])
    expect(spans.find { |s| s[:name] == "orchestration query" }[:parent_span_id]).to eq(run[:spans].first[:span_id])
    expect(transactions.last[:parent_span_id]).to eq(run[:spans].first[:span_id])
    expect(result[:app][:after_run]).to eq(result[:app][:transaction_job])
  end

  it "leaves nothing of a job that raised with its run open: the next job is a new trace" do
    expect(result[:app][:after_failure_clean]).to be(true)
    failing, following = %w[FailingJob NextJob].map { |n| result[:spans].find { |s| s[:name] == "#{n} perform" } }
    expect(following[:parent_span_id]).to be_nil
    expect(following[:trace_id]).not_to eq(failing[:trace_id])
  end

  it "leaves no context attached, reports no error, and exports under the SDK's resource" do
    expect(result[:context_clean]).to be(true)
    expect(result[:errors]).to eq([])
    expect(result[:service_name]).to eq("orders-app")
    expect(result[:resource_attributes]).to include("deployment.environment": "test", "process.runtime.name": "ruby")
  end
end
