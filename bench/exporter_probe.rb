# frozen_string_literal: true

# The background exporter's cost to the app, in a process of its own (the
# receiver runs in the suite's process):
#
#   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:PORT/v1/traces \
#     ruby bench/exporter_probe.rb ROUNDS LIFECYCLES GVL_TRACES
#
# - the app thread's time per task lifecycle (start, 2 spans, finish, each
#   event with a fresh payload) with the exporter off and on (its defaults:
#   5 s delay, a wake every 512 events), alternating, ROUNDS rounds of
#   LIFECYCLES lifecycles each: wall time, and how much of it the thread was
#   on a CPU and waiting for one;
# - the GVL time the export takes from Ruby: while GVL_TRACES traces are
#   exported, a CPU-bound Ruby thread runs; the time it spent neither on a
#   CPU nor waiting for one (blocked: it does no I/O, so only the GVL could
#   hold it) is the GVL time, scaled to 10,000 traces. Its rate during the
#   export against its rate just before and just after is reported too.
#
# Prints one JSON line.

require_relative "environment"

rounds, lifecycles, gvl_traces = ARGV.map { |a| Integer(a) }
bench = TaskerTraceNative::Bench
backend = bench.native_backend

# This thread's time on a CPU and waiting for one, in ns (Linux schedstat).
def sched_ns
  File.read("/proc/self/task/#{Thread.current.native_thread_id}/schedstat").split.first(2).map(&:to_i)
rescue SystemCallError, NoMethodError
  [0, 0]
end

# [wall, on-CPU, waiting-for-a-CPU] ns per lifecycle.
def per_lifecycle_ns(bench, backend, count, base)
  t = bench.monotonic_ns
  s0 = sched_ns
  count.times { |i| bench.lifecycle(backend, base + i) }
  wall = bench.monotonic_ns - t
  cpu, runq = sched_ns.zip(s0).map { |a, b| a - b }
  [wall, cpu, runq].map { |v| v.to_f / count }
end

# Units of pure-Ruby work per second while `busy` holds.
def work_rate(busy)
  n = 0
  t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  while busy.call
    i = 0
    x = 0
    while i < 2_000
      x += i * i
      i += 1
    end
    n += 1
  end
  n / (Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0)
end

def rate_for(seconds)
  until_t = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
  work_rate(-> { Process.clock_gettime(Process::CLOCK_MONOTONIC) < until_t })
end

bench.lifecycle(backend, -1) # warm every path
off = []
on = []
exported = 0
rounds.times do |r|
  TaskerTraceNative.configure { |c| c.exporter = :none }
  backend.reset!
  bench.full_gc
  off << per_lifecycle_ns(bench, backend, lifecycles, r * lifecycles)
  backend.reset!
  TaskerTraceNative.configure { |c| c.exporter = :otlp }
  bench.full_gc
  on << per_lifecycle_ns(bench, backend, lifecycles, r * lifecycles)
  result = TaskerTraceNative.flush(timeout: 60)
  raise "flush failed: #{result[:error]}" if result[:error]
end
exported = TaskerTraceNative.exporter_stats[:exported_traces]

# GVL: every trace waits in the store (an hour's delay, no batch wake) until
# the flush below hands them to the exporter thread.
TaskerTraceNative.configure do |c|
  c.exporter = :otlp
  c.export_schedule_delay = 3600
  c.export_max_batch_size = 1_000_000
end
backend.reset!
gvl_traces.times { |i| bench.lifecycle(backend, 10_000_000 + i) }
bench.full_gc
before = rate_for(0.5)
flusher = Thread.new { Thread.current[:result] = TaskerTraceNative.flush(timeout: 120) }
# Let the flusher run until it waits for the exporter, GVL released.
Thread.pass until flusher.status != "run"
t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
s0 = sched_ns
during = work_rate(-> { flusher.alive? })
export_seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
blocked_seconds = [export_seconds - (sched_ns.sum - s0.sum) / 1e9, 0].max
flusher.join
after = rate_for(0.5)
sent = flusher[:result][:sent]
raise "GVL case: sent #{sent} of #{gvl_traces} (#{flusher[:result][:error]})" unless sent == gvl_traces

baseline = (before + after) / 2
medians = ->(runs) { runs.transpose.map { |column| bench.median(column) } }
off_ns, off_cpu_ns, off_runq_ns = medians.call(off)
on_ns, on_cpu_ns, on_runq_ns = medians.call(on)
puts JSON.generate(
  off_ns: off_ns, on_ns: on_ns, off_cpu_ns: off_cpu_ns, on_cpu_ns: on_cpu_ns, off_runq_ns: off_runq_ns,
  on_runq_ns: on_runq_ns, rounds: rounds, lifecycles: lifecycles,
  exported_while_timed: exported,
  gvl_traces: gvl_traces, export_seconds: export_seconds, ruby_rate_ratio: during / baseline,
  gvl_ms_per_10k: blocked_seconds * 1e3 * 10_000 / gvl_traces,
  export_ms_per_10k: export_seconds * 1e3 * 10_000 / gvl_traces
)
