# frozen_string_literal: true

require "spec_helper"
require "active_support/hash_with_indifferent_access"

# Contract: "handle_event(event_name, payload = {}) → true or false", rules 1–11
# (rules 7 and 10, time and durations, are in time_spec.rb; logging of
# internal failures is in failure_handling_spec.rb).
RSpec.describe "TraceBackend#handle_event" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }

  def traces
    backend.export[:traces]
  end

  def kind_of_event(name)
    backend.reset!
    backend.handle_event("zz.started", task_id: "probe")
    backend.handle_event(name, task_id: "probe")
    probe = traces["task_probe"]
    return :start if probe[:event_name] == name && probe[:spans].empty? && traces.size == 1
    return :finish if probe.key?(:end_time)
    return :span if probe[:spans].any?
    return :generic if traces.size == 2 && traces.values.last[:type] == "generic"

    :unknown
  end

  describe "rule 1: the payload must be a Hash" do
    [nil, [], [[:task_id, 1]], "task_id=1", 42, 1.5, :task_id, Object.new, Struct.new(:task_id).new(1)]
      .each do |payload|
      it "returns false and records nothing for #{payload.inspect}", :gc_stress_safe do
        expect(backend.handle_event("task.started", payload)).to be(false)
        expect(traces).to be_empty
        expect(backend.stats).to include(rejected_events: 1, events_handled: 0)
      end
    end

    it "takes Hash subclasses as Hashes", :gc_stress_safe do
      subclass = Class.new(Hash)
      payload = subclass.new
      payload[:task_id] = 7
      expect(backend.handle_event("task.started", payload)).to be(true)
      expect(traces.keys).to eq(["task_7"])
    end

    it "takes an empty Hash and the default payload", :gc_stress_safe do
      expect(backend.handle_event("task.started", {})).to be(true)
      expect(backend.handle_event("workflow.noted")).to be(true)
      expect(traces.size).to eq(2)
    end
  end

  describe "rule 2: the event name is a String or a Symbol" do
    it "stores a Symbol name as a String (better)", :gc_stress_safe do
      expect(backend.handle_event(:"task.started", task_id: 1)).to be(true)
      expect(traces["task_1"][:event_name]).to eq("task.started")
      expect(traces["task_1"][:event_name]).to be_an_instance_of(String)
    end

    it "finishes a trace fully with a Symbol finish event (the original failed halfway)", :gc_stress_safe do
      backend.handle_event(:"task.started", task_id: 1)
      expect(backend.handle_event(:"task.failed", task_id: 1)).to be(true)
      expect(traces["task_1"]).to include(status: "error", end_time: kind_of(String), duration: kind_of(Float))
    end

    it "routes a Symbol by its name", :gc_stress_safe do
      backend.handle_event(:"task.started", task_id: 1)
      backend.handle_event(:"step.before_handle", task_id: 1)
      backend.handle_event(:"workflow.noted", task_id: 1)
      expect(traces["task_1"][:spans].map { |s| s[:event_name] }).to eq(["step.before_handle"])
      expect(traces.values.last).to include(event_name: "workflow.noted", type: "generic")
    end

    [nil, 42, 1.5, ["task.started"], { name: "task.started" }, Object.new, true].each do |name|
      it "refuses #{name.inspect} with false and records nothing (better)", :gc_stress_safe do
        expect(backend.handle_event(name, task_id: 1)).to be(false)
        expect(traces).to be_empty
        expect(backend.stats[:rejected_events]).to eq(1)
      end
    end

    it "takes String subclasses and stores the name as a plain String", :gc_stress_safe do
      name_class = Class.new(String)
      expect(backend.handle_event(name_class.new("task.started"), task_id: 1)).to be(true)
      expect(traces["task_1"][:event_name]).to be_an_instance_of(String)
      expect(traces["task_1"][:event_name]).to eq("task.started")
    end

    it "keeps a frozen name usable and stores an unfrozen copy", :gc_stress_safe do
      name = "task.started".dup.freeze
      backend.handle_event(name, task_id: 1)
      stored = traces["task_1"][:event_name]
      expect(stored).to eq(name)
      expect(stored).not_to equal(name)
    end

    describe "names a regexp cannot match (the original's match raised there)" do
      {
        "broken UTF-8 bytes" => "task\xff.started".dup.force_encoding(Encoding::UTF_8),
        "a lone UTF-8 continuation byte" => "\x80".dup.force_encoding(Encoding::UTF_8),
        "UTF-16LE" => "task.started".encode(Encoding::UTF_16LE),
        "UTF-16 with BOM" => "task.started".encode(Encoding::UTF_16),
        "UTF-32BE" => "workflow.x".encode(Encoding::UTF_32BE),
        "broken Shift_JIS" => "task.started\x81".dup.force_encoding(Encoding::Shift_JIS)
      }.each do |label, name|
        it "refuses #{label} with false", :gc_stress_safe do
          expect(backend.handle_event(name, task_id: 1)).to be(false)
          expect(backend.handle_event(name.to_sym, task_id: 1)).to be(false) if name.valid_encoding?
          expect(traces).to be_empty
        end

        it "agrees with the original, which also returns false for #{label}", :gc_stress_safe do
          reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new
          expect(reference.handle_event(name, task_id: 1)).to be(false)
        end
      end

      it "takes valid names in other ASCII-compatible encodings, keeping bytes and encoding", :gc_stress_safe do
        names = [
          "task.started".encode(Encoding::EUC_JP),
          "t\xE9.started".dup.force_encoding(Encoding::ISO_8859_1),
          "bin\xff.started".b
        ]
        names.each_with_index do |name, i|
          expect(backend.handle_event(name, task_id: i)).to be(true)
          stored = traces["task_#{i}"][:event_name]
          expect(stored.encoding).to eq(name.encoding)
          expect(stored.bytes).to eq(name.bytes)
        end
      end
    end
  end

  describe "rule 3: the kind comes from the name, first match wins" do
    {
      "task.started" => :start,
      "step.started" => :start,
      ".started" => :start,
      "step.before_handle.started" => :start,
      "task.completed" => :finish,
      "task.failed" => :finish,
      "step.before_handle.completed" => :finish,
      "step.after_handle.failed" => :finish,
      "step.before_handle" => :span,
      "step.after_handle" => :span,
      "task.after_transition.x" => :span,
      "x.before_" => :span,
      "task.completed.extra" => :generic,
      "task.started.extra" => :generic,
      "started" => :generic,
      "task_started" => :generic,
      "task.Started" => :generic,
      "before_handle" => :generic,
      "step._before_x" => :generic,
      "workflow.viable_steps_discovered" => :generic,
      "" => :generic,
      # Ruby's `$` matches before a newline, as in the original's /\.started$/.
      "task.started\nx" => :start,
      "task.failed\n" => :finish,
      "x\ntask.completed" => :finish,
      "task.startedX\n" => :generic
    }.each do |name, kind|
      it "treats #{name.inspect} as #{kind}", :gc_stress_safe do
        expect(kind_of_event(name)).to eq(kind)
      end

      it "routes #{name.inspect} as the original does", :gc_stress_safe do
        reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new
        reference.handle_event("zz.started", task_id: "probe")
        reference.handle_event(name, task_id: "probe")
        probe = reference.traces["task_probe"]
        expected = if probe[:event_name] == name then :start
                   elsif probe.key?(:end_time) then :finish
                   elsif probe[:spans].any? then :span
                   else :generic
                   end
        expect(kind_of_event(name)).to eq(expected)
      end
    end
  end

  describe "rule 4: the trace key comes from the payload" do
    {
      { task_id: 1 } => "task_1",
      { task_id: 0 } => "task_0",
      { task_id: -3 } => "task_-3",
      { task_id: "abc" } => "task_abc",
      { task_id: "" } => "task_",
      { task_id: :sym } => "task_sym",
      { task_id: 1.5 } => "task_1.5",
      { task_id: 2**70 } => "task_1180591620717411303424",
      { task_id: [1, 2] } => "task_[1, 2]",
      { task_id: true } => "task_true",
      { workflow_step_id: 9 } => "step_9",
      { operation: "sync" } => "operation_sync",
      { task_id: 1, workflow_step_id: 2, operation: "op" } => "task_1",
      { workflow_step_id: 2, operation: "op" } => "step_2",
      { task_id: nil, workflow_step_id: 2 } => "step_2",
      { task_id: false, workflow_step_id: false, operation: "op" } => "operation_op",
      { operation: "op", workflow_step_id: 2, task_id: 1 } => "task_1"
    }.each do |payload, key|
      it "keys #{payload.inspect} as #{key.inspect}", :gc_stress_safe do
        expect(backend.handle_event("task.started", payload)).to be(true)
        expect(traces.keys).to eq([key])
      end
    end

    it "refuses an id the original cannot interpolate (a non-empty String not ASCII-compatible), as it does" do
      reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new
      utf16 = "42".encode("UTF-16LE")
      [{ task_id: utf16 }, { operation: utf16.to_sym }, { task_id: "".encode("UTF-16LE") }, { task_id: "42".encode("Shift_JIS") }]
        .each do |payload|
          expect(backend.handle_event("task.started", payload)).to eq(reference.handle_event("task.started", payload))
        end
      expect(traces.keys).to eq(reference.traces.keys)
      expect(traces.keys).to eq(%w[task_ task_42])
      expect(backend.stats[:rejected_events]).to eq(2)
    end

    it "gives a fresh trace_ key when no field is truthy", :gc_stress_safe do
      [{}, { task_id: nil }, { task_id: false, workflow_step_id: nil, operation: false }, { "task_id" => 1 }]
        .each { |payload| backend.handle_event("task.started", payload) }
      expect(traces.keys.size).to eq(4)
      expect(traces.keys).to all(match(/\Atrace_\d+\.\d+\z/))
    end

    it "looks up Symbol keys only in a plain Hash", :gc_stress_safe do
      backend.handle_event("task.started", "task_id" => 5, "workflow_step_id" => 6, operation: "x")
      expect(traces.keys).to eq(["operation_x"])
    end

    it "asks ActiveSupport::HashWithIndifferentAccess through [] (String keys work)", :gc_stress_safe do
      payload = ActiveSupport::HashWithIndifferentAccess.new("task_id" => 5, "detail" => "x")
      expect(backend.handle_event("task.started", payload)).to be(true)
      expect(traces.keys).to eq(["task_5"])
      stored = traces["task_5"][:payload]
      expect(stored).to be_an_instance_of(Hash)
      expect(stored).to eq("task_id" => 5, "detail" => "x")
    end

    it "finishes and spans a HashWithIndifferentAccess-keyed trace", :gc_stress_safe do
      hwia = ->(h) { ActiveSupport::HashWithIndifferentAccess.new(h) }
      backend.handle_event("task.started", hwia.call("workflow_step_id" => 3))
      backend.handle_event("step.before_handle", hwia.call(workflow_step_id: 3))
      backend.handle_event("task.completed", hwia.call("workflow_step_id" => "3"))
      expect(traces.keys).to eq(["step_3"])
      expect(traces["step_3"]).to include(status: "success")
      expect(traces["step_3"][:spans].size).to eq(1)
    end

    it "asks any Hash subclass that defines its own []", :gc_stress_safe do
      custom = Class.new(Hash) do
        def [](key)
          key == :workflow_step_id ? "from-[]" : super
        end
      end
      expect(backend.handle_event("task.started", custom.new)).to be(true)
      expect(traces.keys).to eq(["step_from-[]"])
    end

    it "asks a plain Hash's singleton [] like the original's payload[...] call", :gc_stress_safe do
      payload = { task_id: 1 }
      def payload.[](key)
        key == :task_id ? "singleton" : super
      end
      backend.handle_event("task.started", payload)
      expect(traces.keys).to eq(["task_singleton"])
    end

    describe "Hash defaults" do
      it "uses a default proc's answer", :gc_stress_safe do
        payload = Hash.new { |_h, key| key == :workflow_step_id ? 42 : nil }
        backend.handle_event("task.started", payload)
        expect(traces.keys).to eq(["step_42"])
        expect(traces["step_42"][:payload]).to eq({})
      end

      it "stores what a default proc stored into the payload", :gc_stress_safe do
        payload = Hash.new { |h, key| h[key] = (key == :task_id ? 5 : nil) }
        backend.handle_event("task.started", payload)
        expect(traces.keys).to eq(["task_5"])
        expect(traces["task_5"][:payload]).to eq(task_id: 5)
      end

      it "uses a default value", :gc_stress_safe do
        backend.handle_event("task.started", Hash.new(:dflt))
        expect(traces.keys).to eq(["task_dflt"])
      end

      it "treats a false default as absent", :gc_stress_safe do
        backend.handle_event("task.started", Hash.new(false))
        expect(traces.keys).to all(match(/\Atrace_/))
      end

      it "returns false (and stores nothing) when a default proc raises", :gc_stress_safe do
        payload = Hash.new { raise "no such key" }
        expect(backend.handle_event("task.started", payload)).to be(false)
        expect(traces).to be_empty
      end

      it "answers compare_by_identity Hashes", :gc_stress_safe do
        payload = {}.compare_by_identity
        payload[:task_id] = 11
        backend.handle_event("task.started", payload)
        expect(traces.keys).to eq(["task_11"])
      end
    end

    describe "#{'#{v}'} is Ruby's to_s" do
      it "uses the object's to_s", :gc_stress_safe do
        id = Object.new
        def id.to_s = "custom-id"
        backend.handle_event("task.started", task_id: id)
        expect(traces.keys).to eq(["task_custom-id"])
      end

      it "falls back to the default description when to_s does not return a String", :gc_stress_safe do
        id = Object.new
        def id.to_s = 42
        backend.handle_event("task.started", task_id: id)
        expect(traces.keys.first).to match(/\Atask_#<Object:0x\h+>\z/)
        expect(traces.keys.first).to eq("task_#{id}")
      end

      it "returns false when to_s raises a StandardError", :gc_stress_safe do
        id = Object.new
        def id.to_s = raise(ArgumentError, "bad id")
        expect(backend.handle_event("task.started", task_id: id)).to be(false)
        expect(traces).to be_empty
      end

      it "lets an Interrupt raised by to_s propagate", :gc_stress_safe do
        id = Object.new
        def id.to_s = raise(Interrupt)
        expect { backend.handle_event("task.started", task_id: id) }.to raise_error(Interrupt)
        expect(traces).to be_empty
        expect(backend.handle_event("task.started", task_id: 1)).to be(true)
      end

      it "keeps a non-ASCII id's encoding in the key", :gc_stress_safe do
        backend.handle_event("task.started", task_id: "caf\xE9".dup.force_encoding(Encoding::ISO_8859_1))
        key = traces.keys.first
        expect(key.encoding).to eq(Encoding::ISO_8859_1)
        expect(key).to eq("task_caf\xE9".dup.force_encoding(Encoding::ISO_8859_1))
        expect(key).to eq("task_#{"caf\xE9".dup.force_encoding(Encoding::ISO_8859_1)}")
      end
    end
  end

  describe "rule 5: start" do
    it "stores start_time, event_name, payload and spans", :gc_stress_safe do
      backend.handle_event("task.started", task_id: 1, name: "x")
      expect(traces["task_1"].keys).to eq(%i[start_time event_name payload spans])
      expect(traces["task_1"]).to include(event_name: "task.started", payload: { task_id: 1, name: "x" }, spans: [])
    end

    it "replaces an earlier trace with the key, keeping its place in the order", :gc_stress_safe do
      backend.handle_event("task.started", task_id: 1, run: 1)
      backend.handle_event("task.started", task_id: 2)
      backend.handle_event("step.before_handle", task_id: 1)
      backend.handle_event("task.completed", task_id: 1)
      backend.handle_event("task.started", task_id: 1, run: 2)
      expect(traces.keys).to eq(%w[task_1 task_2])
      expect(traces["task_1"]).to eq(
        start_time: traces["task_1"][:start_time], event_name: "task.started",
        payload: { task_id: 1, run: 2 }, spans: []
      )
    end

    it "gives each id-less start its own trace", :gc_stress_safe do
      3.times { backend.handle_event("task.started", {}) }
      expect(traces.keys.uniq.size).to eq(3)
    end
  end

  describe "rule 6: finish" do
    before { backend.handle_event("task.started", task_id: 1) }

    it "sets end_time, duration and status success", :gc_stress_safe do
      expect(backend.handle_event("task.completed", task_id: 1)).to be(true)
      expect(traces["task_1"].keys).to eq(%i[start_time event_name payload spans end_time duration status])
      expect(traces["task_1"]).to include(status: "success", event_name: "task.started")
    end

    it "sets status error when the name contains failed anywhere", :gc_stress_safe do
      backend.handle_event("task.failed", task_id: 1)
      expect(traces["task_1"][:status]).to eq("error")
      backend.handle_event("failed_retry.completed", task_id: 1)
      expect(traces["task_1"][:status]).to eq("error")
      backend.handle_event("step.unfailed.completed", task_id: 1)
      expect(traces["task_1"][:status]).to eq("error")
      backend.handle_event("step.Failed.completed", task_id: 1)
      expect(traces["task_1"][:status]).to eq("success")
    end

    it "lets a later finish overwrite all three" do
      TaskerTraceNative.configure { |c| c.timestamp_precision = 9 }
      backend.handle_event("task.failed", task_id: 1)
      first = traces["task_1"]
      sleep 0.01
      backend.handle_event("task.completed", task_id: 1)
      second = traces["task_1"]
      expect(second[:status]).to eq("success")
      expect(second[:end_time]).to be > first[:end_time]
      expect(second[:duration]).to be > first[:duration]
    end

    it "takes an orphan finish: true, nothing stored", :gc_stress_safe do
      expect(backend.handle_event("task.completed", task_id: 2)).to be(true)
      expect(backend.handle_event("task.failed", {})).to be(true)
      expect(traces.keys).to eq(["task_1"])
      expect(backend.stats).to include(orphaned_events: 2, events_handled: 3)
    end

    it "does not finish a trace under another field's key", :gc_stress_safe do
      backend.handle_event("task.completed", workflow_step_id: 1)
      expect(traces["task_1"]).not_to include(:end_time)
    end
  end

  describe "rule 8: span" do
    before { backend.handle_event("task.started", task_id: 1) }

    it "appends timestamp, event_name and payload in order", :gc_stress_safe do
      backend.handle_event("step.before_handle", task_id: 1, n: 1)
      backend.handle_event("step.after_handle", task_id: 1, n: 2)
      spans = traces["task_1"][:spans]
      expect(spans.map(&:keys)).to all(eq(%i[timestamp event_name payload]))
      expect(spans.map { |s| [s[:event_name], s[:payload]] }).to eq(
        [["step.before_handle", { task_id: 1, n: 1 }], ["step.after_handle", { task_id: 1, n: 2 }]]
      )
    end

    it "keeps spans on a finished trace and takes spans after the finish", :gc_stress_safe do
      backend.handle_event("task.completed", task_id: 1)
      backend.handle_event("step.after_x", task_id: 1)
      expect(traces["task_1"][:spans].size).to eq(1)
      expect(traces["task_1"][:status]).to eq("success")
    end

    it "takes an orphan span: true, nothing stored", :gc_stress_safe do
      expect(backend.handle_event("step.before_x", task_id: 2)).to be(true)
      expect(backend.handle_event("step.before_x", {})).to be(true)
      expect(traces["task_1"][:spans]).to be_empty
      expect(traces.size).to eq(1)
      expect(backend.stats[:orphaned_events]).to eq(2)
    end
  end

  describe "rule 9: generic" do
    it "stores timestamp, event_name, payload and type under a generic_ key", :gc_stress_safe do
      expect(backend.handle_event("workflow.viable_steps_discovered", task_id: 1, n: 2)).to be(true)
      key, record = traces.first
      expect(key).to match(/\Ageneric_\d+\.\d+\z/)
      expect(record.keys).to eq(%i[timestamp event_name payload type])
      expect(record).to include(event_name: "workflow.viable_steps_discovered", payload: { task_id: 1, n: 2 },
                                type: "generic")
    end

    it "does not consult the payload's ids or their [] for generic events", :gc_stress_safe do
      payload = Class.new(Hash) { def [](_key) = raise("not asked") }.new
      expect(backend.handle_event("workflow.noted", payload)).to be(true)
      expect(traces.size).to eq(1)
    end
  end

  describe "rule 11: true when taken, false when refused, never raises" do
    it "survives a catalogue of hostile payloads" do
      basic = BasicObject.new
      raising = Object.new
      def raising.to_s = raise("boom")
      def raising.respond_to?(*) = raise("boom")
      cyclic = { a: [] }
      cyclic[:a] << cyclic
      inputs = [
        { task_id: basic }, { workflow_step_id: raising }, { operation: cyclic }, cyclic,
        { task_id: Float::NAN }, { x: basic, y: raising, z: Float::INFINITY },
        Hash.new { |h, k| h[k] = h }, { nil => nil, [] => {}, raising => basic }
      ]
      %w[task.started step.before_x task.completed workflow.other].each do |name|
        inputs.each do |payload|
          expect { backend.handle_event(name, payload) }.not_to raise_error
        end
      end
      expect(backend.stats[:events_handled] + backend.stats[:rejected_events]).to eq(32)
    end
  end
end
