# frozen_string_literal: true

require "spec_helper"
require "json"

# The recorded streams (spec/fixtures/streams), mutated with fixed seeds:
# events dropped, repeated, reordered within and across threads, two runs
# of different tasks interleaved, a stream replayed twice with the same ids,
# events of tasks never opened, values of the wrong type under the keys the
# tracer reads, resets and drains in the middle, runs that never end. What
# the tracer exports must keep its invariants whatever it is fed. Every
# mutation is drawn from a seeded Random, so a failure names its seed and
# replays exactly (MUTATION_SEED=<seed>).
module MutatedStreams
  # The seeds run: 1..150 (MUTATION_SEEDS=<n> for more), or MUTATION_SEED
  # alone; the first 25 (MUTATION_THREADED_SEEDS) also publish each event in
  # its recorded thread.
  SEEDS = if ENV["MUTATION_SEED"] then [Integer(ENV["MUTATION_SEED"])]
          else (1..Integer(ENV.fetch("MUTATION_SEEDS", "150"))).to_a
          end.freeze
  THREADED_SEEDS = SEEDS.first(Integer(ENV.fetch("MUTATION_THREADED_SEEDS", "25"))).freeze
  NAMES = %w[order_complete order_payment_retry order_inventory_exhausted user_registration_pending
             order_created_never_run].freeze
  STREAMS = NAMES.to_h { |n| [n, StreamReplayer.load(n).freeze] }.freeze
  # Keys the tracer reads, and the wrong values a mutation puts there.
  COUNT_KEYS = %i[total_steps completed_steps failed_steps attempt_number retry_limit].freeze
  BAD_IDS = [nil, "", "66", 2**70, -1, 0, 1.5, Float::NAN, true, {}, [1], :sym, "x" * 10_000,
             "\xff\xfe".b, Object.new].freeze
  BAD_COUNTS = [-1, -(2**70), 2**70, "3", Float::NAN, Float::INFINITY, -0.0, nil, [], { a: 1 }, 1.5].freeze
  BAD_MESSAGES = ["x" * 200_000, "\xff\xfe bad".dup.force_encoding("UTF-8"), { nested: { deep: [1, { x: 2 }] } },
                  nil, 42, :sym, ["a", ["b"]], "caf\xC3".dup.force_encoding("UTF-8")].freeze

  module_function

  def copy(payload)
    payload.dup
  end

  # Events as [thread label, name, payload], from recorded events.
  def plain(events)
    events.map { |e| [e.thread, e.name, copy(e.payload)] }
  end

  # `events` with the task id of every event shifted by `by` (a second task).
  def retask(events, by)
    events.map do |(t, n, p)|
      p = copy(p)
      p[:task_id] += by if p[:task_id].is_a?(Integer)
      p[:step_id] += by * 1000 if p[:step_id].is_a?(Integer)
      [t, n, p]
    end
  end

  # The two lists merged at random, each keeping its own order; `b`'s
  # threads relabelled apart from `a`'s.
  def interleave(rng, a, b)
    b = b.map { |(t, n, p)| [t + 10, n, p] }
    out = []
    i = j = 0
    while i < a.size || j < b.size
      if j >= b.size || (i < a.size && rng.rand(2).zero?)
        out << a[i]
        i += 1
      else
        out << b[j]
        j += 1
      end
    end
    out
  end

  def mutate_value(rng, p)
    p = copy(p)
    case rng.rand(6)
    when 0 then p[:task_id] = BAD_IDS.sample(random: rng)
    when 1 then p.delete(:step_id)
    when 2 then p[:step_id] = BAD_IDS.sample(random: rng)
    when 3 then p[:error_message] = BAD_MESSAGES.sample(random: rng)
    when 4 then p[COUNT_KEYS.sample(random: rng)] = BAD_COUNTS.sample(random: rng)
    else p[:error_class] = BAD_MESSAGES.sample(random: rng)
    end
    p
  end

  # One mutation pass over `events`, `rate` in 0..1.
  def mutate(rng, events, rate, reorder: true)
    out = []
    events.each do |ev|
      t, n, p = ev
      r = rng.rand
      r = rate if !reorder && r >= rate * 0.3 && r < rate * 0.55
      if r < rate * 0.15
        next # dropped
      elsif r < rate * 0.3
        out << ev << [t, n, copy(p)] # repeated
      elsif r < rate * 0.45 && !out.empty?
        out.insert(out.size - 1, ev) # before its predecessor
      elsif r < rate * 0.55
        out << [rng.rand(4), n, p] # another thread
      elsif r < rate * 0.75
        out << [t, n, mutate_value(rng, p)]
      elsif r < rate * 0.85
        q = copy(p)
        q[:task_id] = 900_000 + rng.rand(100) # a task never opened
        out << [t, n, q]
      else
        out << ev
      end
    end
    out
  end

  CLOSING_STEP = %w[step.completed step.failed].freeze
  ENDING_TASK = %w[task.completed task.failed task.initialize_requested].freeze

  # A recorded stream in which steps were still running when their task
  # finalized: before each run's end (with a chance of one in two), the
  # closing events of the step that closed last are moved to just after
  # the task's ending event.
  def late_steps(seed)
    rng = Random.new(seed)
    events = plain(STREAMS.fetch(NAMES.sample(random: rng)))
    ends = events.each_index.select { |i| ENDING_TASK.include?(events[i][1]) && events[i - 1][1] != events[i][1] }
    ends.reverse_each do |e|
      next if rng.rand(2).zero?

      last = (0...e).reverse_each.find { |i| CLOSING_STEP.include?(events[i][1]) }
      next if last.nil?

      step = events[last][2][:step_id]
      opened = (0...last).reverse_each.find do |i|
        events[i][1] == "step.execution_requested" && events[i][2][:step_id] == step
      end
      moved = ((opened || 0)...e).select { |i| CLOSING_STEP.include?(events[i][1]) && events[i][2][:step_id] == step }
      late = moved.map { |i| events[i] }
      moved.reverse_each { |i| events.delete_at(i) }
      events.insert(e - moved.size + 1, *late)
    end
    events
  end

  # A mutated scenario for `seed`: the events, the points (indexes) where
  # the tracer is drained, reset or its open runs expired, and the bounds
  # in force. With `reorder: false`, each task's events keep their order
  # (no reordering, no interleaving of a task with itself): what sampling
  # decides at a run's end is then what the whole run shows.
  def scenario(seed, reorder: true)
    rng = Random.new(seed)
    a = plain(STREAMS.fetch(NAMES.sample(random: rng)))
    again = a.map { |(t, n, p)| [t, n, copy(p)] }
    other = retask(plain(STREAMS.fetch(NAMES.sample(random: rng))), 1_000)
    events = case rng.rand(reorder ? 4 : 3)
             when 0 then a
             when 1 then a + again # a re-run with the same ids
             when 2 then interleave(rng, a, other)
             else interleave(rng, a, again)
             end
    events = mutate(rng, events, [0.0, 0.05, 0.2, 0.5].sample(random: rng), reorder: reorder)
    actions = {}
    rng.rand(3).times { actions[rng.rand(events.size + 1)] = %i[drain reset expire expire].sample(random: rng) }
    limits = { lifecycle_max_open_runs: [1, 2, 10_000].sample(random: rng),
               lifecycle_max_spans_per_run: [3, 8, 1_000].sample(random: rng),
               lifecycle_max_finished_runs: [1, 10_000].sample(random: rng) }
    [events, actions, limits]
  end
