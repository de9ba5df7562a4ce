# frozen_string_literal: true

require "spec_helper"
require "date"
require "json"
require "active_support/hash_with_indifferent_access"
require "active_support/core_ext/hash/indifferent_access"

module TaskerTraceNative
  module Spec
    # Seeded random event streams. Every event is built from its own seed, so
    # the native backend and the reference each get fresh, identical objects
    # (a payload can change itself while it is read: a default proc storing
    # into it, a to_s adding a key).
    module DifferentialStream
      TASKER_EVENTS = %w[
        task.initialize_requested task.start_requested task.completed task.failed task.retry_requested
        task.cancelled task.resolved_manually task.before_transition
        task.handle task.enqueue task.finalize task.error task.complete
        step.initialize_requested step.execution_requested step.before_handle step.handle step.completed
        step.failed step.retry_requested step.cancelled step.resolved_manually step.before_transition
        step.find_viable step.backoff step.skip step.max_retries_reached
        workflow.task_started workflow.task_completed workflow.task_failed workflow.step_completed
        workflow.step_failed workflow.viable_steps_discovered workflow.no_viable_steps
        workflow.orchestration_requested workflow.task_finalization_started
        workflow.task_finalization_completed workflow.task_reenqueue_requested workflow.iteration_started
        workflow.iteration_completed workflow.steps_execution_started workflow.steps_execution_completed
      ].freeze
      STARTS = %w[task.started step.started workflow.started custom.thing.started].freeze
      SPANS = %w[step.before_handle task.before_transition step.before_transition task.after_transition
                 step.after_handle].freeze
      ODD_NAMES = [
        "", ".started", "started", "task.completed.extra", "task.started.extra", "x.before_", "x.after_",
        "task.after_transition.x", "step.before_handle.completed", "step.before_handle.started",
        "failed_retry.completed", "task.Started", "task.started\nextra", "x\ntask.failed", "task.startedX\n",
        "bin\xff.started".b, "caf\xE9.completed".dup.force_encoding(Encoding::ISO_8859_1), "日本.before_x"
      ].freeze
      # Names only the contract mode sees: the original treats them differently.
      BETTER_NAMES = [
        :"task.started", :"task.completed", :"task.failed", :"step.before_handle", :"workflow.x",
        nil, 42, 1.5, ["task.started"], true,
        "task\xff.started".dup.force_encoding(Encoding::UTF_8), "task.started".encode(Encoding::UTF_16LE)
      ].freeze
      SYMBOLS = %i[status alpha beta état retries detail].freeze
      STRINGS = ["", "ok", "héllo ✓", "a\0b", "\xff\x00".b, "caf\xE9".dup.force_encoding(Encoding::ISO_8859_1),
                 "\xff broken".dup.force_encoding(Encoding::UTF_8)].freeze

      # A stand-in object whose to_s is stable across the two builds.
      Tagged = Struct.new(:n) do
        def to_s = "tag-#{n}"
      end
      # Named, so their "#<ClassName>" placeholders match across builds.
      FailingToS = Class.new { def to_s = raise("nope") }
      IntegerToS = Class.new { def to_s = 42 }
      BadId = Class.new { def to_s = raise(ArgumentError, "bad id") }
      Blank = Class.new(BasicObject)
      PayloadHash = Class.new(Hash)

      module_function

      # [event_name, payload, mutate] for one event; `mutate` (or nil) changes
      # the caller's objects after the backend took the event.
      def event(seed, contract:)
        rng = Random.new(seed)
        name = event_name(rng, contract)
        payload, mutate = payload(rng, contract)
        [name, payload, mutate]
      end

      def event_name(rng, contract)
        r = rng.rand
        if contract && r < 0.05 then BETTER_NAMES.sample(random: rng)
        elsif r < 0.30 then STARTS.sample(random: rng)
        elsif r < 0.50 then SPANS.sample(random: rng)
        elsif r < 0.88 then TASKER_EVENTS.sample(random: rng)
        else ODD_NAMES.sample(random: rng)
        end
      end

      def id_value(rng, pool)
        case rng.rand(10)
        when 0 then nil
        when 1 then false
        when 2 then pool.sample(random: rng).to_s # "3" collides with 3
        when 3 then rng.rand < 0.5 ? :"id#{rng.rand(3)}" : (2**65) + rng.rand(2)
        else pool.sample(random: rng)
        end
      end

      def payload(rng, contract)
        return [[nil, [], "task_id=1", 5, :sym].sample(random: rng), nil] if rng.rand < 0.03

        fields = []
        fields << [:task_id, id_value(rng, (1..12).to_a)] if rng.rand < 0.6
        fields << [:workflow_step_id, id_value(rng, (1..8).to_a)] if rng.rand < 0.3
        fields << [:operation, [*%w[sync push], nil, false].sample(random: rng)] if rng.rand < 0.2
        rng.rand(4).times { |i| fields << [[:"extra#{i}", "s#{i}", i * 10].sample(random: rng), value(rng, 1, contract)] }
        fields.shuffle!(random: rng)
        payload = fields.to_h
        return [payload, nil] unless contract

        payload = special_payload(rng, payload)
        mutate = nil
        if payload.instance_of?(Hash) && rng.rand < 0.2
          mutate = lambda do |p|
            p[:late] = true
            p.each_value { |v| v << :late if Array === v && !v.frozen? } # rubocop:disable Style/CaseEquality
          end
        end
        [payload, mutate]
      end

      def special_payload(rng, payload)
        case rng.rand(100)
        when 0..3
          # Ids and plain values only: HashWithIndifferentAccess converts
          # nested values and asks them is_a?, which BasicObjects lack.
          fields = payload.select { |k, _| %i[task_id workflow_step_id operation].include?(k) }
          ActiveSupport::HashWithIndifferentAccess.new(fields.transform_keys(&:to_s).merge("detail" => "hwia"))
        when 4..5
          PayloadHash.new.merge!(payload)
        when 6..7
          id = rng.rand(1..12)
          Hash.new { |_h, k| k == :task_id ? id : nil }.merge!(payload.reject { |k, _| k == :task_id })
        when 8..9
          cyclic = payload.dup
          cyclic[:me] = [cyclic, { back: cyclic }]
          cyclic
        when 10
          chain = []
          current = chain
          130.times { current << (current = []) }
          payload.merge(deep: chain)
        when 11
          payload.merge(task_id: BadId.new)
        else
          payload
        end
      end

      def value(rng, depth, contract)
        kinds = depth > 4 ? 12 : 15
        kinds += 8 if contract
        case rng.rand(kinds)
        when 0 then nil
        when 1 then rng.rand < 0.5
        when 2 then rng.rand(-1000..1000)
        when 3 then [2**64, -(2**70), (2**62) - 1, -(2**62)].sample(random: rng)
        when 4 then (rng.rand * 1000).round(3)
        when 5 then [Float::INFINITY, -Float::INFINITY, -0.0, Float::NAN, 5.0e-324].sample(random: rng)
        when 6, 7 then STRINGS.sample(random: rng).dup
        when 8, 9 then SYMBOLS.sample(random: rng)
        when 10 then "text-#{rng.rand(100)}"
        when 11 then rng.rand(1_000_000)
        when 12 then Array.new(rng.rand(4)) { value(rng, depth + 1, contract) }
        when 13, 14
          keys = [:a, "b", 3, nil, :état, [1], 2.5]
          Array.new(rng.rand(4)) { [keys.sample(random: rng), value(rng, depth + 1, contract)] }.to_h
        when 15 then Time.utc(2026, 1 + rng.rand(12), 1 + rng.rand(28), rng.rand(24), rng.rand(60), rng.rand(60))
        when 16 then Date.new(2020 + rng.rand(10), 1 + rng.rand(12), 1 + rng.rand(28))
        when 17 then Tagged.new(rng.rand(100))
        when 18 then Rational(rng.rand(1..9), rng.rand(1..9))
        when 19 then rng.rand < 0.5 ? BasicObject.new : Blank.new
        when 20 then FailingToS.new
        when 21 then IntegerToS.new
        else (rng.rand(5)..rng.rand(5..9))
        end
      end
    end

    # Comparable forms of exports: classes, encodings, key order and exact
    # float bits kept; generated keys, timestamps and durations replaced by
    # placeholders after their shape is checked.
    module ExportNormaliser
      ISO_SECOND = /\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\z/
      GENERATED_KEY = /\A(generic|trace)_\d+\.\d+\z/

      module_function

      def canonical(value)
        case value
        when Hash then [:hash, value.map { |k, v| [canonical(k), canonical(v)] }]
        when Array then [:array, value.map { |v| canonical(v) }]
        when String then [:string, value.encoding.name, value.b]
        when Float then [:float, value.nan? ? "NaN" : [value].pack("G")]
        else [value.class.name, value]
        end
      end

      # Returns [normalised traces, problems]; `duration` decides what a
      # duration must look like.
      def traces(traces, &duration_check)
        problems = []
        counters = Hash.new(0)
        normalised = traces.map do |key, record|
          # (Bytes: a key spelled from an id with broken bytes is no valid String.)
          key = if key.b.match?(GENERATED_KEY)
                  kind = key.b[/\A[a-z]+/]
                  "#{kind}##{counters[kind] += 1}"
                elsif key.b.start_with?("generic_", "trace_")
                  problems << "odd generated key #{key.inspect}"
                  key
                else
                  key
                end
          [key, record(record, problems, &duration_check)]
        end
        [normalised.to_h, problems]
      end

      def record(record, problems, &duration_check)
        record.to_h do |field, value|
          case field
          when :start_time, :end_time, :timestamp
            problems << "#{field} #{value.inspect} is not an ISO 8601 second" unless value.is_a?(String) && value.match?(ISO_SECOND)
            [field, :timestamp]
          when :duration
            problem = duration_check.call(value, record)
            problems << problem if problem
            [field, :duration]
          when :spans
            [field, value.map { |span| record(span, problems, &duration_check) }]
          else
            [field, value]
          end
        end
      end

      # The first place where two canonical forms differ, for failure messages.
      def first_difference(a, b, path = "traces")
        return nil if a == b
        return "#{path}: #{a.inspect[0, 300]} != #{b.inspect[0, 300]}" unless a.is_a?(Array) && b.is_a?(Array)
        return "#{path}: #{a.inspect[0, 300]} != #{b.inspect[0, 300]}" if a.size != b.size

        a.each_with_index do |item, i|
          diff = first_difference(item, b[i], "#{path}/#{i}")
          return diff if diff
        end
        nil
      end
    end
  end
