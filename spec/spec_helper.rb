# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
# The extension's test hooks (TaskerTraceNative::TestHooks) exist only when
# this is set before it loads; subprocesses the specs start inherit it.
ENV["TASKER_TRACE_NATIVE_TEST_HOOKS"] = "1"
# The gem reads OpenTelemetry's variables when it loads: the suite runs with
# none of the caller's (specs of the variables start fresh processes).
# OTEL_RUBY_SOURCE is not one: it points spec/connected/real_sdk_spec.rb at
# the OpenTelemetry Ruby sources.
ENV.keys.grep(/\AOTEL_/).each { |name| ENV.delete(name) unless name == "OTEL_RUBY_SOURCE" }
require "tasker_trace_native"
require "timeout"

Dir[File.join(__dir__, "support", "**", "*.rb")].sort.each { |f| require f }

RSpec.configure do |config|
  config.disable_monkey_patching!
  config.order = :random
  Kernel.srand config.seed

  config.expect_with :rspec do |c|
    c.syntax = :expect
  end

  # Every example starts from an empty backend with default settings.
  config.before do
    TaskerTraceNative.configure do |c|
      c.max_traces = 100_000
      c.max_spans_per_trace = 10_000
      c.timestamp_precision = 0
    end
    Tasker::Telemetry::TraceBackend.instance.reset!
  end

  # A hang fails the example instead of stalling CI. Override per example
  # with `timeout: seconds` metadata.
  config.around do |example|
    Timeout.timeout(example.metadata.fetch(:timeout, 60)) { example.run }
  end

  # GC_STRESS=1 runs the examples tagged :gc_stress_safe (the quick ones)
  # under GC.stress; the others are skipped in that mode. The stress GCs are
  # minor ones (flag 0x01): a GC still runs at every allocation and frees any
  # young object nothing marks, but without re-marking the whole RSpec and
  # ActiveSupport heap each time (about 20x faster: a full-mark GC at every
  # allocation makes one example take 15-70 s). GC_STRESS_FULL=1 for full marks.
  if ENV["GC_STRESS"] == "1"
    config.filter_run_including :gc_stress_safe
    config.around do |example|
      GC.stress = ENV["GC_STRESS_FULL"] == "1" ? true : 0x01
      example.run
    ensure
      GC.stress = false
    end
  end
end
