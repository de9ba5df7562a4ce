# frozen_string_literal: true

# One backend's memory and GC figures, in a process of its own so that the
# other backend's heap does not pollute them:
#
#   ruby bench/memory_probe.rb native 40000
#
# Prints one JSON line: retained RSS per trace (after full GCs) and the median
# full-GC pause with the traces retained.

require_relative "environment"

name, count, gc_runs = ARGV
count = Integer(count || 40_000)
gc_runs = Integer(gc_runs || 7)
bench = TaskerTraceNative::Bench
backend = bench.backend(name)

# Warm every code path once, then start from an empty backend.
bench.lifecycle(backend, -1)
backend.export
backend.reset!
3.times { bench.full_gc }
baseline_gc_ns = Array.new(gc_runs) do
  t = bench.monotonic_ns
  bench.full_gc
  bench.monotonic_ns - t
end
rss_before = bench.rss_bytes

count.times { |i| bench.lifecycle(backend, i) }
3.times { bench.full_gc }
rss_after = bench.rss_bytes

gc_ns = Array.new(gc_runs) do
  t = bench.monotonic_ns
  bench.full_gc
  bench.monotonic_ns - t
end

stored = backend.stats[:active_traces]
raise "#{name}: expected #{count} traces, found #{stored}" unless stored == count

puts JSON.generate(
  backend: name,
  traces: count,
  rss_before: rss_before,
  rss_after: rss_after,
  bytes_per_trace: (rss_after - rss_before).to_f / count,
  gc_pause_ms: bench.median(gc_ns) / 1e6,
  baseline_gc_pause_ms: bench.median(baseline_gc_ns) / 1e6,
  live_slots: GC.stat(:heap_live_slots)
)