end

RSpec.describe "Differential: native backend vs the pure-Ruby reference", timeout: 300 do
  stream = TaskerTraceNative::Spec::DifferentialStream
  events_per_stream = Integer(ENV.fetch("DIFFERENTIAL_EVENTS", "3000"))
  base_seed = Integer(ENV.fetch("DIFFERENTIAL_SEED") { Random.rand(2**31) })

  let(:native) { Tasker::Telemetry::TraceBackend.instance }

  around do |example|
    saved_zone = Time.zone
    Time.zone = "UTC"
    example.run
  ensure
    Time.zone = saved_zone
  end

  # Feeds one stream to both backends, event by event, and checks the return
  # values as it goes. Returns the reference.
  def run_stream(seed, count, reference, contract:)
    rng = Random.new(seed)
    count.times do |i|
      event_seed = rng.rand(2**32)
      results = [native, reference].map do |backend|
        name, payload, mutate = TaskerTraceNative::Spec::DifferentialStream.event(event_seed, contract: contract)
        result = backend.handle_event(name, payload)
        mutate&.call(payload)
        [result, name]
      end
      next if results[0][0] == results[1][0]

      raise "event #{i} (event seed #{event_seed}) #{results[0][1].inspect}: native returned " \
            "#{results[0][0].inspect}, reference #{results[1][0].inspect}"
    end
    reference
  end

  def compare_traces(native_traces, reference_traces, native_duration:, reference_duration:)
    ours, our_problems = TaskerTraceNative::Spec::ExportNormaliser.traces(native_traces, &native_duration)
    theirs, their_problems = TaskerTraceNative::Spec::ExportNormaliser.traces(reference_traces, &reference_duration)
    expect(our_problems).to eq([]), "native export: #{our_problems.first(5).join('; ')}"
    expect(their_problems).to eq([]), "reference export: #{their_problems.first(5).join('; ')}"
    diff = TaskerTraceNative::Spec::ExportNormaliser.first_difference(
      TaskerTraceNative::Spec::ExportNormaliser.canonical(ours),
      TaskerTraceNative::Spec::ExportNormaliser.canonical(theirs)
    )
    expect(diff).to be_nil, "exports differ at #{diff}"
  end

  # Native durations: Float seconds, 6 decimals, measured on the native clock.
  six_decimals = lambda do |value, _record|
    next "duration #{value.inspect} is not a Float" unless value.is_a?(Float)
    next "duration #{value.inspect} is negative" if value.negative?

    "duration #{value.inspect} has more than 6 decimals" unless value == value.round(6)
  end

  # Seeds and settings: default limits, and small limits that make eviction
  # and span dropping happen all the time.
  streams = [
    ["default limits", base_seed, {}],
    ["default limits, second stream", base_seed + 1, {}],
    ["max_traces 40, max_spans_per_trace 1", base_seed + 2, { max_traces: 40, max_spans_per_trace: 1 }],
    ["max_traces 7, max_spans_per_trace 0", base_seed + 3, { max_traces: 7, max_spans_per_trace: 0 }]
  ]

  describe "against the reference in contract mode (all inputs, copies, limits, counters)" do
    streams.each do |label, seed, limits|
      it "agrees on every result, the export and the counters (#{label}, seed #{seed})" do
        settings = { max_traces: 100_000, max_spans_per_trace: 10_000 }.merge(limits)
        TaskerTraceNative.configure do |c|
          c.max_traces = settings[:max_traces]
          c.max_spans_per_trace = settings[:max_spans_per_trace]
        end
        reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new(contract: true, **settings)
        run_stream(seed, events_per_stream, reference, contract: true)

        native_export = native.export
        reference_export = reference.export
        compare_traces(native_export[:traces], reference_export[:traces],
                       native_duration: six_decimals, reference_duration: six_decimals)
        canonical = TaskerTraceNative::Spec::ExportNormaliser.method(:canonical)
        expect(canonical.call(native.traces)).to eq(canonical.call(native_export[:traces]))

        metadata_fields = %i[backend instance_id trace_count]
        expect(native_export[:metadata].slice(*metadata_fields)).to eq(reference_export[:metadata].slice(*metadata_fields))
        expect(native_export[:metadata].keys).to eq(reference_export[:metadata].keys)
        counters = %i[active_traces events_handled rejected_events orphaned_events evicted_traces dropped_spans
                      max_traces]
        expect(native.stats.slice(*counters)).to eq(reference.stats.slice(*counters))
        # The stream must have exercised what it is meant to.
        stats = native.stats
        expect(stats[:events_handled]).to be > events_per_stream / 2
        expect(stats[:rejected_events]).to be > 0
        expect(stats[:orphaned_events]).to be > 0
        expect(stats[:evicted_traces]).to be > 0 if limits.key?(:max_traces)
        expect(stats[:dropped_spans]).to be > 0 if limits.key?(:max_spans_per_trace)
      end
    end
  end

  describe "against the original behaviour, on inputs where the contract says (same)" do
    [base_seed + 10, base_seed + 11].each do |seed|
      it "agrees except for the documented improvements (seed #{seed})" do
        reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new
        run_stream(seed, events_per_stream, reference, contract: false)
        expect(reference.generated_key_collisions).to eq(0),
                                                      "the original's Float keys collided (better rule 9); rerun"

        # (better) rule 7: the original's durations are whole seconds parsed
        # back from its timestamps; the native ones are finer.
        whole_seconds = lambda do |value, record|
          expected = Time.iso8601(record[:end_time]) - Time.iso8601(record[:start_time])
          "original duration #{value.inspect} != #{expected}" unless value == expected && value == value.round
        end
        native_traces = native.export[:traces]
        compare_traces(native_traces, reference.export[:traces],
                       native_duration: six_decimals, reference_duration: whole_seconds)
        native_traces.each_value do |record|
          next unless record.key?(:duration)

          whole = Time.iso8601(record[:end_time]) - Time.iso8601(record[:start_time])
          expect(record[:duration]).to be_between(whole - 1, whole + 1)
        end
        expect(native.stats[:active_traces]).to eq(reference.stats[:active_traces])
      end
    end
  end

  describe "the documented differences, event by event" do
    let(:original) { TaskerTraceNative::Spec::ReferenceTraceBackend.new }

    def both(*args)
      [native.handle_event(*args), original.handle_event(*args)]
    end

    it "stores a Symbol name as a String; the original kept the Symbol" do
      expect(both(:"task.started", task_id: 1)).to eq([true, true])
      expect(native.traces["task_1"][:event_name]).to eq("task.started")
      expect(original.traces["task_1"][:event_name]).to eq(:"task.started")
    end

    it "finishes with a Symbol name; the original failed halfway (end_time, no status, false)" do
      both(:"task.started", task_id: 1)
      expect(both(:"task.completed", task_id: 1)).to eq([true, false])
      expect(native.traces["task_1"]).to include(:end_time, :duration, status: "success")
      expect(original.traces["task_1"]).to include(:end_time, :duration)
      expect(original.traces["task_1"]).not_to include(:status)
    end

    it "refuses a name that is not a String or Symbol; the original stored it as generic" do
      expect(both(42, {})).to eq([false, true])
      expect(native.traces).to be_empty
      expect(original.traces.values.first).to include(event_name: 42, type: "generic")
    end

    it "returns a copy from traces; the original returned its live Hash" do
      both("task.started", task_id: 1)
      native.traces.clear
      original.traces.clear
      expect(native.traces.size).to eq(1)
      expect(original.traces.size).to eq(0)
    end

    it "adds counters to stats; the original had three entries" do
      expect(original.stats.keys).to eq(%i[active_traces backend_uptime instance_id])
      expect(native.stats.keys.first(3)).to eq(original.stats.keys)
      expect(native.stats.keys.size).to eq(9)
    end

    it "writes UTC timestamps in another Time.zone; the original wrote the zone's offset" do
      Time.zone = "Tokyo"
      expect(both("task.started", task_id: 1)).to eq([true, true])
      expect(native.traces["task_1"][:start_time]).to end_with("Z")
      expect(original.traces["task_1"][:start_time]).to end_with("+09:00")
      expect(native.export[:metadata][:created_at]).to end_with("Z")
      expect(original.export[:metadata][:created_at]).to end_with("+09:00")
      # created_at itself follows Time.zone in both.
      expect([native.created_at, original.created_at].map { |t| t.time_zone.name }).to eq(%w[Tokyo Tokyo])
    end

    it "agrees on names the original's regexp match raised on (both false)" do
      bad = "task\xff.started".dup.force_encoding(Encoding::UTF_8)
      expect(both(bad, task_id: 1)).to eq([false, false])
    end
  end

  it "builds identical streams from the same seed" do
    a = Array.new(50) { |i| stream.event(base_seed + i, contract: true) }
    b = Array.new(50) { |i| stream.event(base_seed + i, contract: true) }
    shapes = ->(events) { events.map { |name, payload, _| [name.inspect, payload.class, payload.is_a?(Hash) ? payload.keys : nil] } }
    expect(shapes.call(a)).to eq(shapes.call(b))
  end
