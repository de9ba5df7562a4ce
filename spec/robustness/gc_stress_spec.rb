# frozen_string_literal: true

require "rbconfig"
require_relative "robustness_helper"

# Every conversion and export path under GC.stress, in a fresh, small Ruby
# (gc_stress_scenario.rb): a GC at every allocation finds any Ruby object the
# binding forgot to keep reachable. The export under stress must be the same
# as without it. (In this process, with RSpec and ActiveSupport loaded, each
# stressed GC costs about 10 ms; in the small one, well under 1 ms.)
RSpec.describe "Robustness: GC.stress" do
  SCENARIO = File.expand_path("gc_stress_scenario.rb", __dir__)
  LIB = File.expand_path("../../lib", __dir__)

  def run_scenario(stress:, timeout:)
    reader, writer = IO.pipe
    env = { "SCENARIO_GC_STRESS" => stress ? "1" : "0", "RUST_BACKTRACE" => "0" }
    pid = Process.spawn(env, RbConfig.ruby, "--disable-gems", "-I", LIB, SCENARIO, out: writer, err: File::NULL)
    writer.close
    reader.binmode
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    data = +"".b
    loop do
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      if left <= 0
        Process.kill(:KILL, pid)
        Process.wait(pid)
        raise RobustnessHelper::ChildTimeout, "scenario did not finish in #{timeout}s"
      end
      next unless reader.wait_readable([left, 0.5].min)

      chunk = reader.read_nonblock(1 << 16, exception: false)
      break if chunk.nil?

      data << chunk unless chunk == :wait_readable
    end
    _, status = Process.wait2(pid)
    raise RobustnessHelper::ChildError, "scenario exited with #{status.inspect}" unless status.success?

    Marshal.load(data)
  ensure
    reader&.close
  end

  it "exports exactly the same under GC.stress as without it", timeout: 300 do
    plain = run_scenario(stress: false, timeout: 60)
    stressed = run_scenario(stress: true, timeout: 240)

    expect(stressed[:gc_stress]).to be(true)
    # Thousands of GCs: one at nearly every allocation of the run.
    expect(stressed[:gc_count]).to be > 20 * plain[:gc_count]
    %i[results export stats traces_copy stats_mid].each do |part|
      expect([part, stressed[part] == plain[part]]).to eq([part, true])
    end

    # And the run itself did what the contract says.
    expect(plain[:results].count(false)).to eq(3)
    traces = plain[:export][:traces]
    expect(traces.keys).to eq(["task_4", "task_5", "generic_<key>", "step_9", "operation_sync", "trace_<key>",
                               "task_#{2**80}", "task_after-limits"])
    payload = traces["task_4"][:payload]
    expect(payload[:cyclic][:self]).to eq(["UTF-8", "[...]".bytes])
    expect(payload[:big]).to eq((2**100) + 4)
    expect(payload[:nan]).to eq("<NaN>")
    expect(payload[:abstract]).to eq(["UTF-8", "#<ScenarioAbstract>".bytes])
    expect(payload[:utf16]).to eq(["UTF-16LE", "wide4".encode(Encoding::UTF_16LE).bytes])
    expect(plain[:stats]).to include(active_traces: 8, events_handled: 32, rejected_events: 3, orphaned_events: 1,
                                     evicted_traces: 4, dropped_spans: 1)
  end
end
