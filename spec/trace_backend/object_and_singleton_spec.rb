# frozen_string_literal: true

require "spec_helper"
require "socket"

# Contract: "Object and singleton".
RSpec.describe "TraceBackend object and singleton" do
  let(:backend_class) { Tasker::Telemetry::TraceBackend }
  let(:backend) { backend_class.instance }

  it "returns one shared object from .instance", :gc_stress_safe do
    expect(backend_class.instance).to equal(backend_class.instance)
  end

  it "returns the same object from every thread" do
    ids = Array.new(4) { Thread.new { backend_class.instance.object_id } }.map(&:value)
    expect(ids.uniq).to eq([backend.object_id])
  end

  it "keeps .new private (NoMethodError)", :gc_stress_safe do
    expect { backend_class.new }.to raise_error(NoMethodError, /private method `new'/)
  end

  it "refuses dup and clone with TypeError", :gc_stress_safe do
    expect { backend.dup }.to raise_error(TypeError)
    expect { backend.clone }.to raise_error(TypeError)
  end

  it "has the public methods of the original", :gc_stress_safe do
    %i[handle_event export reset! stats traces created_at].each do |name|
      expect(backend.public_methods).to include(name)
      expect(backend).to respond_to(name)
    end
  end

  it "serves those methods natively, prepended before the class", :gc_stress_safe do
    %i[handle_event export reset! stats traces created_at].each do |name|
      expect(backend.method(name).owner).to eq(TaskerTraceNative::BackendMethods)
    end
    expect(backend_class.ancestors.first).to eq(TaskerTraceNative::BackendMethods)
  end

  it "takes handle_event(event_name, payload = {})", :gc_stress_safe do
    expect(backend.handle_event("workflow.tick")).to be(true)
    expect(backend.export[:traces].values.first[:payload]).to eq({})
    expect { backend.handle_event }.to raise_error(ArgumentError, /given 0, expected 1\.\.2/)
    expect { backend.handle_event("a", {}, {}) }.to raise_error(ArgumentError, /given 3, expected 1\.\.2/)
  end

  describe "created_at" do
    around do |example|
      saved_zone = Time.zone
      example.run
    ensure
      Time.zone = saved_zone
    end

    it "is a Time when Time.zone is not set", :gc_stress_safe do
      Time.zone = nil
      expect(backend.created_at).to be_an_instance_of(Time)
    end

    it "is an ActiveSupport::TimeWithZone in Time.zone when it is set", :gc_stress_safe do
      Time.zone = "Tokyo"
      created = backend.created_at
      expect(created).to be_an_instance_of(ActiveSupport::TimeWithZone)
      expect(created.time_zone.name).to eq("Tokyo")
    end

    it "is the moment the backend was created: fixed, in the past, and not reset by reset!", :gc_stress_safe do
      first = backend.created_at
      backend.handle_event("task.started", task_id: 1)
      backend.reset!
      expect(backend.created_at).to eq(first)
      expect(first).to be <= Time.now
      # The extension is loaded by spec_helper, before any example runs.
      expect(first).to be > Time.now - (60 * 60 * 24)
    end

    it "matches the created_at in export metadata", :gc_stress_safe do
      expect(backend.export[:metadata][:created_at]).to eq(backend.created_at.getutc.iso8601)
    end
  end

  it "uses the host name as instance_id", :gc_stress_safe do
    expect(backend.export[:metadata][:instance_id]).to eq(Socket.gethostname)
    expect(backend.stats[:instance_id]).to eq(Socket.gethostname)
  end
end