end

RSpec.describe "Lifecycle tracer: mutated recorded streams" do
  seeds = MutatedStreams::SEEDS

  let(:backend) { Tasker::Telemetry::TraceBackend.instance }
  let(:publisher) do
    StreamReplayer.publisher_for(MutatedStreams::STREAMS.values.flatten)
                  .tap { |p| TaskerTraceNative.trace_lifecycle!(p) }
  end

  after do
    configure_lifecycle(sample_ratio: 1.0, sample_keep_errors: true, sample_keep_slower_than: nil,
                        sample_keep_retried: true)
  end

  def otlp_spans(json)
    JSON.parse(json).fetch("resourceSpans").flat_map do |rs|
      rs.fetch("scopeSpans").flat_map { |ss| ss.fetch("spans") }
    end
  end

  def subscribed
    @subscribed ||= publisher.__bus__.listeners.reject { |_, l| l.empty? }.keys
  end

  # Runs the scenario of `seed`: each event published in this thread, or
  # (threaded) in the thread of its label through StreamReplayer, strictly
  # in order either way. Returns {exported: the OTLP spans the drains took,
  # calls: how many events reached the tracer since the last reset}.
  def run_scenario(seed, threaded: false, reorder: true, drains: true, sample_ratio: 1.0, **settings)
    events, actions, limits = MutatedStreams.scenario(seed, reorder: reorder)
    configure_lifecycle(sample_ratio: sample_ratio, **limits, **settings)
    TaskerTraceNative.lifecycle_reset!
    TaskerTraceNative::TestHooks.seed_lifecycle_ids(seed)
    state = { calls: 0, exported: [], index: 0, no_drains: !drains }
    step = lambda do
      act(actions[state[:index]], state)
      state[:calls] += 1 if state[:index] < events.size && subscribed.include?(events[state[:index]][1])
      state[:index] += 1
    end
    if threaded
      recorded = events.each_with_index.map do |(t, n, p), i|
        StreamReplayer::Recorded.new(seq: i, t_ns: 0, thread: t, name: n, payload: p)
      end
      expect { StreamReplayer.replay(recorded, publisher, between: step) }.not_to raise_error, "seed #{seed}"
    else
      events.each do |(_, name, payload)|
        step.call
        expect { publisher.publish(name, payload) }.not_to raise_error, "seed #{seed}"
      end
    end
    act(actions[events.size], state)
    state
  end

  def act(action, state)
    case state[:no_drains] && action == :drain ? nil : action
    when :drain then state[:exported].concat(otlp_spans(backend.export_otlp(drain: true)))
    when :reset
      TaskerTraceNative.lifecycle_reset!
      state[:calls] = 0
    when :expire then TaskerTraceNative::TestHooks.expire_lifecycle_runs_in(10_000.0)
    end
  end

  def check_runs(runs, seed)
    by_root = runs.to_h { |r| [r[:spans].first[:span_id], r] }
    runs.each do |run|
      run[:spans].first[:links].each do |link|
        expect(link[:span_id]).not_to eq(run[:spans].first[:span_id]), "seed #{seed}: a run linked to itself"
        previous = by_root[link[:span_id]]
        next if previous.nil?

        expect(previous[:task_id]).to eq(run[:task_id]), "seed #{seed}: a link to another task's run"
        expect(previous[:spans].first[:start_time]).to be <= run[:spans].first[:start_time]
      end

      spans = run[:spans]
      root = spans.first
      # With connected traces a root's parent is the span current where
      # the run opened (the job's; here, another run's root in this thread).
      expect(spans.drop(1).map { |s| s[:parent_span_id] }.uniq - [root[:span_id]]).to eq([]),
                                                                  "seed #{seed}: one root per run"
      expect(root[:parent_span_id]).to be_nil, "seed #{seed}: a root with a parent" unless connected
      expect(%w[tasker.task.execution tasker.task.initialize]).to include(root[:name])
      ids = spans.map { |s| s[:span_id] }
      expect(ids.uniq.size).to eq(ids.size), "seed #{seed}: span ids repeat"
      spans.drop(1).each do |s|
        expect(s[:parent_span_id]).to eq(root[:span_id]), "seed #{seed}: an attempt's parent is its root"
      end
      spans.each do |s|
        next if s[:end_time].nil?

        expect(s[:end_time]).to be >= s[:start_time], "seed #{seed}: #{s[:name]} ends before it starts"
        s[:events].each do |e|
          expect(e[:time]).to be_between(s[:start_time], s[:end_time]),
                              "seed #{seed}: event #{e[:name]} outside #{s[:name]}"
        end
      end
      next if run[:end] == "open"

      spans.drop(1).each do |s|
        expect(s[:start_time]).to be >= root[:start_time], "seed #{seed}: an attempt starts before its root"
        expect(s[:end_time]).to be <= root[:end_time], "seed #{seed}: an attempt outlives its root"
      end
      expect(root[:status][:code]).to eq("ERROR"), "seed #{seed}: a failed run is not ERROR" if run[:end] == "failed"
    end
  end

  def connected
    defined?(::OpenTelemetry) ? true : false
  end

  def check_otlp(spans, seed)
    spans.group_by { |s| s["traceId"] }.each_value do |list|
      roots = list.select { |s| s["name"].start_with?("tasker.task.") }
      parentless = list.count { |s| s["parentSpanId"].to_s.empty? }
      expect(parentless).to(connected ? be <= 1 : eq(1), "seed #{seed}: an OTLP trace with #{parentless} roots")
      expect(roots.size).to eq(1), "seed #{seed}: an OTLP trace of #{roots.size} runs" unless connected
      ids = list.map { |s| s["spanId"] }
      expect(ids.uniq.size).to eq(ids.size), "seed #{seed}: OTLP span ids repeat"
      list.each do |s|
        next if roots.include?(s) && connected

        expect(ids).to include(s["parentSpanId"]) unless s["parentSpanId"].to_s.empty?
        start = Integer(s["startTimeUnixNano"])
        stop = Integer(s["endTimeUnixNano"])
        expect(stop).to be >= start, "seed #{seed}: an OTLP span ends before it starts"
        Array(s["events"]).each do |e|
          expect(Integer(e["timeUnixNano"])).to be_between(start, stop), "seed #{seed}: an OTLP event outside its span"
        end
      end
    end
  end

  def check_stats(calls, seed)
    s = TaskerTraceNative.lifecycle_stats
    landed = s.values_at(:events_recorded, :events_ignored, :events_orphaned, :events_late, :events_dropped,
                         :events_refused).sum
    expect(landed).to eq(calls), "seed #{seed}: #{landed} events counted for #{calls} published: #{s}"
    expect(s[:events_repeated]).to be <= s[:events_recorded]
    expect(s[:open_runs]).to be <= TaskerTraceNative.config.lifecycle_max_open_runs, "seed #{seed}"
    expect(s[:finished_runs]).to be <= TaskerTraceNative.config.lifecycle_max_finished_runs, "seed #{seed}"
    s.each_value { |v| expect(v).to be_an(Integer).and(be >= 0), "seed #{seed}: #{s}" }
  end

  def check_everything(state, seed)
    runs = TaskerTraceNative.lifecycle_runs(include_open: true)
    check_runs(runs, seed)
    runs.each do |run|
      expect(run[:spans].size).to be <= TaskerTraceNative.config.lifecycle_max_spans_per_run, "seed #{seed}"
    end
    check_otlp(otlp_spans(backend.export_otlp(include_open: true)), seed)
    check_otlp(state[:exported], seed)
    check_stats(state[:calls], seed)
  end

  # A run as sampling sees it: its task, how it ended, and each span's
  # name, status, attributes (not the measured duration) and events.
  def shape(run)
    spans = run[:spans].map do |s|
      [s[:name], s[:status], s[:attributes].except("tasker.execution_duration"), s[:events].map { |e| e[:name] }]
    end
    nan_free([run[:task_id], run[:end], spans])
  end

  def failed?(run)
    run[:spans].any? { |s| s[:status][:code] == "ERROR" }
  end

  def retried?(run)
    attempts = run[:spans].drop(1)
    attempts.group_by { |s| s[:attributes]["tasker.step_id"] }.any? { |_, a| a.size > 1 } ||
      attempts.any? { |s| (n = s[:attributes]["tasker.attempt_number"]).is_a?(Numeric) && n > 1 }
  end

  # The finished runs the scenario leaves. Every finished run stays to be
  # compared (no drains, no bound), with every span (the span budget could
  # push a failed attempt out after its run ended).
  def finished(seed, ratio, reorder: false)
    run_scenario(seed, reorder: reorder, drains: false, sample_ratio: ratio,
                       lifecycle_max_finished_runs: 10_000, lifecycle_max_spans_per_run: 1_000)
    TaskerTraceNative.lifecycle_runs
  end

  # Checks that an export takes the runs lifecycle_runs showed; returns
  # sampled_out after it (by then every run left out is counted).
  def sampled_out_after_take(runs)
    taken = otlp_spans(backend.export_otlp(drain: true)).select { |s| s["name"].start_with?("tasker.task.") }
    expect(taken.map { |s| s["traceId"] }).to eq(runs.map { |r| r[:trace_id] })
    TaskerTraceNative.lifecycle_stats[:sampled_out]
  end

  # The finished runs of MutatedStreams.late_steps(seed) at `ratio`, its
  # events published in their recorded threads.
  def late_step_runs(seed, ratio)
    configure_lifecycle(sample_ratio: ratio)
    TaskerTraceNative.lifecycle_reset!
    TaskerTraceNative::TestHooks.seed_lifecycle_ids(seed)
    recorded = MutatedStreams.late_steps(seed).each_with_index.map do |(t, n, p), i|
      StreamReplayer::Recorded.new(seq: i, t_ns: 0, thread: t, name: n, payload: p)
    end
    StreamReplayer.replay(recorded, publisher)
    TaskerTraceNative.lifecycle_runs
  end

  it "keeps its invariants on every mutated stream, and never raises", timeout: 120 do
    seeds.each { |seed| check_everything(run_scenario(seed), seed) }
  end

  it "makes through the listener the trace that reading every event in full makes", timeout: 120 do
    seeds.each do |seed|
      events, actions, limits = MutatedStreams.scenario(seed)
      events = events.select { |(_, name, _)| subscribed.include?(name) }
      results = %i[listener full].map do |path|
        configure_lifecycle(**limits)
        TaskerTraceNative.lifecycle_reset!
        events.each_with_index do |(_, name, payload), i|
          # The waiting events read first, as an export reads them (the
          # background exporter, which cannot, expires no further than the
          # oldest of them).
          TaskerTraceNative.lifecycle_stats if actions[i] == :expire
          act(actions[i], { exported: [] })
          if path == :listener
            publisher.publish(name, payload)
          else
            TaskerTraceNative.record_lifecycle_event(name, { timestamp: Time.now }.merge(payload))
          end
        end
        [TaskerTraceNative.lifecycle_runs(include_open: true).map { |r| comparable(r) },
         TaskerTraceNative.lifecycle_stats.except(:events_repeated)]
      end
      expect(results[0]).to eq(results[1]), "seed #{seed}"
    end
  end

  it "keeps them with each event published in its own thread", timeout: 120 do
    MutatedStreams::THREADED_SEEDS.each { |seed| check_everything(run_scenario(seed, threaded: true), seed) }
  end

  context "with connected traces (the OpenTelemetry API stand-in)" do
    include_context "with the OpenTelemetry API stand-in"

    it "keeps them too, and leaves every thread's context as it found it", timeout: 120 do
      MutatedStreams::THREADED_SEEDS.each do |seed|
        check_everything(run_scenario(seed, threaded: seed.even?), seed)
        # A root dropped by a reset, an expiry or an eviction stays in its
        # thread until its next event (a documented limit); otherwise a
        # thread whose runs all ended holds none of the gem's spans.
        stats = TaskerTraceNative.lifecycle_stats
        clean = (MutatedStreams.scenario(seed)[1].values & %i[reset expire]).empty? &&
                stats.values_at(:open_runs, :evicted_runs, :expired_runs).all?(&:zero?)
        expect(OpenTelemetryStandIn.stack).to eq([]), "seed #{seed}" if clean
        TaskerTraceNative::ContextListener.release!
        otel::Context.clear
      end
    end

    it "keeps every failed and retried run whole at a ratio of 0, and nothing else", timeout: 120 do
      seeds.each do |seed|
        all = finished(seed, 1.0)
        TaskerTraceNative::ContextListener.release!
        otel::Context.clear
        kept = finished(seed, 0.0)
        TaskerTraceNative::ContextListener.release!
        otel::Context.clear
        expect(kept.map { |r| shape(r) }).to eq(all.select { |r| failed?(r) || retried?(r) }.map { |r| shape(r) }),
                                               "seed #{seed}"
      end
    end

    it "keeps a run whose step fails after its task's end" do
      seeds.first(40).each do |seed|
        all = late_step_runs(seed, 1.0)
        kept = late_step_runs(seed, 0.0)
        expect(kept.map { |r| shape(r) }).to eq(all.select { |r| failed?(r) || retried?(r) }.map { |r| shape(r) }),
                                               "seed #{seed}"
        # No unbalanced detach was reported.
        expect(otel.errors).to eq([]), "seed #{seed}"
      end
    end
  end

  describe "sampling" do
    it "keeps every failed and retried run whole at a ratio of 0, and nothing else", timeout: 120 do
      seeds.each do |seed|
        all = finished(seed, 1.0)
        kept = finished(seed, 0.0)
        expect(kept.map { |r| shape(r) }).to eq(all.select { |r| failed?(r) || retried?(r) }.map { |r| shape(r) }),
                                               "seed #{seed}"
        expect(sampled_out_after_take(kept)).to eq(all.count { |r| !failed?(r) && !retried?(r) }), "seed #{seed}"
      end
    end

    # OpenTelemetry's TraceIdRatioBased decision for a trace id.
    def head_sampled?(trace_id, ratio)
      Integer(trace_id[16, 16], 16) < (ratio * ((2**64) - 1)).ceil
    end

    it "exports at a ratio of 0.3 the head's share, every failed and retried run, each whole", timeout: 120 do
      seeds.each do |seed|
        all = finished(seed, 1.0)
        kept = finished(seed, 0.3)
        want = all.select { |r| head_sampled?(r[:trace_id], 0.3) || failed?(r) || retried?(r) }
        expect(kept.map { |r| [r[:trace_id], shape(r)] }).to eq(want.map { |r| [r[:trace_id], shape(r)] }),
                                                             "seed #{seed}"
      end
    end

    it "keeps a failed creation (task_id nil) amid runs it leaves out" do
      configure_lifecycle(sample_ratio: 0.0, sample_keep_retried: false)
      events = MutatedStreams.plain(MutatedStreams::STREAMS.fetch("order_complete"))
      events.insert(40, [0, "task.failed", { task_id: nil, error_message: "initialization_failed" }])
      events.each { |(_, name, payload)| publisher.publish(name, payload) }
      expect(TaskerTraceNative.lifecycle_runs.map { |r| [r[:end], r[:spans].map { |s| [s[:name], s[:status]] }] })
        .to eq([["failed", [["tasker.task.initialize", { code: "ERROR", message: "initialization_failed" }]]]])
      expect(TaskerTraceNative.lifecycle_stats[:sampled_out]).to eq(1)
    end

    it "keeps a run whose failed attempt was dropped for room" do
      configure_lifecycle(sample_ratio: 0.0, sample_keep_retried: false, lifecycle_max_spans_per_run: 3)
      MutatedStreams.plain(MutatedStreams::STREAMS.fetch("order_payment_retry"))
                    .each { |(_, name, payload)| publisher.publish(name, payload) }
      # The first run ends pending with process_payment failed; its spans
      # beyond 3 went, the failed attempt among them.
      runs = TaskerTraceNative.lifecycle_runs
      expect(runs.map { |r| r[:end] }).to eq(["pending"])
      expect(runs.first[:spans].map { |s| s[:status][:code] }).not_to include("ERROR")
      expect(TaskerTraceNative.lifecycle_stats).to include(sampled_out: 1)
    end

    # A step still running when its task finalized (its attempt open as
    # the run ends): its failure arrives after the task's end. A run left
    # out at the head with an attempt still open waits undecided for it, as
    # a sampled run waits for its late events, and a late failure keeps it.
    it "keeps a run whose step fails after its task's end, whole" do
      seeds.each do |seed|
        all, kept = [1.0, 0.0].map { |ratio| late_step_runs(seed, ratio) }
        expect(kept.map { |r| shape(r) }).to eq(all.select { |r| failed?(r) || retried?(r) }.map { |r| shape(r) }),
                                               "seed #{seed}"
        expect(sampled_out_after_take(kept)).to eq(all.count { |r| !failed?(r) && !retried?(r) }), "seed #{seed}"
      end
    end

    # Reordered too: a step's failure may reach its run after the task's
    # end (a step still running when its task finalized). A run left out at
    # the head with an attempt still open waits undecided for it, as a
    # sampled run waits for its late events.
    it "keeps every failed run whole with only the error rule on, failures arriving late included",
       timeout: 120 do
      configure_lifecycle(sample_keep_retried: false)
      seeds.each do |seed|
        all = finished(seed, 1.0, reorder: true)
        kept = finished(seed, 0.0, reorder: true)
        expect(kept.map { |r| shape(r) }).to eq(all.select { |r| failed?(r) }.map { |r| shape(r) }), "seed #{seed}"
        expect(sampled_out_after_take(kept)).to eq(all.count { |r| !failed?(r) }), "seed #{seed}"
      end
    end
  end
end
