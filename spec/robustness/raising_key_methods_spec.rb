# frozen_string_literal: true

require_relative "robustness_helper"

# Building a Hash with an Array or Hash key calls the key's #hash (and #eql?
# when hashes collide). When an application's redefinition of those raises,
# the export raises that error cleanly: the exception never jumps over Rust
# frames, so everything the export copied is freed and the store is intact.
RSpec.describe "Robustness: payload keys whose #hash or #eql? raise" do
  def with_redefined(klass, name, body)
    klass.alias_method(:"__saved_#{name}", name)
    klass.define_method(name, &body)
    yield
  ensure
    klass.alias_method(name, :"__saved_#{name}")
    klass.remove_method(:"__saved_#{name}")
  end

  def store_traces_with_array_keys(count, size)
    count.times do |i|
      backend.handle_event("task.started", { task_id: i, blob: "x" * size, [i, :k] => "array key", { h: i } => 1 })
    end
  end

  it "raises the key's error from export and traces, and loses nothing" do
    store_traces_with_array_keys(3, 10)
    before = exported_traces
    with_redefined(Array, :hash, -> { raise "no hash for arrays" }) do
      expect { backend.export }.to raise_error(RuntimeError, "no hash for arrays")
      expect { backend.traces }.to raise_error(RuntimeError, "no hash for arrays")
    end
    expect(exported_traces).to eq(before)
  end

  it "raises the key's #eql? error when hashes collide, and loses nothing" do
    backend.handle_event("task.started", { task_id: 1, [1] => "a", [2] => "b" })
    before = exported_traces
    with_redefined(Array, :hash, -> { 42 }) do
      with_redefined(Array, :eql?, ->(_other) { raise ArgumentError, "no eql? today" }) do
        expect { backend.export }.to raise_error(ArgumentError, "no eql? today")
      end
    end
    expect(exported_traces).to eq(before)
  end

  it "frees the snapshot an interrupted export held" do
    store_traces_with_array_keys(200, 50_000)
    backend.reset!
    GC.start
    baseline = TaskerTraceNative::TestHooks.native_live_bytes
    store_traces_with_array_keys(200, 50_000)
    with_redefined(Array, :hash, -> { raise "no hash for arrays" }) do
      3.times { expect { backend.export }.to raise_error(RuntimeError) }
    end
    backend.reset!
    GC.start
    # 10 MB of payloads were stored; all of it must be gone again.
    expect(TaskerTraceNative::TestHooks.native_live_bytes - baseline).to be < 1_000_000
  end
end
