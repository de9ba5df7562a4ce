# frozen_string_literal: true

require "spec_helper"
require "open3"

# Contract rule 11: an internal failure returns false and, where Rails.logger
# exists, logs "TraceBackend error handling <event_name>: <message>". Native
# panics never cross into Ruby.
RSpec.describe "TraceBackend failure handling" do
  let(:backend) { Tasker::Telemetry::TraceBackend.instance }
  let(:logger) { double("logger") }

  # A stand-in for Rails with a logger, removed again after the example.
  def stand_in_rails(with_logger)
    rails = Module.new
    rails.define_singleton_method(:logger) { with_logger }
    stub_const("Rails", rails)
  end

  # The panic hook's Rust message goes to the process's stderr; keep spec
  # output clean by sending file descriptor 2 elsewhere meanwhile.
  def quietly
    saved = $stderr.dup
    $stderr.reopen(File::NULL)
    yield
  ensure
    $stderr.reopen(saved)
    saved.close
  end

  def failing_default_proc_payload(message)
    Hash.new { raise ArgumentError, message }
  end

  describe "logging to Rails.logger" do
    it "logs an internal failure at error level and returns false", :gc_stress_safe do
      stand_in_rails(logger)
      expect(logger).to receive(:error).with("TraceBackend error handling task.started: lookup failed").once
      expect(backend.handle_event("task.started", failing_default_proc_payload("lookup failed"))).to be(false)
      expect(backend.traces).to be_empty
      expect(backend.stats[:rejected_events]).to eq(1)
    end

    it "names a Symbol event by its name", :gc_stress_safe do
      stand_in_rails(logger)
      expect(logger).to receive(:error).with("TraceBackend error handling step.completed: nope")
      backend.handle_event(:"step.completed", failing_default_proc_payload("nope"))
    end

    it "logs a failing id's to_s", :gc_stress_safe do
      id = Object.new
      def id.to_s = raise("no to_s today")
      stand_in_rails(logger)
      expect(logger).to receive(:error).with("TraceBackend error handling task.failed: no to_s today")
      expect(backend.handle_event("task.failed", task_id: id)).to be(false)
    end

    it "does not log refused input (not a Hash, bad name): that is not a failure", :gc_stress_safe do
      stand_in_rails(logger)
      expect(logger).not_to receive(:error)
      expect(backend.handle_event("task.started", nil)).to be(false)
      expect(backend.handle_event(42, {})).to be(false)
      expect(backend.handle_event("\xff".dup.force_encoding("UTF-8"), {})).to be(false)
    end

    it "does not log taken events, orphans included", :gc_stress_safe do
      stand_in_rails(logger)
      expect(logger).not_to receive(:error)
      expect(backend.handle_event("task.completed", task_id: 404)).to be(true)
    end

    it "returns false quietly without Rails, with a nil logger, or without a logger method", :gc_stress_safe do
      hide_const("Rails") if defined?(::Rails)
      expect(backend.handle_event("task.started", failing_default_proc_payload("a"))).to be(false)
      stand_in_rails(nil)
      expect(backend.handle_event("task.started", failing_default_proc_payload("b"))).to be(false)
      stub_const("Rails", Module.new)
      expect(backend.handle_event("task.started", failing_default_proc_payload("c"))).to be(false)
    end

    it "still returns false when the logger itself raises", :gc_stress_safe do
      stand_in_rails(logger)
      allow(logger).to receive(:error).and_raise(IOError, "disk full")
      expect(backend.handle_event("task.started", failing_default_proc_payload("x"))).to be(false)
    end
  end

  # Only the logger's own StandardErrors are absorbed: what stops a thread or
  # unwinds the stack keeps its meaning while the failure is being logged.
  describe "interrupts while a failure is logged" do
    def logger_doing(&action)
      recorder = Object.new
      recorder.define_singleton_method(:error) { |_message| action.call }
      stand_in_rails(recorder)
    end

    it "lets a throw from the logger unwind through handle_event", :gc_stress_safe do
      logger_doing { throw :stop, :thrown }
      result = catch(:stop) { backend.handle_event("task.started", failing_default_proc_payload("x")) }
      expect(result).to eq(:thrown)
    end

    it "lets an Interrupt from the logger propagate", :gc_stress_safe do
      logger_doing { raise Interrupt }
      expect { backend.handle_event("task.started", failing_default_proc_payload("x")) }.to raise_error(Interrupt)
    end

    it "lets Thread#kill from the logger end the thread" do
      logger_doing { Thread.current.kill }
      after_call = :not_reached
      Thread.new do
        backend.handle_event("task.started", failing_default_proc_payload("x"))
        after_call = :reached
      end.join(5)
      expect(after_call).to eq(:not_reached)
    end

    it "lets a throw from the failing error's own #message propagate", :gc_stress_safe do
      failing = Class.new(StandardError) { def message = throw(:from_message, :thrown) }
      payload = Hash.new { raise failing }
      stand_in_rails(nil)
      expect(catch(:from_message) { backend.handle_event("task.started", payload) }).to eq(:thrown)
    end

    it "lets an Interrupt from a bad setting's #inspect propagate instead of an ArgumentError", :gc_stress_safe do
      value = Object.new
      def value.inspect = raise(Interrupt)
      expect { TaskerTraceNative.configure { |c| c.max_traces = value } }.to raise_error(Interrupt)
      expect { backend.export_otlp(drain: value) }.to raise_error(Interrupt)
    end

    it "still shows a bad setting whose #inspect raises a StandardError", :gc_stress_safe do
      value = Object.new
      def value.inspect = raise("no inspect")
      expect { TaskerTraceNative.configure { |c| c.max_traces = value } }
        .to raise_error(ArgumentError, /\Amax_traces must be a positive Integer or nil \(got #<Object:0x/)
    end
  end

  describe "the test hooks" do
    it "exist only in a process started with TASKER_TRACE_NATIVE_TEST_HOOKS=1" do
      lib = File.expand_path("../../lib", __dir__)
      script = 'require "tasker_trace_native"; ' \
               'p [defined?(TaskerTraceNative::TestHooks), TaskerTraceNative::Native.respond_to?(:noop)]'
      without, = Open3.capture2({ "TASKER_TRACE_NATIVE_TEST_HOOKS" => nil }, RbConfig.ruby, "-I", lib, "-e", script)
      with, = Open3.capture2({ "TASKER_TRACE_NATIVE_TEST_HOOKS" => "1" }, RbConfig.ruby, "-I", lib, "-e", script)
      expect(without.strip).to eq("[nil, false]")
      expect(with.strip).to eq('["constant", false]')
    end
  end

  describe "the hidden panic hook (TaskerTraceNative::TestHooks.panic_next_call!)" do
    before { backend.handle_event("task.started", task_id: 1) }

    it "makes the next handle_event return false, logged, with nothing stored", :gc_stress_safe do
      # A plain recording logger rather than a mock: this example also runs
      # under GC.stress, where mock setup alone takes minutes.
      messages = []
      recorder = Object.new
      recorder.define_singleton_method(:error) { |message| messages << message }
      stand_in_rails(recorder)
      TaskerTraceNative::TestHooks.panic_next_call!
      result = quietly { backend.handle_event("task.started", task_id: 2) }
      expect(result).to be(false)
      expect(messages.size).to eq(1)
      expect(messages.first).to match(/\ATraceBackend error handling task.started: .*injected test panic/)
      expect(backend.traces.keys).to eq(["task_1"])
      expect(backend.stats[:rejected_events]).to eq(1)
    end

    it "makes the next export raise TaskerTraceNative::Error", :gc_stress_safe do
      TaskerTraceNative::TestHooks.panic_next_call!
      quietly { expect { backend.export }.to raise_error(TaskerTraceNative::Error, /injected test panic/) }
      expect(backend.export[:traces].keys).to eq(["task_1"])
    end

    it "makes the next stats raise TaskerTraceNative::Error", :gc_stress_safe do
      TaskerTraceNative::TestHooks.panic_next_call!
      quietly { expect { backend.stats }.to raise_error(TaskerTraceNative::Error, /injected test panic/) }
      expect(backend.stats[:active_traces]).to eq(1)
    end

    it "fires once: only the next call fails", :gc_stress_safe do
      TaskerTraceNative::TestHooks.panic_next_call!
      quietly { expect(backend.handle_event("workflow.x", {})).to be(false) }
      expect(backend.handle_event("workflow.x", {})).to be(true)
      expect(backend.traces.size).to eq(2)
    end

    it "leaves the backend whole and usable afterwards", :gc_stress_safe do
      %i[traces reset! export stats].each do |name|
        TaskerTraceNative::TestHooks.panic_next_call!
        quietly { expect { backend.public_send(name) }.to raise_error(TaskerTraceNative::Error) }
      end
      backend.handle_event("step.before_x", task_id: 1)
      backend.handle_event("task.completed", task_id: 1)
      expect(backend.traces["task_1"]).to include(status: "success", spans: [hash_including(event_name: "step.before_x")])
    end

    it "raises an error that is a StandardError, so ordinary rescue catches it", :gc_stress_safe do
      expect(TaskerTraceNative::Error.ancestors).to include(StandardError)
    end
  end
end
