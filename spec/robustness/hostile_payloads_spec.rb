# frozen_string_literal: true

require "bigdecimal"
require "date"
require "set"
require "active_support"
require "active_support/core_ext/time"
require "active_support/core_ext/hash/indifferent_access"
require_relative "robustness_helper"

# Hostile payloads and event names: each call returns true or false and never
# raises, `export` keeps working afterwards, and each stored value comes back
# as the contract's "Payload values" section says.
RSpec.describe "Robustness: hostile payloads" do
  RobustnessPoint = Struct.new(:x, :y)

  class RobustnessBasic < BasicObject; end

  class RobustnessRaisingToS
    def to_s = raise(ArgumentError, "no to_s for you")
  end

  class RobustnessNotImplementedToS
    def to_s = raise(NotImplementedError, "abstract")
  end

  class RobustnessRecursiveToS
    def to_s = "#{self}!"
  end

  class RobustnessRaisingIso8601
    def iso8601 = raise("no time")
  end

  class RobustnessIso8601NeedsArgs
    def iso8601(_digits) = "never"
  end

  class RobustnessNonStringToS
    def to_s = 42
  end

  class RobustnessNilToS
    def to_s = nil
  end

  class RobustnessLyingRespondTo
    def respond_to_missing?(name, _include_private = false) = name == :iso8601 || super
  end

  class RobustnessRaisingRespondTo
    def respond_to?(*) = raise("respond_to? is broken")
  end

  class RobustnessStringSubclass < String; end

  let(:calls) { [0] }

  # handle_event, checking that it answered true or false (and did not raise).
  def handle(name, payload = nil)
    calls[0] += 1
    result = payload.nil? ? backend.handle_event(name) : backend.handle_event(name, payload)
    expect(result).to eq(true).or eq(false)
    result
  end

  # The payload stored under `key` (or of the only trace).
  def stored(key = nil)
    traces = exported_traces
    key ? traces.fetch(key)[:payload] : traces.values.last[:payload]
  end

  after do
    # Export still works, and every call was either taken or refused.
    export = backend.export
    expect(export[:metadata][:trace_count]).to eq(export[:traces].size)
    stats = backend.stats
    expect(stats[:events_handled] + stats[:rejected_events]).to eq(calls[0])
  end

  describe "containers that contain themselves", :gc_stress_safe do
    it "stores the repeated occurrence of a Hash as '[...]'" do
      h = { task_id: 1, name: "loop" }
      h[:self] = h
      expect(handle("task.started", h)).to be(true)
      expect(stored("task_1")).to eq(task_id: 1, name: "loop", self: "[...]")
    end

    it "stores the repeated occurrence of an Array as '[...]', at any distance" do
      a = [1, "two"]
      a << a
      inner = []
      mutual = { list: inner }
      inner << mutual
      expect(handle("task.started", { task_id: 2, a: a, mutual: mutual, key_cycle: { a => :v } })).to be(true)
      expect(stored("task_2")).to eq(task_id: 2, a: [1, "two", "[...]"], mutual: { list: ["[...]"] },
                                     key_cycle: { [1, "two", "[...]"] => :v })
    end

    it "copies a container shared by two branches twice, since it is not a cycle" do
      shared = [1, { deep: true }]
      expect(handle("task.started", { task_id: 3, x: shared, y: shared, z: [shared, shared] })).to be(true)
      expect(stored("task_3")).to eq(task_id: 3, x: shared, y: shared, z: [shared, shared])
    end
  end

  describe "nesting 100,000 levels deep" do
    # Containers from the payload down, and what sits below the last one.
    def depth_and_bottom(value)
      levels = 0
      while value.is_a?(Array) || value.is_a?(Hash)
        levels += 1
        value = value.is_a?(Array) ? value.first : value.values.last
      end
      [levels, value]
    end

    it "keeps 128 levels of Arrays and stores the rest as '[depth limit]'", timeout: 120 do
      deep = [:bottom]
      100_000.times { deep = [deep] }
      expect(handle("task.started", { task_id: 1, deep: deep })).to be(true)
      payload = stored("task_1")
      # The payload Hash is level 1; its value `deep` is level 2.
      expect(depth_and_bottom(payload[:deep])).to eq([127, "[depth limit]"])
    end

    it "keeps 128 levels of Hashes and stores the rest as '[depth limit]'", timeout: 120 do
      deep = { leaf: :bottom }
      100_000.times { deep = { k: deep } }
      expect(handle("step.before_x.started", { task_id: 2, deep: deep })).to be(true)
      expect(depth_and_bottom(stored("task_2")[:deep])).to eq([127, "[depth limit]"])
    end

    it "keeps a tree exactly 128 levels deep whole", :gc_stress_safe do
      deep = [:bottom]
      125.times { deep = [deep] } # 126 Arrays below the payload: levels 2..127, plus [:bottom] at 128
      expect(handle("task.started", { task_id: 3, deep: [deep] })).to be(true)
      expect(depth_and_bottom(stored("task_3")[:deep])).to eq([127, :bottom])
    end
  end

  describe "objects that cannot describe themselves", :gc_stress_safe do
    it "stores BasicObjects as '#<ClassName>'" do
      expect(handle("task.started", { task_id: 1, a: BasicObject.new, b: RobustnessBasic.new,
                                      c: [RobustnessBasic.new] })).to be(true)
      expect(stored("task_1")).to eq(task_id: 1, a: "#<BasicObject>", b: "#<RobustnessBasic>",
                                     c: ["#<RobustnessBasic>"])
    end

    it "stores objects whose to_s or iso8601 raises, or answers no String, as '#<ClassName>'" do
      payload = {
        task_id: 2,
        raising: RobustnessRaisingToS.new,
        not_implemented: RobustnessNotImplementedToS.new,
        raising_time: RobustnessRaisingIso8601.new,
        needs_args: RobustnessIso8601NeedsArgs.new,
        number: RobustnessNonStringToS.new,
        nothing: RobustnessNilToS.new,
        lying: RobustnessLyingRespondTo.new,
        broken_respond_to: RobustnessRaisingRespondTo.new
      }
      expect(handle("task.started", payload)).to be(true)
      expect(stored("task_2")).to eq(
        task_id: 2,
        raising: "#<RobustnessRaisingToS>",
        not_implemented: "#<RobustnessNotImplementedToS>",
        raising_time: "#<RobustnessRaisingIso8601>",
        needs_args: "#<RobustnessIso8601NeedsArgs>",
        number: "#<RobustnessNonStringToS>",
        nothing: "#<RobustnessNilToS>",
        lying: "#<RobustnessLyingRespondTo>",
        broken_respond_to: "#<RobustnessRaisingRespondTo>"
      )
    end

    it "stores an object whose to_s recurses until the stack overflows as '#<ClassName>'",
       gc_stress_safe: false do
      expect(handle("task.started", { task_id: 4, v: RobustnessRecursiveToS.new })).to be(true)
      expect(stored("task_4")).to eq(task_id: 4, v: "#<RobustnessRecursiveToS>")
    end

    it "refuses an event whose trace id cannot be turned into a String, storing nothing" do
      expect(handle("task.started", { task_id: BasicObject.new })).to be(false)
      expect(handle("task.started", { task_id: RobustnessRaisingToS.new })).to be(false)
      expect(handle("task.completed", { task_id: RobustnessNotImplementedToS.new })).to be(false)
      expect(exported_traces).to eq({})
      expect(backend.stats[:rejected_events]).to eq(3)
    end
  end

  describe "strings of every encoding" do
    it "keeps bytes and encoding of invalid UTF-8, UTF-16, UTF-32, binary and legacy strings", :gc_stress_safe do
      samples = {
        invalid_utf8: (+"ok \xFF\xFE bad").force_encoding(Encoding::UTF_8),
        utf16le: "héllo wörld".encode(Encoding::UTF_16LE),
        utf16be: "日本".encode(Encoding::UTF_16BE),
        odd_utf16: (+"\x00a\x00").force_encoding(Encoding::UTF_16LE),
        utf32: "∑".encode(Encoding::UTF_32LE),
        binary: (+"\x00\x01\xFF\x80").b,
        empty_binary: "".b,
        usascii: "plain".encode(Encoding::US_ASCII),
        sjis: "テスト".encode(Encoding::Shift_JIS),
        dummy_utf7: (+"+AGEAYgBj-").force_encoding(Encoding::UTF_7),
        nul: "a\0b",
        subclass: RobustnessStringSubclass.new("sub")
      }
      payload = { task_id: 1 }.merge(samples)
      payload["\xFF".b] = "binary key"
      payload["ключ".encode(Encoding::UTF_16LE)] = "utf-16 key"
      expect(handle("task.started", payload)).to be(true)
      got = stored("task_1")
      samples.each do |name, value|
        expect([name, got[name].class, got[name].encoding, got[name].bytes])
          .to eq([name, String, value.encoding, value.bytes])
      end
      expect(got[:invalid_utf8].valid_encoding?).to be(false)
      expect(got.keys.last(2).map { |k| [k.encoding, k.bytes] })
        .to eq([[Encoding::BINARY, [0xFF]], [Encoding::UTF_16LE, "ключ".encode(Encoding::UTF_16LE).bytes]])
    end

    it "keeps a 20 MB String exactly", timeout: 120 do
      big = ("0123456789abcdef" * (20 * 1024 * 1024 / 16)).b
      big[-1] = "\xFF".b
      expect(handle("task.started", { task_id: 1, big: big })).to be(true)
      got = stored("task_1")[:big]
      expect([got.bytesize, got.encoding, got == big]).to eq([20 * 1024 * 1024, Encoding::BINARY, true])
    end
  end

  describe "odd keys", :gc_stress_safe do
    it "keeps nil, Array, Hash, Float, Integer, true and Symbol keys, and stores other objects by to_s, in order" do
      obj = Object.new
      payload = {
        nil => 1, [1, [2]] => 2, { a: { b: 1 } } => 3, 1.5 => 4, obj => 5, Float::NAN => 6,
        true => 7, (2**70) => 8, :sym => 9, "str" => 10, -0.0 => 11, Rational(1, 3) => 12
      }
      expect(handle("order.processed", payload)).to be(true)
      got = stored
      expect(got.keys.size).to eq(12)
      expect(got.keys.values_at(0, 1, 2, 3, 4, 6, 7, 8, 9, 11))
        .to eq([nil, [1, [2]], { a: { b: 1 } }, 1.5, obj.to_s, true, 2**70, :sym, "str", "1/3"])
      expect(got.keys[5]).to be_a(Float).and(be_nan)
      expect(1.0 / got.keys[10]).to eq(-Float::INFINITY)
      expect(got.values).to eq((1..12).to_a)
    end
  end

  describe "numbers", :gc_stress_safe do
    it "keeps Integers of any size" do
      values = [2**10_000, -(2**10_000), 2**64, 2**63, -(2**63), 2**62, -(2**62) - 1, (2**62) - 1, 0]
      expect(handle("task.started", { task_id: 1, values: values })).to be(true)
      got = stored("task_1")[:values]
      expect(got).to eq(values)
      expect(got.map(&:class).uniq).to eq([Integer])
    end

    it "names a trace after a huge Integer id" do
      expect(handle("task.started", { task_id: 2**100 })).to be(true)
      expect(exported_traces.keys).to eq(["task_#{2**100}"])
    end

    it "keeps NaN, Infinity, -Infinity, -0.0 and extreme Floats" do
      floats = [Float::NAN, Float::INFINITY, -Float::INFINITY, -0.0, Float::MAX, Float::MIN, 5e-324]
      expect(handle("task.started", { task_id: 1, floats: floats })).to be(true)
      got = stored("task_1")[:floats]
      expect(got.map(&:class).uniq).to eq([Float])
      expect(got[0]).to be_nan
      expect(got[1..]).to eq(floats[1..])
      expect(1.0 / got[3]).to eq(-Float::INFINITY)
    end
  end

  describe "other objects", :gc_stress_safe do
    it "stores Time, Date, DateTime and TimeWithZone by iso8601" do
      time = Time.utc(2024, 1, 2, 3, 4, 5)
      payload = {
        task_id: 1,
        utc: time,
        offset: Time.new(2024, 1, 2, 3, 4, 5, "+09:00"),
        date: Date.new(2024, 1, 2),
        datetime: DateTime.new(2024, 1, 2, 3, 4, 5),
        zoned: time.in_time_zone("Tokyo")
      }
      expect(handle("task.started", payload)).to be(true)
      expect(stored("task_1")).to eq(
        task_id: 1, utc: "2024-01-02T03:04:05Z", offset: "2024-01-02T03:04:05+09:00",
        date: "2024-01-02", datetime: "2024-01-02T03:04:05+00:00", zoned: "2024-01-02T12:04:05+09:00"
      )
    end

    it "stores BigDecimal, Rational, Complex, Range, Proc, Class, Set, IO, Struct and more by to_s" do
      closed = File.open(__FILE__)
      closed.close
      lam = -> { 1 }
      values = {
        bigdecimal: BigDecimal("1.5"), rational: Rational(1, 3), complex: Complex(1, 2),
        range: (1..3), endless: (1..), proc: lam, method: 1.method(:+), klass: String, mod: Comparable,
        set: Set[1, 2], io: $stderr, closed_file: closed, struct: RobustnessPoint.new(1, 2),
        regexp: /a+/i, exception: RuntimeError.new("boom"), encoding: Encoding::UTF_8,
        mutex: Mutex.new, thread: Thread.current
      }
      expect(handle("task.started", { task_id: 1 }.merge(values))).to be(true)
      got = stored("task_1")
      expect(got.except(:task_id).transform_values(&:class).values.uniq).to eq([String])
      expect(got.except(:task_id)).to eq(values.transform_values(&:to_s))
      expect(got.slice(:rational, :complex, :range, :endless, :klass, :mod, :set, :struct, :regexp, :exception))
        .to eq(rational: "1/3", complex: "1+2i", range: "1..3", endless: "1..", klass: "String",
               mod: "Comparable", set: "#<Set: {1, 2}>", struct: "#<struct RobustnessPoint x=1, y=2>",
               regexp: "(?i-mx:a+)", exception: "boom")
      expect(got[:proc]).to start_with("#<Proc:0x")
    end
  end

  describe "unusual Hashes", :gc_stress_safe do
    it "takes frozen payloads, deeply frozen too" do
      payload = { task_id: 1, list: [1, "a".freeze].freeze, h: { x: 1 }.freeze }.freeze
      expect(handle("task.started", payload)).to be(true)
      expect(handle("task.completed", { task_id: 1 }.freeze)).to be(true)
      expect(stored("task_1")).to eq(payload)
      expect(exported_traces["task_1"][:status]).to eq("success")
    end

    it "asks a plain Hash's default proc for the trace id, like payload[:task_id] does" do
      payload = Hash.new { |_, k| k == :task_id ? 99 : nil }
      payload[:x] = 1
      expect(handle("task.started", payload)).to be(true)
      expect(exported_traces.keys).to eq(["task_99"])
      got = stored("task_99")
      expect([got, got.default_proc]).to eq([{ x: 1 }, nil])
    end

    it "refuses a trace event whose default proc raises, but stores it as a generic event" do
      payload = Hash.new { |_, k| raise KeyError, "no #{k}" }
      payload[:x] = 1
      expect(handle("task.started", payload)).to be(false)
      expect(handle("frozen.default.proc.started", Hash.new { |h, k| h[k] = 1 }.freeze)).to be(false)
      expect(exported_traces).to eq({})
      expect(handle("something.happened", payload)).to be(true)
      expect(stored).to eq(x: 1)
    end

    it "finds the trace id of a HashWithIndifferentAccess with String keys and stores a plain Hash" do
      payload = ActiveSupport::HashWithIndifferentAccess.new("task_id" => 7, "nested" => { "a" => 1 })
      expect(handle("task.started", payload)).to be(true)
      expect(handle("step.before_handle", ActiveSupport::HashWithIndifferentAccess.new(task_id: 7))).to be(true)
      expect(handle("task.completed", ActiveSupport::HashWithIndifferentAccess.new("task_id" => "7"))).to be(true)
      trace = exported_traces.fetch("task_7")
      expect(trace[:payload]).to eq("task_id" => 7, "nested" => { "a" => 1 })
      expect([trace[:payload].class, trace[:payload]["nested"].class]).to eq([Hash, Hash])
      expect([trace[:spans].size, trace[:status]]).to eq([1, "success"])
    end

    it "takes Hash subclasses and compare_by_identity Hashes, and refuses one whose [] raises" do
      subclass = Class.new(Hash)
      sub = subclass.new
      sub[:task_id] = 1
      sub[:v] = 2
      expect(handle("task.started", sub)).to be(true)
      expect(stored("task_1")).to eq(task_id: 1, v: 2)
      expect(stored("task_1").class).to eq(Hash)
      expect(handle("task.started", { task_id: 2 }.compare_by_identity)).to be(true)
      broken = Class.new(Hash) { def [](_key) = raise("broken []") }.new.merge!(task_id: 3)
      expect(handle("task.started", broken)).to be(false)
      expect(exported_traces.keys).to eq(%w[task_1 task_2])
    end

    it "refuses payloads that are not Hashes, storing nothing" do
      hash_like = Object.new
      def hash_like.to_hash = { task_id: 1 }
      [nil, [], [[:task_id, 1]], "task_id", 1, :task_id, hash_like, RobustnessPoint.new(1, 2)].each do |payload|
        expect(backend.handle_event("task.started", payload)).to be(false)
        calls[0] += 1
      end
      expect(exported_traces).to eq({})
    end
  end

  describe "hostile event names" do
    it "refuses nil, Integer and other non-String names", :gc_stress_safe do
      [nil, 42, 1.5, ["task.started"], Object.new, BasicObject.new].each do |name|
        expect(handle(name, { task_id: 1 })).to be(false)
      end
      expect(exported_traces).to eq({})
    end

    it "stores an empty name as a generic event", :gc_stress_safe do
      expect(handle("", { x: 1 })).to be(true)
      trace = exported_traces.values.first
      expect(trace).to include(event_name: "", type: "generic", payload: { x: 1 })
    end

    it "keeps a 1 MB name whole" do
      name = "#{'n' * (1024 * 1024)}.started"
      expect(handle(name, { task_id: 1 })).to be(true)
      expect(handle("#{'n' * (1024 * 1024)}.completed", { task_id: 1 })).to be(true)
      trace = exported_traces.fetch("task_1")
      expect([trace[:event_name] == name, trace[:event_name].bytesize, trace[:status]])
        .to eq([true, name.bytesize, "success"])
    end

    it "refuses names with invalid UTF-8 or an encoding no pattern can match, and takes binary ones", :gc_stress_safe do
      expect(handle((+"task\xFF.started").force_encoding(Encoding::UTF_8), { task_id: 1 })).to be(false)
      expect(handle("task.started".encode(Encoding::UTF_16LE), { task_id: 1 })).to be(false)
      expect(handle("task.started".encode(Encoding::UTF_32BE), { task_id: 1 })).to be(false)
      expect(exported_traces).to eq({})
      binary = (+"task\xFF.started").b
      expect(handle(binary, { task_id: 2 })).to be(true)
      stored_name = exported_traces.fetch("task_2")[:event_name]
      expect([stored_name.encoding, stored_name.bytes]).to eq([Encoding::BINARY, binary.bytes])
    end

    it "stores Symbol and String-subclass names as plain Strings", :gc_stress_safe do
      expect(handle(:"task.started", { task_id: 1 })).to be(true)
      expect(handle(RobustnessStringSubclass.new("task.completed"), { task_id: 1 })).to be(true)
      trace = exported_traces.fetch("task_1")
      expect([trace[:event_name], trace[:event_name].class, trace[:status]]).to eq(["task.started", String, "success"])
    end
  end

  it "keeps the stored copy apart from later changes to the caller's objects", :gc_stress_safe do
    payload = { task_id: 1, list: [1, 2], text: +"before" }
    handle("task.started", payload)
    payload[:list] << 3
    payload[:text] << " after"
    payload[:new] = true
    expect(stored("task_1")).to eq(task_id: 1, list: [1, 2], text: "before")
    exported = exported_traces
    exported["task_1"][:payload][:list] << 99
    expect(stored("task_1")[:list]).to eq([1, 2])
  end
end
