# frozen_string_literal: true

require_relative "robustness_helper"

# Bounded memory: retention limits with eviction in insertion order, resident
# memory that stays flat at 10x the cap, native memory reported to Ruby's GC,
# and a store that survives GC.compact.
RSpec.describe "Robustness: memory and GC" do
  def configure(**settings)
    TaskerTraceNative.configure { |c| settings.each { |k, v| c.public_send(:"#{k}=", v) } }
  end

  def lifecycle(id, payload = {})
    backend.handle_event("task.started", { task_id: id }.merge(payload))
    backend.handle_event("step.before_handle", { task_id: id })
    backend.handle_event("task.completed", { task_id: id })
  end

  describe "retention limits", :gc_stress_safe do
    it "keeps at most max_traces, evicting the oldest first and counting evictions" do
      configure(max_traces: 50)
      500.times { |i| lifecycle(i) }
      traces = exported_traces
      expect(traces.keys).to eq((450...500).map { |i| "task_#{i}" })
      expect(traces.values.map { |t| [t[:spans].size, t[:status]] }.uniq).to eq([[1, "success"]])
      expect(backend.stats).to include(active_traces: 50, evicted_traces: 450, events_handled: 1500,
                                       orphaned_events: 0, max_traces: 50)
    end

    it "evicts by first insertion: a restarted trace keeps its place and is evicted in turn" do
      configure(max_traces: 3)
      lifecycle(1)
      lifecycle(2)
      lifecycle(3)
      backend.handle_event("task.started", { task_id: 1, again: true })
      lifecycle(4)
      expect(exported_traces.keys).to eq(%w[task_2 task_3 task_4])
      # Events for an evicted trace are orphans.
      backend.handle_event("task.completed", { task_id: 1 })
      expect(backend.stats).to include(evicted_traces: 1, orphaned_events: 1)
    end

    it "keeps at most max_spans_per_trace spans, the first ones, and counts the rest" do
      configure(max_spans_per_trace: 20)
      backend.handle_event("task.started", { task_id: 1 })
      200.times { |i| backend.handle_event("step.before_handle", { task_id: 1, n: i }) }
      backend.handle_event("task.completed", { task_id: 1 })
      trace = exported_traces.fetch("task_1")
      expect(trace[:spans].map { |s| s[:payload][:n] }).to eq((0...20).to_a)
      expect(trace[:status]).to eq("success")
      expect(backend.stats).to include(dropped_spans: 180, events_handled: 202)
    end

    it "evicts at once when max_traces is lowered, oldest first" do
      20.times { |i| lifecycle(i) }
      configure(max_traces: 5)
      expect(exported_traces.keys).to eq((15...20).map { |i| "task_#{i}" })
      expect(backend.stats[:evicted_traces]).to eq(15)
    end
  end

  # Resident memory after driving 10x max_traces lifecycles through the store
  # stays within a fixed margin of what it was once the store was full. An
  # unbounded store would grow by about `10 * CAP * PAYLOAD` bytes (~40 MB).
  RSS_CAP = 2_000
  RSS_PAYLOAD_BYTES = 2_048
  RSS_MARGIN_BYTES = 6 * 1024 * 1024

  it "keeps resident memory flat while 10x max_traces lifecycles flow through", timeout: 180 do
    result = in_child(timeout: 160) do
      configure(max_traces: RSS_CAP, max_spans_per_trace: 4)
      blob = "x" * RSS_PAYLOAD_BYTES
      id = 0
      drive = lambda do |traces|
        traces.times do
          # A fresh String each time, as a real caller's payload would be.
          lifecycle(id, note: blob.dup, list: [id, id.to_s, { nested: blob[0, 64] }])
          id += 1
        end
        GC.start
      end
      # Fill the store to the cap, then once more, so the allocator has seen a
      # full turnover before the baseline is taken.
      drive.call(RSS_CAP * 2)
      before = rss_bytes
      samples = Array.new(10) do
        drive.call(RSS_CAP)
        rss_bytes
      end
      { before: before, samples: samples, stats: backend.stats, first_key: exported_traces.keys.first }
    end

    growth = result[:samples].max - result[:before]
    expect(result[:stats]).to include(active_traces: RSS_CAP, evicted_traces: RSS_CAP * 11)
    expect(result[:first_key]).to eq("task_#{RSS_CAP * 11}")
    expect(growth).to be < RSS_MARGIN_BYTES,
                      "RSS grew #{growth / 1024} KiB (from #{result[:before] / 1024} KiB; " \
                      "samples #{result[:samples].map { |s| s / 1024 }} KiB)"
  end

  describe "native memory reported to Ruby's GC" do
    # Grows the store by about `megabytes` MB of native memory while Ruby
    # allocates almost nothing: one reused payload Hash holding one String.
    def grow_store(megabytes)
      blob = "z" * (64 * 1024)
      payload = { task_id: 0, blob: blob }
      (megabytes * 16).times do |i|
        payload[:task_id] = i
        backend.handle_event("task.started", payload)
      end
    end

    it "counts the store's growth in GC.stat(:malloc_increase_bytes)", timeout: 60 do
      result = in_child(timeout: 45) do
        GC.start
        GC.disable # so that no GC resets the counter while we measure
        before = GC.stat(:malloc_increase_bytes)
        grow_store(8)
        after = GC.stat(:malloc_increase_bytes)
        backend.reset!
        after_reset = GC.stat(:malloc_increase_bytes)
        GC.enable
        { grown: after - before, released: after - after_reset }
      end
      expect(result[:grown]).to be >= 8 * 1024 * 1024
      expect(result[:released]).to be >= 8 * 1024 * 1024
    end

    it "makes GC run as the store grows, while Ruby itself allocates next to nothing", timeout: 60 do
      result = in_child(timeout: 45) do
        # Baseline: the same loop through a native method that stores nothing.
        blob = "z" * (64 * 1024)
        payload = { task_id: 0, blob: blob }
        GC.start
        gc_before = GC.count
        objects_before = GC.stat(:total_allocated_objects)
        2_048.times do |i|
          payload[:task_id] = i
          TaskerTraceNative::TestHooks.noop("task.started", payload)
          # A small malloc'd Ruby allocation: where Ruby checks malloc growth.
          # (4 KB: from Ruby 3.2 on, smaller strings are embedded in the
          # object slot and never reach malloc.)
          String.new(capacity: 4096)
        end
        baseline = { gcs: GC.count - gc_before, objects: GC.stat(:total_allocated_objects) - objects_before }

        GC.start
        gc_before = GC.count
        objects_before = GC.stat(:total_allocated_objects)
        2_048.times do |i|
          payload[:task_id] = i
          backend.handle_event("task.started", payload)
          String.new(capacity: 4096)
        end
        stored = { gcs: GC.count - gc_before, objects: GC.stat(:total_allocated_objects) - objects_before }
        { baseline: baseline, stored: stored, traces: backend.stats[:active_traces] }
      end

      expect(result[:traces]).to eq(2_048)
      # 128 MB of native payload copies, 4 times Ruby's largest malloc limit.
      expect(result[:stored][:gcs]).to be >= result[:baseline][:gcs] + 3,
                                       "GC runs: #{result.inspect}"
      # ...while Ruby allocated about as many objects as in the baseline.
      expect(result[:stored][:objects]).to be < result[:baseline][:objects] + 1_000
    end
  end

  describe "GC.compact" do
    it "exports the same traces after compaction, and keeps working", :gc_stress_safe do
      dynamic = Array.new(20) { |i| :"dyn_#{i}_#{rand(1 << 30)}" }
      30.times do |i|
        lifecycle(i, name: "task-#{i}", sym: dynamic[i % 20], dynamic[i % 20] => [i, "v#{i}", { k: i.to_s }])
      end
      backend.handle_event("misc.event", { list: dynamic, text: "t" * 100 })
      before = exported_traces
      GC.compact
      expect(exported_traces).to eq(before)
      if GC.respond_to?(:verify_compaction_references)
        # Ruby 3.2 renamed double_heap to expand_heap (3.3 warns about the old name).
        grow = GC.method(:verify_compaction_references).parameters.any? { |_, name| name == :expand_heap }
        GC.verify_compaction_references(toward: :empty, (grow ? :expand_heap : :double_heap) => true)
        expect(exported_traces).to eq(before)
      end
      lifecycle(100, sym: :"dyn_after_#{rand(1 << 30)}")
      GC.compact
      after = exported_traces
      expect(after.size).to eq(before.size + 1)
      expect(after.first(before.size).to_h).to eq(before)
      expect(after["task_100"][:payload][:sym]).to be_a(Symbol)
    end
  end
end
