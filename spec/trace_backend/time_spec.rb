# frozen_string_literal: true

require "spec_helper"

# Contract rules 7 (durations), 9 (generic keys) and 10 (timestamps).
RSpec.describe "TraceBackend time: timestamps, durations and generated keys" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }

  def configure_precision(digits)
    TaskerTraceNative.configure { |c| c.timestamp_precision = digits }
  end

  def all_timestamps
    backend.export[:traces].values.flat_map do |r|
      [r[:start_time], r[:end_time], r[:timestamp], *(r[:spans] || []).map { |s| s[:timestamp] }].compact
    end
  end

  def record_everything
    backend.handle_event("task.started", task_id: 1)
    backend.handle_event("step.before_handle", task_id: 1)
    backend.handle_event("task.completed", task_id: 1)
    backend.handle_event("workflow.noted", {})
  end

  describe "rule 10: timestamps" do
    around do |example|
      saved_zone = Time.zone
      example.run
    ensure
      Time.zone = saved_zone
    end

    it "are UTC ISO 8601 seconds by default, like Time.current.iso8601 in a UTC Rails app", :gc_stress_safe do
      Time.zone = "UTC"
      before = Time.current.iso8601
      record_everything
      after = Time.current.iso8601
      stamps = all_timestamps
      expect(stamps.size).to eq(4)
      expect(stamps).to all(match(/\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\z/))
      expect(stamps).to all(be_between(before, after))
      expect(stamps.map(&:encoding).uniq).to eq([Encoding::UTF_8])
    end

    it "stay UTC whatever Time.zone and TZ say", :gc_stress_safe do
      Time.zone = "Tokyo"
      record_everything
      expect(all_timestamps).to all(end_with("Z"))
      expect(backend.export[:metadata][:exported_at]).to end_with("Z")
    end

    it "are the reference backend's format exactly", :gc_stress_safe do
      Time.zone = "UTC"
      reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new
      reference.handle_event("task.started", task_id: 1)
      backend.handle_event("task.started", task_id: 1)
      ours = backend.traces["task_1"][:start_time]
      theirs = reference.traces["task_1"][:start_time]
      expect(ours.length).to eq(theirs.length)
      expect((Time.iso8601(ours) - Time.iso8601(theirs)).abs).to be <= 1
    end

    (0..9).each do |digits|
      it "have #{digits} fractional digits at timestamp_precision #{digits}", :gc_stress_safe do
        configure_precision(digits)
        record_everything
        fraction = digits.zero? ? "" : "\\.\\d{#{digits}}"
        pattern = /\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d#{fraction}Z\z/
        expect(all_timestamps).to all(match(pattern))
        expect(backend.export[:metadata][:exported_at]).to match(pattern)
        expect(backend.export[:metadata][:created_at]).to match(pattern)
      end
    end

    it "truncate like Ruby's Time#iso8601(n)", :gc_stress_safe do
      configure_precision(9)
      record_everything
      full = all_timestamps
      (0..8).each do |digits|
        configure_precision(digits)
        expected = full.map { |s| Time.iso8601(s).utc.iso8601(digits) }
        expect(all_timestamps).to eq(expected)
      end
    end

    it "are taken when the event arrives, in order" do
      configure_precision(9)
      backend.handle_event("task.started", task_id: 1)
      3.times do
        sleep 0.002
        backend.handle_event("step.after_x", task_id: 1)
      end
      stamps = all_timestamps
      expect(stamps).to eq(stamps.sort)
      expect(stamps.uniq.size).to eq(4)
    end
  end

  describe "rule 7: durations" do
    it "are Float seconds from start to finish, sub-second, rounded to 6 decimals" do
      clock = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
      t0 = clock.call
      backend.handle_event("task.started", task_id: 1)
      sleep 0.15
      backend.handle_event("task.completed", task_id: 1)
      elapsed = clock.call - t0
      duration = backend.traces["task_1"][:duration]
      expect(duration).to be_a(Float)
      # The native clock follows the monotonic clock within its calibration
      # error (well under 1%), not to the microsecond.
      expect(duration).to be_between(0.15 * 0.95, (elapsed * 1.05) + 0.001)
      expect(duration).to eq(duration.round(6))
      expect(duration).not_to eq(duration.round) # not whole seconds (better)
    end

    it "are tiny, not zero, for back-to-back events" do
      backend.handle_event("task.started", task_id: 1)
      backend.handle_event("task.completed", task_id: 1)
      duration = backend.traces["task_1"][:duration]
      expect(duration).to be >= 0.0
      expect(duration).to be < 1.0
      expect(duration).to eq(duration.round(6))
    end

    it "differ from the original's whole seconds" do
      saved_zone = Time.zone
      Time.zone = "UTC" # the original parses its timestamps back with Time.zone
      reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new
      [reference, backend].each { |b| b.handle_event("task.started", task_id: 1) }
      sleep 0.02
      [reference, backend].each { |b| b.handle_event("task.completed", task_id: 1) }
      theirs = reference.traces["task_1"][:duration]
      expect(theirs).to eq(theirs.round)
      expect(backend.traces["task_1"][:duration]).to be_between(0.02 * 0.95, 10.0)
    ensure
      Time.zone = saved_zone
    end

    it "measure from the latest start, to the latest finish" do
      backend.handle_event("task.started", task_id: 1)
      sleep 0.2
      backend.handle_event("task.started", task_id: 1)
      backend.handle_event("task.completed", task_id: 1)
      first = backend.traces["task_1"][:duration]
      expect(first).to be < 0.2
      sleep 0.05
      backend.handle_event("task.failed", task_id: 1)
      expect(backend.traces["task_1"][:duration]).to be >= first + (0.05 * 0.95)
    end

    it "do not depend on timestamp_precision" do
      configure_precision(0)
      backend.handle_event("task.started", task_id: 1)
      sleep 0.01
      backend.handle_event("task.completed", task_id: 1)
      at_zero = backend.traces["task_1"][:duration]
      configure_precision(9)
      expect(backend.traces["task_1"][:duration]).to eq(at_zero)
      expect(at_zero).to be > 0.0
    end
  end

  describe "rule 9: generated keys" do
    it "never collide within one clock tick (better: the original's Float keys did)" do
      10_000.times { backend.handle_event("workflow.tick", {}) }
      keys = backend.traces.keys
      expect(keys.size).to eq(10_000)
      expect(keys).to all(match(/\Ageneric_\d+\.\d{9}\z/))
      stamps = keys.map { |k| Rational(k.delete_prefix("generic_")) }
      expect(stamps.each_cons(2).all? { |a, b| b > a }).to be(true)
    end

    it "never collide across threads", timeout: 120 do
      threads = Array.new(4) { Thread.new { 2_500.times { backend.handle_event("workflow.tick", {}) } } }
      threads.each(&:join)
      expect(backend.traces.keys.uniq.size).to eq(10_000)
    end

    it "are unique for id-less starts too, and share the sequence with generic keys" do
      500.times do
        backend.handle_event("task.started", {})
        backend.handle_event("workflow.tick", {})
      end
      keys = backend.traces.keys
      expect(keys.uniq.size).to eq(1000)
      expect(keys.grep(/\Atrace_\d+\.\d{9}\z/).size).to eq(500)
      stamps = keys.map { |k| Rational(k.sub(/\A(trace|generic)_/, "")) }
      expect(stamps.each_cons(2).all? { |a, b| b > a }).to be(true)
    end

    it "are near the wall clock, in seconds since the epoch", :gc_stress_safe do
      before = Time.now.to_r
      backend.handle_event("workflow.tick", {})
      after = Time.now.to_r
      stamp = Rational(backend.traces.keys.first.delete_prefix("generic_"))
      expect(stamp).to be_between(before - 1, after + 1)
    end

    it "show the original's collisions in the reference backend under the same load", :gc_stress_safe do
      reference = TaskerTraceNative::Spec::ReferenceTraceBackend.new
      # Stub the reference's clock to one tick, as a fast burst of events sees it.
      tick = Time.at(1_795_607_947, 123_456, :usec).in_time_zone("UTC")
      allow(reference).to receive(:current_time).and_return(tick)
      3.times { reference.handle_event("workflow.tick", {}) }
      expect(reference.traces.size).to eq(1)
      expect(reference.generated_key_collisions).to eq(2)
    end
  end
end
