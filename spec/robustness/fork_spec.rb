# frozen_string_literal: true

require_relative "robustness_helper"

# A forked child has its own copy of the store and works on it; the parent's
# traces are untouched.
RSpec.describe "Robustness: fork" do
  def lifecycle(id, finish: "task.completed")
    backend.handle_event("task.started", { task_id: id, from: Process.pid })
    backend.handle_event("step.before_handle", { task_id: id })
    backend.handle_event(finish, { task_id: id }) if finish
  end

  it "gives the child its own copy to ingest and export, and leaves the parent's traces untouched",
     :gc_stress_safe, timeout: 60 do
    lifecycle(1)
    lifecycle(2, finish: nil)
    parent_traces = exported_traces
    parent_stats = backend.stats

    child = in_child(timeout: 40) do
      inherited = exported_traces
      inherited_stats = backend.stats
      lifecycle(3)
      backend.handle_event("task.failed", { task_id: 2 })  # finishes the inherited open trace
      backend.handle_event("task.started", { task_id: 1, restarted: true })
      { inherited: inherited, inherited_stats: inherited_stats, after: exported_traces, stats: backend.stats,
        pid: Process.pid }
    end

    expect(child[:inherited]).to eq(parent_traces)
    expect(child[:inherited_stats].except(:backend_uptime)).to eq(parent_stats.except(:backend_uptime))
    expect(child[:after].keys).to eq(%w[task_1 task_2 task_3])
    expect(child[:after]["task_1"][:payload]).to eq(task_id: 1, restarted: true)
    expect(child[:after]["task_2"][:status]).to eq("error")
    expect(child[:after]["task_3"][:payload]).to eq(task_id: 3, from: child[:pid])
    expect(child[:stats][:events_handled]).to eq(parent_stats[:events_handled] + 5)

    # The parent saw none of it.
    expect(exported_traces).to eq(parent_traces)
    expect(backend.stats.except(:backend_uptime)).to eq(parent_stats.except(:backend_uptime))
    lifecycle(4)
    expect(exported_traces.keys).to eq(%w[task_1 task_2 task_4])
  end

  it "gives each of several children its own copy", timeout: 60 do
    lifecycle(0)
    results = Array.new(3) do |n|
      in_child(timeout: 30) do
        lifecycle(100 + n)
        exported_traces.keys
      end
    end
    expect(results).to eq([%w[task_0 task_100], %w[task_0 task_101], %w[task_0 task_102]])
    expect(exported_traces.keys).to eq(["task_0"])
  end

  it "works in a child forked while other threads write and export", timeout: 120 do
    # A small store keeps each export short: an export holds the GVL while it
    # builds the Hash, and on Ruby 3.3 the forking thread then waits seconds
    # for its turn behind three exporting threads.
    TaskerTraceNative.configure { |c| c.max_traces = 1_000 }
    stop = false
    writers = Array.new(3) do |w|
      Thread.new do
        i = 0
        until stop
          lifecycle((w * 1_000_000) + i)
          backend.export if (i % 200).zero?
          i += 1
        end
        i
      end
    end
    begin
      children = Array.new(5) do |n|
        sleep 0.01
        in_child(timeout: 20) do
          # Only this thread survives the fork; the store must not be left locked.
          ok = [backend.handle_event("task.started", { task_id: "child#{n}" }),
                backend.handle_event("task.completed", { task_id: "child#{n}" })]
          [ok, exported_traces.fetch("task_child#{n}")[:status]]
        end
      end
    ensure
      stop = true
      counts = writers.map(&:value)
    end
    expect(children).to all(eq([[true, true], "success"]))
    expect(counts).to all(be > 0)
    expect(exported_traces.keys.grep(/child/)).to eq([])
  end

  # A child forked while another thread holds a native lock without the GVL
  # (export_otlp taking its snapshot, push_otlp draining and restoring) must
  # not inherit that lock held: every native lock is held over fork by a
  # pthread_atfork handler and released in both processes.
  it "never hangs a child forked while other threads export, push and write", timeout: 300 do
    TaskerTraceNative.configure { |c| c.max_traces = 100_000 }
    2_000.times { |i| lifecycle(i) }
    before = exported_traces
    stop = false
    workers = [
      -> { backend.export_otlp(include_open: true) },
      # A closed port: each push drains the finished traces under the store
      # lock, fails at once and puts them back under the lock again.
      -> { backend.push_otlp(endpoint: "http://127.0.0.1:9", timeout: 0.05) },
      -> { backend.export },
      -> { 50.times { |i| backend.handle_event("task.started", { task_id: "writer_#{i}" }) } }
    ].map do |work|
      Thread.new do
        n = 0
        until stop
          work.call
          n += 1
        end
        n
      end
    end
    outcomes = begin
      Array.new(200) do |n|
        in_child(timeout: 20) do
          # A child forked mid-push has the drained traces in no store (the
          # pushing thread is not in it): only the locks are checked here.
          [backend.handle_event("task.started", { task_id: "child#{n}" }),
           backend.handle_event("task.completed", { task_id: "child#{n}" }),
           backend.stats[:events_handled].positive?]
        end
      end
    ensure
      stop = true
      counts = workers.map(&:value)
    end
    expect(outcomes).to all(eq([true, true, true]))
    expect(counts).to all(be > 0)
    after = exported_traces
    expect(after.slice(*before.keys)).to eq(before)
    expect(after.keys.grep(/child/)).to eq([])
  end
end
