# frozen_string_literal: true

# Run by gc_stress_spec.rb in a fresh, small Ruby (`ruby --disable-gems`):
# drives every conversion and export path of the extension, with GC.stress on
# when SCENARIO_GC_STRESS=1, and writes the export (timestamps, durations and
# generated keys replaced by placeholders) and stats to stdout with Marshal.
# A GC at every allocation finds any Ruby object the binding forgot to keep
# reachable while it allocates; the small heap keeps each GC cheap.

require "set"
require "tasker_trace_native"

ScenarioPoint = Struct.new(:x, :y)
class ScenarioBasic < BasicObject; end

class ScenarioRaising
  def to_s = raise("no")
end

class ScenarioAbstract
  def to_s = raise(NotImplementedError)
end

class ScenarioSlow
  def to_s = Thread.pass.then { "passed" }
end

backend = Tasker::Telemetry::TraceBackend.instance

build = lambda do |i|
  cyclic = { i: i }
  cyclic[:self] = cyclic
  list = [i]
  list << list
  deep = [:bottom]
  140.times { deep = [deep] }
  {
    task_id: i, str: "s#{i}" * 5, sym: :"dyn_#{i}_sym", int: i, big: (2**100) + i, neg_big: -(2**70) - i,
    float: i / 3.0, nan: Float::NAN, inf: Float::INFINITY, nil: nil, t: true, f: false,
    list: [1, "two", :three, [4, [5]]], nested: { a: { b: { c: "d#{i}" } } }, cyclic: cyclic, loop: list, deep: deep,
    utf16: "wide#{i}".encode(Encoding::UTF_16LE), bad: (+"\xFF#{i}").force_encoding(Encoding::UTF_8), bin: "\x00\xFF".b,
    time: Time.at(1_700_000_000 + i).utc, range: (i..i + 1), set: Set[i], point: ScenarioPoint.new(i, -i),
    basic: ScenarioBasic.new, raising: ScenarioRaising.new, abstract: ScenarioAbstract.new, slow: ScenarioSlow.new,
    nil => 1, [1, :k] => 2, { k: i } => 3, 1.5 => 4, Object => 5
  }
end

GC.stress = true if ENV["SCENARIO_GC_STRESS"] == "1"
results = []
6.times do |i|
  results << backend.handle_event("task.started", build.call(i))
  results << backend.handle_event(:"step.before_handle", { task_id: i, workflow_step_id: "s#{i}", n: [i] * 3 })
  results << backend.handle_event("step.after_handle", { task_id: i, payload: build.call(i + 100) })
  results << backend.handle_event(i.even? ? "task.completed" : "task.failed", { task_id: i })
end
results << backend.handle_event("workflow.viable_steps_discovered", { count: 3, names: %w[a b c] })
results << backend.handle_event("task.started", { workflow_step_id: 9 })
results << backend.handle_event("task.started", { operation: :sync, extra: [nil] })
results << backend.handle_event("task.started", { other: 1 }) # a fresh trace_ key
results << backend.handle_event("task.completed", { task_id: "missing" })
results << backend.handle_event(nil, {})
results << backend.handle_event("task.started", [1])
results << backend.handle_event("task.started", { task_id: ScenarioBasic.new })
results << backend.handle_event("task.started", { task_id: 2**80 })
traces_copy = backend.traces
stats_mid = backend.stats
TaskerTraceNative.configure do |c|
  c.max_traces = 8
  c.max_spans_per_trace = 1
  c.timestamp_precision = 3
end
results << backend.handle_event("step.before_x", { task_id: 5 })
results << backend.handle_event("task.started", { task_id: "after-limits" })
GC.compact if GC.respond_to?(:compact) && ENV["SCENARIO_GC_STRESS"] != "1"
export = backend.export
stats = backend.stats
GC.stress = false

# Placeholders for what differs from run to run.
normalize = lambda do |value|
  case value
  when Hash
    value.each_with_object({}) do |(k, v), h|
      key = k.is_a?(String) ? k.sub(/\A(generic|trace)_\d+\.\d+\z/, '\1_<key>') : k
      h[key] = if %i[start_time end_time timestamp exported_at created_at].include?(k) && v.is_a?(String)
                 "<time>"
               elsif %i[duration backend_uptime].include?(k)
                 "<number>"
               else
                 normalize.call(v)
               end
    end
  when Array then value.map { |v| normalize.call(v) }
  when Float then value.nan? ? "<NaN>" : value
  when String then [value.encoding.name, value.bytes]
  else value
  end
end

$stdout.binmode
$stdout.write(Marshal.dump(
  results: results, export: normalize.call(export), stats: normalize.call(stats),
  traces_copy: normalize.call(traces_copy), stats_mid: normalize.call(stats_mid),
  gc_stress: ENV["SCENARIO_GC_STRESS"] == "1", gc_count: GC.count
))