end

module TaskerTraceNative
  module Spec
    # Hostile inputs, event sequence by sequence. Each case is a lambda, so
    # the native backend and the reference get fresh, identical objects.
    module Adversarial
      NameSubclass = Class.new(String)
      HashSubclass = Class.new(Hash)
      # A Hash subclass with its own `[]`: asked through it for the key.
      OwnIndex = Class.new(Hash) { def [](key) = key == :task_id ? 77 : super }
      RaisingIndex = Class.new(Hash) { def [](_key) = raise("no []") }
      # Keys whose hash/eql?/== raise (only a compare_by_identity Hash holds the first).
      class RaisingHashKey
        def hash = raise("hash")
        def eql?(_other) = raise("eql?")
        def ==(_other) = raise("==")
        def to_s = "raising-hash"
      end

      # Raises in eql? and == once armed: building a payload with it may
      # compare it with other keys (a small Hash compares keys whose 8-bit
      # hash hints collide), which must not raise before the backend sees it.
      class RaisingEqKey
        def arm = tap { @armed = true }
        def eql?(other) = @armed ? raise("eql?") : super
        def ==(other) = @armed ? raise("==") : super
        def to_s = "raising-eq"
      end

      class RaisingToS
        def to_s = raise("to_s")
        def inspect = raise("inspect")
        def as_json(*) = raise("as_json")
      end

      class RaisingIso8601
        def iso8601 = raise(ArgumentError, "iso8601")
        def to_s = "never asked"
      end

      class AbstractToS
        def to_s = raise(NotImplementedError, "abstract")
      end

      class EndlessToS
        def to_s = to_s
      end

      class RaisingId
        def to_s = raise(ArgumentError, "bad id")
      end

      class NamedId
        def to_s = "named-#{self.class.name.size}"
      end

      # Distinct keys in Ruby, equal once stored (as their to_s).
      SameToS = Struct.new(:n) do
        def to_s = "same"
      end

      def self.colliding_keys(pairs)
        list = Array.new(pairs) { |i| [SameToS.new(i), i] }
        identity = {}.compare_by_identity
        pairs.times { |i| identity["dup".dup] = i }
        { task_id: 1, objects: list.to_h, identity: identity.merge!(task_id: 1) }
      end

      def self.nested(depth, hash: false)
        root = hash ? {} : []
        current = root
        depth.times do
          child = hash ? {} : []
          hash ? current[:in] = child : current << child
          current = child
        end
        root
      end

      def self.cyclic
        a = { task_id: 1 }
        b = { back: a }
        a[:b] = b
        a[:self] = a
        list = [1]
        list << list
        a[:list] = list
        shared = [1, 2]
        a[:shared] = [shared, shared] # the same object twice is no cycle
        a
      end

      start = ->(payload = {}) { ["task.started", { task_id: 1 }.merge(payload)] }
      CASES = {
        "Hash subclasses" => lambda {
          [["task.started", HashSubclass.new.merge!(task_id: 1, nested: HashSubclass.new.merge!(a: 1))],
           ["task.started", OwnIndex.new.merge!(other: 1)],
           ["task.started", ActiveSupport::HashWithIndifferentAccess.new("task_id" => 2, "x" => { "y" => 1 })],
           ["step.before_handle", ActiveSupport::HashWithIndifferentAccess.new("task_id" => 2)],
           ["task.completed", RaisingIndex.new.merge!(task_id: 2)],
           ["workflow.noted", RaisingIndex.new.merge!(task_id: 2)]]
        },
        "frozen and compare_by_identity Hashes" => lambda {
          [["task.started", { task_id: 1, v: [1].freeze }.freeze],
           ["task.started", {}.compare_by_identity.merge!(task_id: 2)],
           ["task.started", {}.compare_by_identity.tap { |h| h["task_id"] = 3 }],
           ["task.started", {}.compare_by_identity.merge!(task_id: 4, k: 1).freeze],
           ["task.completed", {}.compare_by_identity.merge!(task_id: 2).freeze],
           ["task.started", {}.compare_by_identity.tap { |h| h[RaisingHashKey.new] = 1 }.merge!(task_id: 5)]]
        },
        "default procs and values" => lambda {
          [["task.started", Hash.new(0)],
           ["task.started", Hash.new { |_h, k| k == :workflow_step_id ? 6 : nil }],
           ["task.started", Hash.new { |_h, _k| raise "default proc" }],
           ["task.started", Hash.new { |h, k| h[k] = 8 if k == :task_id }],
           ["workflow.noted", Hash.new { |_h, _k| raise "never asked for a generic event" }],
           ["task.completed", Hash.new(0)]]
        },
        "names: String subclasses, frozen, binary, other encodings, Symbols" => lambda {
          [[NameSubclass.new("task.started"), { task_id: 1 }],
           ["step.before_handle", { task_id: 1 }],
           [NameSubclass.new("step.after_handle"), { task_id: 1 }],
           ["task.completed".b.freeze, { task_id: 1 }],
           ["caf\xE9.started".dup.force_encoding(Encoding::ISO_8859_1), { task_id: 2 }],
           ["task\xff.started".dup.force_encoding(Encoding::UTF_8), { task_id: 3 }],
           ["task.started".encode(Encoding::UTF_16LE), { task_id: 3 }],
           [:"task.started", { task_id: 4 }], [:"step.before_x", { task_id: 4 }], [:"task.failed", { task_id: 4 }],
           [:"workflow.noted", {}], [NameSubclass.new("x.y"), {}], ["x.y".b, {}]]
        },
        "every kind suffix and edge names" => lambda {
          names = [".started", "started", "..started", "task.started\nx", "task.startedx", "x.completed.y",
                   "x.failed.y", "task.completed\n", ".before_", "before_x", "a.before_", "task.after_",
                   "step.before_handle.completed", "step.before_handle.started", "step.after_handle.failed",
                   "failed.x.completed", "task.Failed", "", ".", "task.failed"]
          names.each_with_index.flat_map do |name, i|
            [["task.started", { task_id: i }], [name, { task_id: i }], [name, {}]]
          end
        },
        "payload keys of every type" => lambda {
          raising = RaisingEqKey.new
          event = start.call("s" => 1, 2 => 2, nil => 3, 2.5 => 4, true => 5, [1, :a] => 6, { k: 1 } => 7,
                             raising => 8, NamedId.new => 9, "b".b => 10, :état => 11)
          raising.arm
          [event]
        },
        "payload values that raise in to_s, inspect, as_json, iso8601" => lambda {
          [start.call(a: RaisingToS.new, b: RaisingIso8601.new, c: AbstractToS.new, d: EndlessToS.new,
                      e: BasicObject.new, f: [RaisingToS.new, { g: AbstractToS.new }]),
           ["workflow.noted", { v: RaisingToS.new }],
           ["step.before_handle", { task_id: 1, v: EndlessToS.new }]]
        },
        "keys equal once stored, in small and large Hashes" => lambda {
          [["task.started", colliding_keys(3)], ["step.before_handle", colliding_keys(20)],
           ["workflow.noted", colliding_keys(9)[:identity]]]
        },
        "recursive payloads" => lambda {
          [["task.started", cyclic], ["step.before_handle", cyclic], ["workflow.noted", cyclic]]
        },
        "huge and deep payloads" => lambda {
          [start.call(list: Array.new(100_000) { |i| i }, text: "x" * 1_000_000,
                      table: (1..20_000).to_h { |i| [i, i.to_s] }),
           ["step.before_handle", { task_id: 1, deep: nested(129), deeper: nested(10_000, hash: true) }],
           ["workflow.noted", { deep: nested(128), wide: [nested(127)] * 3 }]]
        },
        "trace keys from ids of every kind" => lambda {
          ids = [NameSubclass.new("7"), "\xff".b, "\xff".dup.force_encoding(Encoding::UTF_8), "".encode(Encoding::UTF_16LE),
                 "ab".encode(Encoding::UTF_16LE), 1.5, true, :sym, 2**70, -3, [1, "a", nil], { a: [1] }, NamedId.new,
                 RaisingId.new, AbstractToS.new, BasicObject.new]
          ids.flat_map do |id|
            [["task.started", { task_id: id }], ["step.before_handle", { task_id: id }],
             ["task.completed", { task_id: id }], ["step.started", { task_id: false, workflow_step_id: id }],
             ["x.started", { task_id: nil, operation: id }]]
          end
        }
      }.freeze
    end
  end
