# frozen_string_literal: true

require_relative "robustness_helper"

# Threads: many writers and readers at once, payload methods that give up the
# GVL or call back into the backend. Every scenario runs in a child process
# with a deadline: a deadlock that holds the GVL would stop a Ruby Timeout in
# the same process from ever firing.
RSpec.describe "Robustness: threads" do
  # A payload value whose conversion gives up the GVL in the middle.
  class GvlYieldingValue
    def initialize(text, nap)
      @text = text
      @nap = nap
    end

    def to_s
      Thread.pass
      sleep(@nap) if @nap
      Thread.pass
      @text
    end
  end

  # A time-like payload value whose iso8601 gives up the GVL.
  class GvlYieldingTime
    def iso8601
      sleep(0.0002)
      Thread.pass
      "2030-01-02T03:04:05Z"
    end
  end

  # A payload value (or trace id) whose to_s calls back into the backend.
  class ReentrantValue
    def initialize(backend, name, payload, text)
      @backend = backend
      @name = name
      @payload = payload
      @text = text
    end

    attr_reader :inner_result

    def to_s
      @inner_result = @backend.handle_event(@name, @payload)
      @backend.export
      @backend.traces
      @backend.stats
      @text
    end
  end

  WRITERS = 8
  LIFECYCLES_PER_WRITER = 2500

  it "keeps every trace whole when 8 writer threads run thousands of lifecycles while 2 readers export",
     timeout: 240 do
    result = in_child(timeout: 220) do
      b = backend
      done = false
      writers = Array.new(WRITERS) do |w|
        Thread.new do
          failures = 0
          LIFECYCLES_PER_WRITER.times do |i|
            id = (w * LIFECYCLES_PER_WRITER) + i
            finish = i % 3 == 0 ? "task.failed" : "task.completed"
            ok = [
              b.handle_event("task.started", { task_id: id, writer: w, seq: i, label: "t#{id}" }),
              b.handle_event("step.before_handle", { task_id: id, step: "a" }),
              b.handle_event("step.after_handle", { task_id: id, step: "b" }),
              b.handle_event(finish, { task_id: id })
            ]
            failures += ok.count(false)
          end
          failures
        end
      end
      readers = Array.new(2) do |r|
        Thread.new do
          rounds = 0
          problems = []
          last_count = 0
          until done
            snapshot = r.zero? ? b.export.fetch(:traces) : b.traces
            count = b.stats.fetch(:active_traces)
            problems << "active_traces went down: #{last_count} -> #{count}" if count < last_count
            last_count = count
            snapshot.each do |key, t|
              spans = t.fetch(:spans)
              names = spans.map { |s| s[:event_name] }
              unless ["step.before_handle", "step.after_handle"].first(names.size) == names
                problems << "#{key}: spans out of order #{names.inspect}"
              end
              if t.key?(:end_time)
                problems << "#{key}: finished without 2 spans" unless spans.size == 2
                problems << "#{key}: bad status" unless %w[success error].include?(t[:status])
                problems << "#{key}: bad duration" unless t[:duration].is_a?(Float) && t[:duration] >= 0
              end
            end
            rounds += 1
          end
          [rounds, problems.first(10)]
        end
      end
      refused = writers.sum(&:value)
      done = true
      reader_results = readers.map(&:value)

      traces = b.export.fetch(:traces)
      expected_keys = Array.new(WRITERS * LIFECYCLES_PER_WRITER) { |id| "task_#{id}" }
      broken = traces.filter_map do |key, t|
        id = Integer(key.delete_prefix("task_"))
        w, i = id.divmod(LIFECYCLES_PER_WRITER)
        want_status = i % 3 == 0 ? "error" : "success"
        ok = t[:payload] == { task_id: id, writer: w, seq: i, label: "t#{id}" } &&
             t[:spans].map { |s| [s[:event_name], s[:payload]] } ==
             [["step.before_handle", { task_id: id, step: "a" }], ["step.after_handle", { task_id: id, step: "b" }]] &&
             t[:status] == want_status && t[:duration].is_a?(Float) && t[:duration] >= 0 &&
             t[:end_time].is_a?(String)
        key unless ok
      end
      # Within one writer, lifecycles are stored in the order that writer ran them.
      order_ok = traces.keys.group_by { |k| Integer(k.delete_prefix("task_")) / LIFECYCLES_PER_WRITER }
                       .all? { |_, ks| ks == ks.sort_by { |k| Integer(k.delete_prefix("task_")) } }
      {
        refused: refused,
        missing: (expected_keys - traces.keys).first(10),
        extra: (traces.keys - expected_keys).first(10),
        broken: broken.first(10),
        order_ok: order_ok,
        stats: b.stats.slice(:events_handled, :rejected_events, :orphaned_events, :evicted_traces, :dropped_spans),
        reader_rounds: reader_results.map(&:first),
        reader_problems: reader_results.flat_map(&:last)
      }
    end

    total = WRITERS * LIFECYCLES_PER_WRITER
    expect(result[:refused]).to eq(0)
    expect(result[:missing]).to eq([])
    expect(result[:extra]).to eq([])
    expect(result[:broken]).to eq([])
    expect(result[:order_ok]).to be(true)
    expect(result[:stats]).to eq(events_handled: total * 4, rejected_events: 0, orphaned_events: 0,
                                 evicted_traces: 0, dropped_spans: 0)
    expect(result[:reader_problems]).to eq([])
    expect(result[:reader_rounds]).to all(be > 0)
  end

  it "does not deadlock when payload values give up the GVL while other threads write the same trace",
     timeout: 120 do
    result = in_child(timeout: 100) do
      b = backend
      threads = Array.new(4) do |t|
        Thread.new do
          oks = []
          150.times do |i|
            slow_id = GvlYieldingValue.new("7", i.even? ? 0.0002 : nil)
            payload = { task_id: slow_id, thread: t, note: GvlYieldingValue.new("note-#{t}", 0.0001),
                        at: GvlYieldingTime.new, list: [GvlYieldingValue.new("x", nil)] }
            oks << b.handle_event("task.started", payload)
            oks << b.handle_event("step.before_handle", { task_id: 7, v: GvlYieldingValue.new("span", nil) })
            oks << b.handle_event("task.completed", { task_id: GvlYieldingValue.new("7", nil) })
            b.export if i % 25 == 0
          end
          oks
        end
      end
      oks = threads.flat_map(&:value)
      trace = b.export.dig(:traces, "task_7")
      { oks: oks.tally, stats: b.stats.slice(:events_handled, :rejected_events), trace: trace }
    end

    expect(result[:oks]).to eq(true => 4 * 150 * 3)
    expect(result[:stats]).to eq(events_handled: 1800, rejected_events: 0)
    trace = result[:trace]
    expect(trace[:payload]).to include(task_id: "7", at: "2030-01-02T03:04:05Z", list: ["x"])
    expect(trace[:payload][:note]).to match(/\Anote-[0-3]\z/)
    expect(trace[:status]).to eq("success")
    expect(trace[:spans].map { |s| s[:payload] }).to all(eq(task_id: 7, v: "span"))
  end

  it "does not deadlock when a payload value's to_s calls back into the backend", timeout: 60 do
    result = in_child(timeout: 45) do
      b = backend
      innermost = ReentrantValue.new(b, "task.started", { task_id: "deep", d: 3 }, "level-3")
      middle = ReentrantValue.new(b, "task.started", { task_id: "inner", nested: innermost }, "level-2")
      outer_value = ReentrantValue.new(b, "task.started", { task_id: "side" }, "level-1")
      ok = b.handle_event("task.started", { task_id: "outer", value: outer_value, other: middle })
      # A trace id whose to_s stores an event under the same key it is computing.
      same_key = ReentrantValue.new(b, "task.started", { task_id: "same", by: "inner" }, "same")
      ok2 = b.handle_event("task.completed", { task_id: same_key })
      traces = b.export.fetch(:traces)
      {
        ok: ok, ok2: ok2, keys: traces.keys,
        inner_results: [outer_value.inner_result, middle.inner_result, innermost.inner_result, same_key.inner_result],
        outer: traces["task_outer"][:payload], inner: traces["task_inner"][:payload],
        deep: traces["task_deep"][:payload], same: traces["task_same"],
        stats: b.stats.slice(:events_handled, :rejected_events)
      }
    end

    expect(result[:ok]).to be(true)
    expect(result[:ok2]).to be(true)
    expect(result[:inner_results]).to eq([true, true, true, true])
    # Inner events are stored while the outer payload is being converted, so
    # they come first: proof that no lock is held while Ruby code runs.
    expect(result[:keys]).to eq(%w[task_side task_deep task_inner task_outer task_same])
    expect(result[:outer]).to eq(task_id: "outer", value: "level-1", other: "level-2")
    expect(result[:inner]).to eq(task_id: "inner", nested: "level-3")
    expect(result[:deep]).to eq(task_id: "deep", d: 3)
    expect(result[:same]).to include(payload: { task_id: "same", by: "inner" }, status: "success")
    # 7: `same_key.to_s` runs twice, once for the trace key and once when the
    # payload is copied, and each run stores its own start event.
    expect(result[:stats]).to eq(events_handled: 7, rejected_events: 0)
  end

  it "does not deadlock when many threads re-enter the backend from payload methods at once", timeout: 90 do
    result = in_child(timeout: 75) do
      b = backend
      threads = Array.new(6) do |t|
        Thread.new do
          Array.new(100) do |i|
            inner = ReentrantValue.new(b, "step.after_x", { task_id: t, i: i }, "r#{i}")
            b.handle_event("task.started", { task_id: t, r: inner, y: GvlYieldingValue.new("y", nil) }) &&
              inner.inner_result
          end
        end
      end
      results = threads.flat_map(&:value)
      { results: results.tally, handled: b.stats[:events_handled], keys: b.traces.keys.sort }
    end

    expect(result[:results]).to eq(true => 600)
    expect(result[:handled]).to eq(1200)
    expect(result[:keys]).to eq(%w[task_0 task_1 task_2 task_3 task_4 task_5])
  end

  it "leaves no lock behind when a thread is killed or timed out while its payload is converted", timeout: 60 do
    result = in_child(timeout: 45) do
      b = backend
      sleeper = Class.new { def to_s = sleep(30).to_s }
      victim = Thread.new { b.handle_event("task.started", { task_id: 1, v: sleeper.new }) }
      sleep 0.05 until victim.status == "sleep"
      victim.kill
      victim.join
      timed_out = begin
        Timeout.timeout(0.1) { b.handle_event("task.started", { task_id: 2, v: sleeper.new }) }
        :not_interrupted
      rescue Timeout::Error
        :timed_out
      end
      after = [b.handle_event("task.started", { task_id: 3 }), b.handle_event("task.completed", { task_id: 3 })]
      { timed_out: timed_out, after: after, keys: b.export[:traces].keys, handled: b.stats[:events_handled] }
    end

    expect(result[:timed_out]).to eq(:timed_out)
    expect(result[:after]).to eq([true, true])
    expect(result[:keys]).to eq(["task_3"])
    expect(result[:handled]).to eq(2)
  end
end
