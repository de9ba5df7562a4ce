# frozen_string_literal: true

require "spec_helper"
require_relative "../rails/subprocess_helper"

# Connected traces in app-side scenarios (app_scenarios.rb, in a fresh
# process): on the real OpenTelemetry API and SDK when OTEL_RUBY_SOURCE names
# their sources (see docs/connected-traces.md), on the API stand-in otherwise.
RSpec.describe "Connected traces in app-side scenarios" do
  include SubprocessHelper

  let(:result) do
    env = { "OTEL_RUBY_SOURCE" => ENV.fetch("OTEL_RUBY_SOURCE", nil) }
    out = run_command([RbConfig.ruby, "-I", SubprocessHelper::LIB, File.expand_path("app_scenarios.rb", __dir__)],
                      env: env, timeout: 120)
    expect(out).to be_success, out.describe
    out.json
  end

  def span(name)
    result[:spans].find { |s| s[:name] == name } || raise("no span #{name}: #{result[:spans].inspect}")
  end

  def run_spans(task)
    result[:runs].find { |r| r[:task_id] == task }.fetch(:spans)
  end

  it "gives a step back its attempt after a task run inline inside it ended" do
    outer_root, outer_step = run_spans(1)
    inner_root, inner_step = run_spans(2)
    expect(inner_root[:parent_span_id]).to eq(outer_step[:span_id])
    expect(span("before inner")[:parent]).to eq(outer_step[:span_id])
    expect(span("inner call")[:parent]).to eq(inner_step[:span_id])
    expect(span("inner orchestration")[:parent]).to eq(inner_root[:span_id])
    expect(span("after inner")[:parent]).to eq(outer_step[:span_id])
    expect(span("after outer")[:parent]).to be_nil
    expect(outer_root[:parent_span_id]).to be_nil
    expect(result[:results][:nested][:context_kept]).to be(true)
  end

  it "keeps a step thread's calls under their steps after its context was cleared" do
    _root, *steps = run_spans(3)
    calls = [31, 32, 33].map { |step| span("call of #{step}")[:parent] }
    expect(calls).to eq(steps.map { |s| s[:span_id] })
    expect(result[:results][:cleared][:out]).to eq(1) # the thread's span, attached again
    expect(result[:results][:cleared][:context_kept]).to be(true)
  end

  it "nests the work a step's handler carried into another thread under that step" do
    root, *steps = run_spans(4)
    calls = [41, 42, 43].map { |step| span("carried from #{step}") }
    # A step in a thread the run's root was carried into carries the root
    # on (a documented limit: its work there is the run's child).
    expect(calls.map { |c| c[:parent] }).to eq(steps.first(2).map { |s| s[:span_id] } + [root[:span_id]])
    expect(calls.map { |c| c[:trace_id] }.uniq).to eq([span("fan-out job")[:trace_id]])
    expect(span("carried from the run")[:parent]).to eq(root[:span_id])
    expect(span("carried between steps")[:parent]).to be_nil
    expect(result[:results][:carried][:context_kept]).to be(true)
  end

  it "reports no error through the API" do
    expect(result[:errors]).to eq([])
  end
end
