# frozen_string_literal: true

require "spec_helper"
require_relative "exporter_helper"

# The exporter thread never takes the GVL: a CPU-bound Ruby thread keeps its
# pace while 40,000 traces are encoded and sent in the background. The
# receiver only counts bytes, so that it takes little of the second core.
RSpec.describe "Background exporter: the GVL" do
  let(:receiver) { ExporterSpecHelper::Receiver.new(parse: false) }

  after { receiver.close }

  # The child: 40,000 traces, then the Ruby thread's rate before, during and
  # after their export.
  def measure_script
    <<~'RUBY'
      # Units of pure-Ruby work done per second while `busy` is true.
      def work_rate(busy)
        n = 0
        t0 = now
        while busy.call
          i = 0
          x = 0
          while i < 2_000
            x += i * i
            i += 1
          end
          n += 1
        end
        n / (now - t0)
      end

      40_000.times { |i| lifecycle(i + 1) }
      GC.start
      ratios = []
      2.times do
        fill = TaskerTraceNative.exporter_stats[:queued]
        40_000.times { |i| lifecycle(100_000 * (ratios.size + 1) + i) } if fill.zero?
        until_t = now + 0.5
        before = work_rate(-> { now < until_t })
        flusher = Thread.new { Thread.current[:result] = TaskerTraceNative.flush(timeout: 120) }
        # Let the flusher run until it waits for the exporter, GVL released.
        Thread.pass until flusher.status != "run"
        t0 = now
        during = work_rate(-> { flusher.alive? })
        export_seconds = now - t0
        flusher.join
        until_t = now + 0.5
        after = work_rate(-> { now < until_t })
        baseline = (before + after) / 2
        ratios << { ratio: during / baseline, before: before.round, during: during.round, after: after.round,
                    export_seconds: export_seconds, sent: flusher[:result][:sent] }
        break if ratios.last[:ratio] >= 0.9
      end
      report(runs: ratios)
    RUBY
  end

  it "leaves a CPU-bound Ruby thread at least 90% of its throughput while 40,000 traces are exported",
     timeout: 300 do
    env = exporter_env(receiver, delay_ms: 600_000, extra: { "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => "1000000" })
    result = run_child(measure_script, env: env, timeout: 300)
    expect_success(result)
    runs = reports(result).last[:runs]
    # The baseline is the mean of the rates just before and just after the
    # export; measured again once when the first run was below 90% (a noisy
    # neighbour on a shared machine), never with a lower bar.
    best = runs.max_by { |r| r[:ratio] }
    expect(runs.map { |r| r[:sent] }).to all(eq(40_000))
    expect(best[:export_seconds]).to be > 0.05, "the export was too short to measure anything: #{runs}"
    expect(best[:ratio]).to be >= 0.9, "throughput during the export: #{runs}"
  end
end
