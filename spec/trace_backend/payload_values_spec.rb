# frozen_string_literal: true

require "spec_helper"
require "date"
require "active_support/hash_with_indifferent_access"

# Contract: "Payload values". The payload is copied when the event arrives.
RSpec.describe "TraceBackend payload values" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }

  # Stores `value` as payload[:v] of a generic event and returns what export gives back.
  def round_trip(value)
    backend.reset!
    expect(backend.handle_event("workflow.value", v: value)).to be(true)
    backend.export[:traces].values.first[:payload][:v]
  end

  describe "values that come back equal, with the same classes" do
    {
      "nil" => nil, "true" => true, "false" => false,
      "0" => 0, "a negative Fixnum" => -42, "the largest Fixnum" => (2**62) - 1,
      "the smallest Fixnum" => -(2**62), "an Integer at 2**63" => 2**63,
      "a large negative Integer" => -(2**100), "a huge Integer" => 7**500,
      "a Float" => 1.5, "a tiny Float" => 5.0e-324, "-0.0" => -0.0,
      "Infinity" => Float::INFINITY, "-Infinity" => -Float::INFINITY,
      "a String" => "hello", "an empty String" => "", "a UTF-8 String" => "héllo ✓",
      "a String with NUL" => "a\0b",
      "a Symbol" => :status, "a non-ASCII Symbol" => :"état", "an odd Symbol" => :"with space",
      "an Array" => [1, "two", :three, nil, [4.0]], "an empty Array" => [],
      "a Hash" => { a: 1, "b" => 2, 3 => [:c], nil => nil, [1] => { x: true }, 1.5 => -1 },
      "an empty Hash" => {}
    }.each do |label, value|
      it "keeps #{label}", :gc_stress_safe do
        back = round_trip(value)
        expect(back).to eql(value)
        expect(back.class).to eq(value.class)
      end
    end

    it "keeps NaN", :gc_stress_safe do
      back = round_trip(Float::NAN)
      expect(back).to be_a(Float)
      expect(back).to be_nan
    end

    it "keeps -0.0's sign", :gc_stress_safe do
      expect(1 / round_trip(-0.0)).to eq(-Float::INFINITY)
    end

    it "keeps Hash key order and key types", :gc_stress_safe do
      value = { z: 1, "a" => 2, 10 => 3, m: 4, :"a" => 5, nil => 6 }
      back = round_trip(value)
      expect(back.keys).to eq([:z, "a", 10, :m, :a, nil])
      expect(back.keys.map(&:class)).to eq([Symbol, String, Integer, Symbol, Symbol, NilClass])
    end

    it "keeps the top-level payload's key order and key types", :gc_stress_safe do
      backend.handle_event("task.started", { "s" => 1, task_id: 2, 3 => 3 })
      expect(backend.export[:traces]["task_2"][:payload].to_a).to eq([["s", 1], [:task_id, 2], [3, 3]])
    end

    it "keeps String bytes and encodings, valid or not", :gc_stress_safe do
      [
        "\xff\xfe\x00".b,
        "caf\xE9".dup.force_encoding(Encoding::ISO_8859_1),
        "\xff broken".dup.force_encoding(Encoding::UTF_8),
        "日本".encode(Encoding::Shift_JIS),
        "wide".encode(Encoding::UTF_16LE),
        "ascii".dup.force_encoding(Encoding::US_ASCII)
      ].each do |s|
        back = round_trip(s)
        expect(back.encoding).to eq(s.encoding)
        expect(back.bytes).to eq(s.bytes)
        expect(back.valid_encoding?).to eq(s.valid_encoding?)
      end
    end

    it "gives back a Symbol whose bytes are not valid in its encoding, as a value and as a key", :gc_stress_safe do
      # Ruby makes one from such a String ("\xE9" read as US-ASCII under
      # LANG=C); looking it up by name raises EncodingError.
      odd = "\xE9".dup.force_encoding(Encoding::US_ASCII).to_sym
      expect(round_trip(odd)).to eql(odd)
      expect(round_trip({ odd => 1 })).to eql({ odd => 1 })
      expect(backend.handle_event("workflow.other", v: :ok)).to be(true)
      expect(backend.traces.size).to eq(2)
    end

    it "gives back unfrozen Strings that are not the caller's objects", :gc_stress_safe do
      s = +"mutable"
      back = round_trip(s)
      expect(back).not_to equal(s)
      expect(back).not_to be_frozen
      expect(round_trip("frozen".dup.freeze)).not_to be_frozen
    end

    it "returns a Hash subclass, an Array subclass and a String subclass as the base class", :gc_stress_safe do
      hash_class = Class.new(Hash)
      array_class = Class.new(Array)
      string_class = Class.new(String)
      hwia = ActiveSupport::HashWithIndifferentAccess.new(a: 1)
      expect(round_trip(hash_class[k: 1])).to be_an_instance_of(Hash).and eq(k: 1)
      expect(round_trip(array_class[1, 2])).to be_an_instance_of(Array).and eq([1, 2])
      expect(round_trip(string_class.new("s"))).to be_an_instance_of(String).and eq("s")
      expect(round_trip(hwia)).to be_an_instance_of(Hash).and eq("a" => 1)
    end

    it "drops a Hash's default proc and default value", :gc_stress_safe do
      back = round_trip(Hash.new { |h, k| h[k] = 1 }.merge(a: 1))
      expect(back.default_proc).to be_nil
      expect(back[:missing]).to be_nil
      expect(round_trip(Hash.new(5))[:missing]).to be_nil
    end
  end

  describe "other objects are stored as Strings" do
    around do |example|
      saved_zone = Time.zone
      example.run
    ensure
      Time.zone = saved_zone
    end

    it "uses iso8601 for Time, Date, DateTime and TimeWithZone", :gc_stress_safe do
      Time.zone = "UTC"
      expect(round_trip(Time.utc(2026, 11, 25, 11, 59, 7))).to eq("2026-11-25T11:59:07Z")
      expect(round_trip(Time.new(2026, 11, 25, 11, 59, 7, "+09:00"))).to eq("2026-11-25T11:59:07+09:00")
      expect(round_trip(Date.new(2026, 1, 2))).to eq("2026-01-02")
      expect(round_trip(DateTime.new(2026, 1, 2, 3, 4, 5))).to eq("2026-01-02T03:04:05+00:00")
      expect(round_trip(Time.zone.local(2026, 11, 25, 11, 59, 7))).to eq("2026-11-25T11:59:07Z")
      Time.zone = "Tokyo"
      expect(round_trip(Time.zone.local(2026, 11, 25, 20, 59, 7))).to eq("2026-11-25T20:59:07+09:00")
    end

    it "uses iso8601 for any object that responds to it", :gc_stress_safe do
      stamp = Object.new
      def stamp.iso8601 = "custom-iso"
      def stamp.to_s = "not used"
      expect(round_trip(stamp)).to eq("custom-iso")
    end

    it "uses to_s for everything else", :gc_stress_safe do
      expect(round_trip(1r / 3)).to eq("1/3")
      expect(round_trip(Complex(1, 2))).to eq("1+2i")
      expect(round_trip(1..3)).to eq("1..3")
      obj = Object.new
      expect(round_trip(obj)).to eq(obj.to_s)
      expect(round_trip(Struct.new(:a).new(1))).to eq("#<struct a=1>")
      expect(round_trip(String)).to eq("String")
      expect(round_trip(nil.method(:to_s))).to be_a(String)
    end

    it "stores #<ClassName> when to_s raises a StandardError", :gc_stress_safe do
      failing = Class.new { def to_s = raise(ArgumentError, "nope") }
      stub_const("FailingToS", failing)
      expect(round_trip(FailingToS.new)).to eq("#<FailingToS>")
    end

    it "stores #<ClassName> when iso8601 raises", :gc_stress_safe do
      stub_const("FailingIso", Class.new { def iso8601 = raise("nope") })
      expect(round_trip(FailingIso.new)).to eq("#<FailingIso>")
    end

    it "stores #<ClassName> when to_s does not return a String", :gc_stress_safe do
      stub_const("IntegerToS", Class.new { def to_s = 42 })
      stub_const("NilToS", Class.new { def to_s = nil })
      expect(round_trip(IntegerToS.new)).to eq("#<IntegerToS>")
      expect(round_trip(NilToS.new)).to eq("#<NilToS>")
    end

    it "stores #<ClassName> when respond_to? raises", :gc_stress_safe do
      stub_const("BadRespond", Class.new { def respond_to?(*) = raise("nope") })
      expect(round_trip(BadRespond.new)).to eq("#<BadRespond>")
    end

    it "stores #<ClassName> for a BasicObject, without calling it", :gc_stress_safe do
      expect(round_trip(BasicObject.new)).to eq("#<BasicObject>")
      stub_const("MyBlank", Class.new(BasicObject) { def method_missing(*) = ::Kernel.raise("called") })
      expect(round_trip(MyBlank.new)).to eq("#<MyBlank>")
    end

    it "uses to_s's String subclass result as a plain String", :gc_stress_safe do
      string_class = Class.new(String)
      obj = Object.new
      obj.define_singleton_method(:to_s) { string_class.new("sub") }
      back = round_trip(obj)
      expect(back).to be_an_instance_of(String).and eq("sub")
    end

    it "keeps converting the rest of the payload after a failing object", :gc_stress_safe do
      failing = Class.new { def to_s = raise("nope") }.new
      backend.handle_event("workflow.x", a: 1, b: failing, c: [failing, 2])
      payload = backend.export[:traces].values.first[:payload]
      expect(payload[:a]).to eq(1)
      expect(payload[:c][1]).to eq(2)
      expect(payload[:b]).to match(/\A#<.*>\z/)
    end

    it "lets an Interrupt or SystemExit raised by to_s propagate, storing nothing", :gc_stress_safe do
      interrupting = Class.new { def to_s = raise(Interrupt) }.new
      exiting = Class.new { def to_s = exit(3) }.new
      expect { backend.handle_event("task.started", task_id: 1, x: interrupting) }.to raise_error(Interrupt)
      expect { backend.handle_event("workflow.y", x: [exiting]) }.to raise_error(SystemExit)
      expect(backend.export[:traces]).to be_empty
      expect(backend.handle_event("task.started", task_id: 1)).to be(true)
    end

    it "counts a call that an exit from to_s cut short as rejected: every call in one counter", :gc_stress_safe do
      interrupting = Class.new { def to_s = raise(Interrupt) }.new
      throwing = Class.new { def to_s = throw(:out, :thrown) }.new
      killing = Class.new { def to_s = Thread.current.kill }.new
      expect(backend.handle_event("task.started", task_id: 1)).to be(true)
      expect { backend.handle_event("step.before_handle", task_id: 1, x: interrupting) }.to raise_error(Interrupt)
      expect(catch(:out) { backend.handle_event("task.completed", task_id: 1, x: [throwing]) }).to eq(:thrown)
      after_call = :not_reached
      Thread.new do
        backend.handle_event("workflow.x", x: killing)
        after_call = :reached
      end.join
      expect(after_call).to eq(:not_reached)
      expect(backend.stats).to include(events_handled: 1, rejected_events: 3)
      expect(backend.export[:traces]["task_1"]).to include(spans: [])
    end

    it "absorbs an error raised when to_s changes the Hash being copied", :gc_stress_safe do
      payload = { a: 1 }
      adder = Object.new
      adder.define_singleton_method(:to_s) do
        payload[:added] = true
        "adder"
      end
      payload[:obj] = adder
      expect(backend.handle_event("workflow.z", payload)).to be(true)
      expect(backend.export[:traces].values.first[:payload]).to eq(a: 1, obj: "#<Object>")
    end
  end

  describe "containers that contain themselves" do
    it "stores the repeated occurrence as [...]", :gc_stress_safe do
      a = [1]
      a << a
      expect(round_trip(a)).to eq([1, "[...]"])
      h = { k: 1 }
      h[:self] = h
      expect(round_trip(h)).to eq(k: 1, self: "[...]")
    end

    it "catches cycles through the payload itself and through keys", :gc_stress_safe do
      payload = { task_id: 1 }
      payload[:me] = [payload]
      backend.handle_event("task.started", payload)
      expect(backend.export[:traces]["task_1"][:payload]).to eq(task_id: 1, me: ["[...]"])
      key_cycle = []
      key_cycle << { key_cycle => 1 }
      expect(round_trip(key_cycle)).to eq([{ "[...]" => 1 }])
    end

    it "copies a container shared by siblings in full (only ancestors count)", :gc_stress_safe do
      shared = [1, 2]
      expect(round_trip([shared, shared, { x: shared }])).to eq([[1, 2], [1, 2], { x: [1, 2] }])
    end
  end

  describe "nesting deeper than 128 levels" do
    def nested_arrays(levels)
      root = []
      current = root
      (levels - 1).times do
        inner = []
        current << inner
        current = inner
      end
      root
    end

    def depth_of(value)
      depth = 0
      while value.is_a?(Array) || value.is_a?(Hash)
        depth += 1
        value = value.is_a?(Array) ? value.first : value.values.first
      end
      [depth, value]
    end

    it "keeps 128 levels (the payload is level 1) and stores [depth limit] below", :gc_stress_safe do
      backend.handle_event("workflow.deep", v: nested_arrays(127))
      payload = backend.export[:traces].values.first[:payload]
      expect(depth_of(payload)).to eq([128, nil])
      backend.reset!
      backend.handle_event("workflow.deep", v: nested_arrays(128))
      payload = backend.export[:traces].values.first[:payload]
      expect(depth_of(payload)).to eq([128, "[depth limit]"])
    end

    it "applies to Hashes too", :gc_stress_safe do
      deep = {}
      current = deep
      200.times do
        inner = {}
        current[:n] = inner
        current = inner
      end
      backend.handle_event("workflow.deep", deep)
      payload = backend.export[:traces].values.first[:payload]
      expect(depth_of(payload)).to eq([128, "[depth limit]"])
    end

    it "survives a million levels without exhausting the stack", timeout: 120 do
      expect(backend.handle_event("workflow.deep", v: nested_arrays(1_000_000))).to be(true)
      payload = backend.export[:traces].values.first[:payload]
      expect(depth_of(payload)).to eq([128, "[depth limit]"])
    end
  end

  describe "copied at arrival (better: the original kept references)" do
    it "is not changed by later mutation of the caller's objects", :gc_stress_safe do
      list = [1]
      text = +"abc"
      inner = { n: 1 }
      payload = { task_id: 1, list: list, text: text, inner: inner }
      backend.handle_event("task.started", payload)
      list << 2
      text << "def"
      inner[:n] = 2
      payload[:added] = true
      payload.delete(:task_id)
      expect(backend.export[:traces]["task_1"][:payload]).to eq(task_id: 1, list: [1], text: "abc", inner: { n: 1 })
    end

    it "differs from the original, which shows the caller's later mutation", :gc_stress_safe do
      reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new
      payload = { task_id: 1, list: [1] }
      reference.handle_event("task.started", payload)
      backend.handle_event("task.started", payload)
      payload[:list] << 2
      expect(reference.export[:traces]["task_1"][:payload][:list]).to eq([1, 2])
      expect(backend.export[:traces]["task_1"][:payload][:list]).to eq([1])
    end

    it "does not keep the caller's objects alive (the original did)" do
      tracked = Class.new
      reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new
      # Made on another thread, so no stale reference stays on this stack.
      Thread.new do
        100.times do
          backend.handle_event("workflow.x", obj: tracked.new, list: [tracked.new])
          reference.handle_event("workflow.x", obj: tracked.new)
        end
      end.join
      3.times { GC.start(full_mark: true, immediate_sweep: true) }
      expect(backend.export[:traces].size).to eq(100)
      # The reference still holds its 100; the native copies hold none (a few
      # may survive conservative stack scanning).
      expect(ObjectSpace.each_object(tracked).count).to be_between(100, 110)
      expect(reference.traces.size).to eq(100)
    end
  end
end
