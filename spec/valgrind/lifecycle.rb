# frozen_string_literal: true

# Run by bin/valgrind-check under valgrind: drives the extension through
# lifecycles, hostile payloads, threads, limits, GC and compaction, and
# exports. Exits non-zero when a result is wrong; valgrind itself fails the
# run on any memory error.

$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "tasker_trace_native"

def check(label)
  abort "valgrind lifecycle: #{label} failed" unless yield
end

backend = Tasker::Telemetry::TraceBackend.instance
backend.reset!

# Task lifecycles with spans, both outcomes.
200.times do |i|
  backend.handle_event("task.started", { task_id: i, name: "order-#{i}", list: [i, i.to_s, :sym, 1.5, nil, true] })
  backend.handle_event("step.before_handle", { task_id: i, workflow_step_id: i * 10 })
  backend.handle_event("step.after_handle", { task_id: i, result: { ok: i.even? } })
  backend.handle_event(i.even? ? "task.completed" : "task.failed", { task_id: i })
end
backend.handle_event("workflow.viable_steps_discovered", { count: 3 })
backend.handle_event("task.completed", { task_id: "missing" })
export = backend.export
check("lifecycles") { export[:traces].size == 201 && export[:traces]["task_7"][:status] == "error" }

# Hostile payloads.
cyclic = { task_id: "cyclic" }
cyclic[:self] = cyclic
list = [1]
list << list
deep = [:bottom]
2_000.times { deep = [deep] }
raising = Class.new { def to_s = raise("no") }
abstract = Class.new { def to_s = raise(NotImplementedError) }
hostile = {
  task_id: "hostile", cyclic: cyclic, list: list, deep: deep, basic: BasicObject.new,
  raising: raising.new, abstract: abstract.new, big: 2**4_000, nan: Float::NAN, inf: -Float::INFINITY,
  bad_utf8: (+"\xFF\xFE").force_encoding(Encoding::UTF_8), utf16: "wide".encode(Encoding::UTF_16LE),
  binary: "\x00\xFF".b, time: Time.at(0).utc, range: (1..2), nil => [nil], [1, 2] => { a: 1 }, 1.5 => :f
}
check("hostile payload") { backend.handle_event("task.started", hostile) == true }
check("bad names") { [nil, 42, (+"\xFF.started").force_encoding("UTF-8")].none? { |n| backend.handle_event(n, {}) } }
check("non-hash payload") { backend.handle_event("task.started", [1]) == false }
stored = backend.export[:traces]["task_hostile"][:payload]
check("hostile values") { stored[:cyclic][:self] == "[...]" && stored[:list] == [1, "[...]"] && stored[:big] == 2**4_000 }

# Threads: writers and a reader at once.
writers = Array.new(3) do |t|
  Thread.new do
    100.times do |i|
      backend.handle_event("task.started", { task_id: "t#{t}-#{i}", v: [t, i] })
      backend.handle_event("task.completed", { task_id: "t#{t}-#{i}" })
    end
  end
end
reader = Thread.new { 20.times { backend.export; backend.stats; backend.traces } }
(writers + [reader]).each(&:join)
check("threads") { backend.traces.keys.grep(/\Atask_t/).size == 300 }

# Limits: eviction and dropped spans.
TaskerTraceNative.configure do |c|
  c.max_traces = 50
  c.max_spans_per_trace = 2
  c.timestamp_precision = 6
end
100.times { |i| backend.handle_event("task.started", { task_id: "lim#{i}" }) }
5.times { backend.handle_event("step.before_x", { task_id: "lim99" }) }
stats = backend.stats
check("limits") { stats[:active_traces] == 50 && stats[:dropped_spans] == 3 }

# GC and compaction between writes and exports.
GC.start
GC.compact if GC.respond_to?(:compact)
backend.handle_event("task.started", { task_id: "after-compact", sym: :"dynamic_#{rand(1000)}" })
check("after compaction") { backend.export[:traces].key?("task_after-compact") }

# A panic inside Rust becomes TaskerTraceNative::Error or false.
TaskerTraceNative::TestHooks.panic_next_call!
raised = begin
  backend.export
  false
rescue TaskerTraceNative::Error
  true
end
check("panic into error") { raised }
TaskerTraceNative::TestHooks.panic_next_call!
check("panic into false") { backend.handle_event("task.started", { task_id: 1 }) == false }

backend.reset!
check("reset") { backend.export[:traces].empty? && backend.stats[:events_handled].zero? }
puts "valgrind lifecycle: ok"