end

RSpec.describe "Differential: adversarial inputs, native backend vs the reference", timeout: 300 do
  normaliser = TaskerTraceNative::Spec::ExportNormaliser
  let(:native) { Tasker::Telemetry::TraceBackend.instance }
  let(:counters) { %i[active_traces events_handled rejected_events orphaned_events evicted_traces dropped_spans max_traces] }

  around do |example|
    saved_zone = Time.zone
    Time.zone = "UTC"
    TaskerTraceNative.configure do |c|
      c.max_traces = 100_000
      c.max_spans_per_trace = 10_000
    end
    native.reset!
    example.run
  ensure
    Time.zone = saved_zone
  end

  def canonical_traces(traces)
    normalised, problems = TaskerTraceNative::Spec::ExportNormaliser.traces(traces) do |value, _record|
      "duration #{value.inspect} is not a 6-decimal Float" unless value.is_a?(Float) && value == value.round(6)
    end
    expect(problems).to eq([])
    TaskerTraceNative::Spec::ExportNormaliser.canonical(normalised)
  end

  def feed(backend, events)
    events.map do |name, payload|
      backend.handle_event(name, payload)
    rescue Exception => e # rubocop:disable Lint/RescueException
      "raised #{e.class}"
    end
  end

  TaskerTraceNative::Spec::Adversarial::CASES.each do |label, events|
    it "agrees on every result, the export and the counters: #{label}" do
      reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new(contract: true, max_traces: 100_000,
                                                                      max_spans_per_trace: 10_000)
      ours = feed(native, events.call)
      theirs = feed(reference, events.call)
      expect(ours).to eq(theirs)
      expect(ours).to all(satisfy { |r| [true, false].include?(r) })
      native_traces = native.export[:traces]
      diff = normaliser.first_difference(canonical_traces(native_traces), canonical_traces(reference.export[:traces]))
      expect(diff).to be_nil, "exports differ at #{diff}"
      expect(native.stats.slice(*counters)).to eq(reference.stats.slice(*counters))
      expect(native.stats[:events_handled] + native.stats[:rejected_events]).to eq(ours.size)
    end
  end

  it "keeps the first value of keys equal once stored, in export as in export_otlp" do
    [3, 20].each do |pairs|
      native.reset!
      native.handle_event("task.started", TaskerTraceNative::Spec::Adversarial.colliding_keys(pairs))
      native.handle_event("task.completed", task_id: 1)
      payload = native.export[:traces]["task_1"][:payload]
      expect(payload[:objects]).to eq("same" => 0)
      expect(payload[:identity]).to eq("dup" => 0, task_id: 1)
      span = JSON.parse(native.export_otlp)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
      objects = span["attributes"].find { |a| a["key"] == "tasker.objects" }
      expect(objects.dig("value", "kvlistValue", "values")).to eq([{ "key" => "same", "value" => { "intValue" => "0" } }])
    end
  end

  it "agrees with the original's kind and key for every String name and payload (rules 1, 3-6, 8, 9)" do
    events = TaskerTraceNative::Spec::Adversarial::CASES.fetch("every kind suffix and edge names").call
    original = TaskerTraceNative::Spec::ReferenceTraceBackend.new
    expect(feed(native, events)).to eq(feed(original, events))
    shape = ->(traces) { traces.map { |key, record| [key[/\A(generic|trace)_/] || key, record[:event_name], record.keys] } }
    expect(shape.call(native.traces)).to eq(shape.call(original.traces))
  end

  it "agrees with many threads calling handle_event while others export and read stats; counts add up" do
    threads = 6
    per_thread = 150
    events_of = lambda do |t|
      (0...per_thread).flat_map do |i|
        id = (t * 1000) + i
        [["task.started", { task_id: id, n: [t, i] }], ["step.before_handle", { task_id: id, step: i }],
         [i.even? ? "task.completed" : "task.failed", { task_id: id }], ["workflow.noted", { t: t, i: i }],
         ["step.after_handle", { task_id: -id - 1 }], ["task.started", "refused"]]
      end
    end
    reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new(contract: true, max_traces: 100_000,
                                                                    max_spans_per_trace: 10_000)
    threads.times { |t| feed(reference, events_of.call(t)) }

    done = false
    readers = Array.new(2) do
      Thread.new do
        seen = []
        until done
          export = native.export
          seen << (export[:metadata][:trace_count] == export[:traces].size)
          seen << native.stats.values_at(:events_handled, :rejected_events, :orphaned_events).all?(Integer)
          native.traces
        end
        seen
      end
    end
    writers = Array.new(threads) { |t| Thread.new { feed(native, events_of.call(t)) } }
    results = writers.map(&:value)
    done = true
    expect(readers.flat_map(&:value)).to all(be(true))
    expect(results.flatten.tally).to eq(true => threads * per_thread * 5, false => threads * per_thread)

    expect(native.stats.slice(*counters)).to eq(reference.stats.slice(*counters))
    # Keyed traces are the same record for record; generic ones the same as a multiset.
    by_key = lambda do |traces|
      keyed, generic = traces.partition { |key, _| !key.start_with?("generic_") }
      [canonical_traces(keyed.sort_by(&:first).to_h),
       generic.map { |_, record| normaliser.canonical(record.except(:timestamp)) }.sort_by(&:inspect)]
    end
    expect(by_key.call(native.export[:traces])).to eq(by_key.call(reference.export[:traces]))
  end

  it "keeps stats, export and traces consistent while reset! races handle_event" do
    writers = Array.new(4) do |t|
      Thread.new { Array.new(2000) { |i| native.handle_event("task.started", task_id: (t * 10_000) + i) } }
    end
    resetter = Thread.new do
      checks = []
      20.times do
        native.reset!
        export = native.export
        checks << (export[:metadata][:trace_count] == export[:traces].size)
        Thread.pass
      end
      checks
    end
    expect(writers.flat_map(&:value)).to all(be(true))
    expect(resetter.value).to all(be(true))
    stats = native.stats
    expect(stats[:active_traces]).to eq(native.export[:traces].size)
    expect(stats[:active_traces]).to eq(stats[:events_handled]) # every event a new key since the last reset
    expect(stats[:events_handled]).to be <= 8000
    expect(native.reset!).to be_nil
    expect(native.stats.slice(*counters)).to eq(active_traces: 0, events_handled: 0, rejected_events: 0, orphaned_events: 0,
                                                evicted_traces: 0, dropped_spans: 0, max_traces: 100_000)
  end
end
