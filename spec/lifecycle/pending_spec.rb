# frozen_string_literal: true

require "spec_helper"
require_relative "../robustness/robustness_helper"

# On the plain path (no OpenTelemetry context to answer for) step events wait
# in Lifecycle::PENDING and are read together: before any other event, when
# 64 wait, before anything reads or changes the tracer, and before a fork.
# What the tracer makes of them is what it made of them read one by one.
RSpec.describe "Lifecycle tracer: step events read together" do
  include RobustnessHelper

  let(:pending) { TaskerTraceNative::Lifecycle::PENDING }

  # How many events wait (the Array's layout is the extension's).
  def waiting = TaskerTraceNative::TestHooks.waiting_events(pending)

  # The plain path, as in a process that never used connected traces: an
  # earlier example may have left the context path engaged (releasing), and
  # subscribing or configuring would keep it so. Put back after.
  around do |example|
    listener = TaskerTraceNative::ContextListener
    engaged = listener.engaged?
    listener.instance_variable_set(:@engaged, false)
    # Subscribed as LifecycleHelper's examples are (step.before_handle
    # too), whichever example runs first.
    TaskerTraceNative.configure { |c| c.lifecycle_workflow_events = true }
    publisher
    listener.refresh!
    example.run
  ensure
    listener.instance_variable_set(:@engaged, engaged)
    listener.refresh!
  end

  # Opens task's run and reads it (a run's task.start_requested waits too;
  # each example starts with nothing waiting).
  def start(task)
    publish("task.start_requested", task_id: task, task_name: "t", to_state: "in_progress")
    expect(waiting).to eq(1)
    TaskerTraceNative::Native.read_waiting_events
  end

  def step(name, task, step, **extra)
    publish(name, task_id: task, step_id: step, step_name: "s#{step}", **extra)
  end

  # An attempt as the engine publishes it: three copies of its first and
  # last events, one before_handle.
  def attempt(task, step)
    3.times { step("step.execution_requested", task, step) }
    step("step.before_handle", task, step)
    3.times { step("step.completed", task, step) }
  end

  it "expires no run on the clock past the oldest event still waiting, which may keep it alive" do
    hooks = TaskerTraceNative::TestHooks
    configure_lifecycle(lifecycle_ttl: 60)
    start(1)
    start(2)
    step("step.execution_requested", 1, 10) # waits: it keeps task 1 alive
    expect(waiting).to be_positive
    # The exporter's thread cannot read them first: an export 100 s from now
    # expires only what was idle for the TTL as of the oldest waiting event:
    # nothing (task 2's expiry waits until the events are read).
    expect(hooks.expire_lifecycle_runs_in(100)).to eq(0)
    expect(waiting).to be_positive
    TaskerTraceNative::Native.read_waiting_events
    expect(waiting).to eq(0)
    expect(hooks.expire_lifecycle_runs_in(30)).to eq(0)
    expect(hooks.expire_lifecycle_runs_in(100)).to eq(2)
    expect(stats).to include(expired_runs: 2)
  end

  it "leaves step events waiting and reads them, in order, before the next other event" do
    expect(TaskerTraceNative::ContextListener.engaged?).to be(false)
    start(1)
    expect(waiting).to eq(0)
    attempt(1, 10)
    expect(waiting).to eq(7)
    publish("task.completed", task_id: 1)
    expect(waiting).to eq(0)
    run = only_run
    expect(run[:end]).to eq("completed")
    expect(attempts(run).map { |a| [attrs(a)["step_id"], a[:status][:code]] }).to eq([[10, "OK"]])
    expect(event_names(attempts(run).first)).to eq(["step.before_handle"])
    expect(stats).to include(events_recorded: 9, events_repeated: 4)
  end

  it "leaves a run's task.start_requested waiting with its step events, read first, at its own time" do
    publish("task.start_requested", task_id: 1, task_name: "t", to_state: "in_progress")
    sleep 0.05
    attempt(1, 10)
    expect(waiting).to eq(8)
    expect(TaskerTraceNative::Native.read_waiting_events).to be(true)
    expect(waiting).to eq(0)
    run = only_run(include_open: true)
    expect(attempts(run).map { |a| attrs(a)["step_id"] }).to eq([10])
    # The root starts when the event was published, 50 ms before its step
    # (on the native clock, within its calibration error).
    expect(attempts(run).first[:start_time] - root(run)[:start_time]).to be >= 0.95 * 50_000_000
  end

  it "reads at once every event that may end a run, and its copies: the run is ready for export" do
    ends = [["task.completed", {}], ["task.failed", { error_message: "boom" }],
            ["task.initialize_requested", {}]]
    ends.each_with_index do |(name, extra), i|
      task = 20 + i
      publish("task.start_requested", task_id: task, task_name: "t", to_state: "in_progress")
      attempt(task, 100 + i)
      publish(name, task_id: task, **extra)
      expect(waiting).to eq(0), "#{name} read what waited, and itself"
      publish(name, task_id: task, completed_steps: 1, **extra) # the finalizer's copy
      expect(waiting).to eq(0), "#{name}'s copy is read at once"
    end
    runs = TaskerTraceNative.lifecycle_runs.sort_by { |r| r[:task_id] }
    expect(runs.map { |r| [r[:task_id], r[:end]] }).to eq([[20, "completed"], [21, "failed"], [22, "pending"]])
    expect(runs.map { |r| attrs(root(r))["completed_steps"] }).to eq([1, 1, 1])
  end

  it "keeps the Array's length across reads, and nothing the read events held" do
    start(1)
    attempt(1, 10)
    payload = { task_id: 1, step_id: 11, step_name: "s11" }
    publish("step.execution_requested", **payload)
    expect(waiting).to eq(8)
    length = pending.size
    publish("task.completed", task_id: 1)
    expect(waiting).to eq(0)
    # The buffer stays (Ruby would shrink a cleared Array's, and regrow it
    # every run); every slot the events took is nil again.
    expect(pending.size).to eq(length)
    expect(pending.drop(1)).to all(be_nil)
    # The next run's events go where the last ones were.
    start(2)
    attempt(2, 20)
    expect([waiting, pending.size]).to eq([7, length])
    publish("task.completed", task_id: 2)
    expect(runs.map { |r| attempts(r).size }).to eq([2, 1])
  end

  it "stamps each event when it was published, not when it was read" do
    start(1)
    step("step.execution_requested", 1, 10)
    sleep 0.05
    step("step.completed", 1, 10)
    sleep 0.3
    expect(waiting).to eq(2)
    publish("task.completed", task_id: 1)
    run = only_run
    span = attempts(run).first
    # The sleeps, on the native clock (within its calibration error).
    expect(span[:duration]).to be >= 0.05 * 0.95
    expect(root(run)[:end_time] - span[:end_time]).to be >= 0.95 * 300_000_000
  end

  it "reads them when 64 wait" do
    start(1)
    63.times { |i| step("step.execution_requested", 1, 100 + i) }
    expect(waiting).to eq(63)
    step("step.execution_requested", 1, 163)
    expect(waiting).to eq(0)
    expect(attempts(only_run(include_open: true)).size).to eq(64)
  end

  it "reads them before anything reads or changes the tracer" do
    start(1)
    readers = {
      lifecycle_stats: -> { TaskerTraceNative.lifecycle_stats },
      lifecycle_runs: -> { TaskerTraceNative.lifecycle_runs(include_open: true) },
      export_otlp: -> { Tasker::Telemetry::TraceBackend.instance.export_otlp(include_open: true) },
      configure: -> { TaskerTraceNative.configure { |c| c.lifecycle_ttl = 3600 } },
      filter_parameters: -> { TaskerTraceNative.lifecycle_filter_parameters = [:card] },
      exporter_stats: -> { TaskerTraceNative.exporter_stats },
      record_lifecycle_event: -> { TaskerTraceNative.record_lifecycle_event("task.before_transition", task_id: 1) }
    }
    readers.each_with_index do |(reader, read), i|
      step("step.execution_requested", 1, 10 + i)
      expect(waiting).to eq(1)
      read.call
      expect(waiting).to eq(0), "#{reader} read what waited"
    end
    expect(attempts(only_run(include_open: true)).map { |a| attrs(a)["step_id"] })
      .to eq((10...(10 + readers.size)).to_a)
  end

  it "keeps each event's thread: a copy published in another thread is not a repeat" do
    start(1)
    step("step.execution_requested", 1, 10)
    step("step.execution_requested", 1, 10)
    Thread.new { step("step.execution_requested", 1, 10) }.join
    expect(waiting).to eq(3)
    expect(stats).to include(events_repeated: 1, events_recorded: 4)
  end

  it "records every event once, in order, when reading runs Ruby code that publishes more" do
    start(1)
    inner = Object.new
    spec = self
    inner.define_singleton_method(:to_s) do
      # Published while the events before are being read.
      spec.publish("step.completed", task_id: 1, step_id: 10, step_name: "s10")
      spec.publish("task.completed", task_id: 1)
      "s10"
    end
    publish("step.execution_requested", task_id: 1, step_id: 10, step_name: inner)
    expect(waiting).to eq(1)
    expect(stats).to include(events_recorded: 4, events_refused: 0)
    expect(waiting).to eq(0)
    run = only_run
    expect(run[:end]).to eq("completed")
    span = attempts(run).first
    expect([attrs(span)["step_name"], span[:status][:code]]).to eq(%w[s10 OK])
    expect(stats).to include(events_orphaned: 0, events_late: 0)
  end

  it "keeps the order while a reader is held in Ruby code and another thread publishes 500 runs" do
    configure_lifecycle(lifecycle_attributes: %w[note], lifecycle_max_finished_runs: 1_000)
    gate = Queue.new
    held = Queue.new
    note = Object.new
    note.define_singleton_method(:to_s) do
      held << true
      gate.pop # the reader waits here, letting other threads run
      "note"
    end
    publish("task.start_requested", task_id: 1, task_name: "t", to_state: "in_progress", note: note)
    reader = Thread.new { publish("task.completed", task_id: 1) } # reads what waits: held in to_s
    held.pop
    writer = Thread.new do
      500.times do |i|
        task = 1_000 + i
        publish("task.start_requested", task_id: task, task_name: "t", to_state: "in_progress")
        step("step.execution_requested", task, 1)
        step("step.completed", task, 1)
        publish("task.completed", task_id: task)
      end
    end
    writer.join
    waited = waiting # the one being read, and all of the writer's behind it
    gate << true
    reader.join
    expect(waited).to eq(2_001)
    expect(runs.size).to eq(501)
    expect(runs.map { |r| r[:end] }.uniq).to eq(["completed"])
    expect(stats).to include(open_runs: 0, events_orphaned: 0, events_late: 0)
  end

  # A value whose to_s leaves by `how`: an exception that must propagate,
  # a throw, or a kill of the thread reading it.
  def exiting(how)
    value = Object.new
    case how
    when :interrupt then value.define_singleton_method(:to_s) { raise Interrupt }
    when :throw then value.define_singleton_method(:to_s) { throw :out, :thrown }
    when :kill then value.define_singleton_method(:to_s) { Thread.current.kill }
    end
    value
  end

  # The counters every event published lands in, exactly one of them.
  def counted
    stats.values_at(:events_recorded, :events_ignored, :events_orphaned, :events_late, :events_dropped,
                    :events_refused).sum
  end

  it "reads every waiting event past one an interrupt cut short, records the reader's own, then raises" do
    start(1)
    step("step.execution_requested", 1, 10, step_name: exiting(:interrupt))
    attempt(1, 11)
    expect(waiting).to eq(8)
    expect { publish("task.completed", task_id: 1) }.to raise_error(Interrupt)
    expect(waiting).to eq(0) # the ones after it were read
    expect(stats).to include(events_refused: 1, open_runs: 0)
    # Every event published landed in exactly one counter, task.completed too.
    expect(counted).to eq(1 + 8 + 1)
    run = only_run
    expect(run[:end]).to eq("completed")
    expect(attempts(run).map { |a| [attrs(a)["step_name"], a[:status][:code]] }).to eq([%w[s11 OK]])
  end

  it "resumes a throw from a waiting event only after the reader's own event, the first exit of several" do
    start(1)
    step("step.execution_requested", 1, 10, step_name: exiting(:throw))
    absorbed = Object.new
    absorbed.define_singleton_method(:to_s) { raise ArgumentError, "absorbed" }
    step("step.execution_requested", 1, 11, step_name: absorbed)
    step("step.execution_requested", 1, 12, step_name: exiting(:interrupt)) # after the first: not raised
    step("step.execution_requested", 1, 13, step_name: exiting(:throw))
    step("step.execution_requested", 1, 14)
    result = catch(:out) do
      publish("task.failed", task_id: 1, error_message: "boom")
      :not_thrown
    end
    expect(result).to eq(:thrown)
    expect(waiting).to eq(0)
    expect(stats).to include(events_refused: 3)
    expect(counted).to eq(1 + 5 + 1)
    run = only_run
    expect(run[:end]).to eq("failed")
    expect(attempts(run).map { |a| attrs(a)["step_id"] }).to eq([11, 14])
    expect(attrs(attempts(run).first)["step_name"]).to eq("#<Object>")
  end

  it "kills a thread whose reading met a kill only after its own event is recorded" do
    start(1)
    step("step.execution_requested", 1, 10, step_name: exiting(:kill))
    step("step.execution_requested", 1, 11)
    reached = :not_reached
    ensured = false
    Thread.new do
      TaskerTraceNative.record_lifecycle_event("task.completed", task_id: 1)
      reached = :reached
    ensure
      ensured = true
    end.join
    expect([reached, ensured]).to eq([:not_reached, true])
    expect(waiting).to eq(0)
    expect(counted).to eq(1 + 2 + 1)
    run = only_run
    expect(run[:end]).to eq("completed")
    expect(attempts(run).map { |a| attrs(a)["step_id"] }).to eq([11])
  end

  it "raises an interrupt from another thread's waiting event in the thread that reads it, its event kept" do
    Thread.new do
      start(1)
      step("step.execution_requested", 1, 10, step_name: exiting(:interrupt))
      step("step.execution_requested", 1, 11)
    end.join
    expect(waiting).to eq(2)
    expect do
      TaskerTraceNative.record_lifecycle_event("task.start_requested", task_id: 2, task_name: "t",
                                                                       to_state: "in_progress")
    end.to raise_error(Interrupt)
    expect(waiting).to eq(0)
    expect(runs(include_open: true).map { |r| r[:task_id] }).to contain_exactly(1, 2)
    expect(counted).to eq(1 + 2 + 1)
  end

  it "reads every waiting event before raising from a call that records nothing of its own" do
    start(1)
    step("step.execution_requested", 1, 10, step_name: exiting(:interrupt))
    step("step.execution_requested", 1, 11)
    expect { TaskerTraceNative.lifecycle_runs(include_open: true) }.to raise_error(Interrupt)
    expect(waiting).to eq(0)
    expect(attempts(only_run(include_open: true)).map { |a| attrs(a)["step_id"] }).to eq([11])
    expect(stats).to include(events_refused: 1, events_recorded: 2)
  end

  it "reads every waiting event when 64 wait and the first one's reading is interrupted" do
    start(1)
    step("step.execution_requested", 1, 100, step_name: exiting(:interrupt))
    62.times { |i| step("step.execution_requested", 1, 101 + i) }
    expect(waiting).to eq(63)
    expect { step("step.execution_requested", 1, 163) }.to raise_error(Interrupt)
    expect(waiting).to eq(0)
    expect(attempts(only_run(include_open: true)).size).to eq(63)
    expect(stats).to include(events_refused: 1)
  end

  it "reads what waits before a fork, so the child starts from the tracer as it was", timeout: 60 do
    start(1)
    step("step.execution_requested", 1, 10)
    expect(waiting).to eq(1)
    child = in_child(timeout: 40) do
      [TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING),
       TaskerTraceNative.lifecycle_runs(include_open: true).flat_map { |r| r[:spans].map { |s| s[:name] } }]
    end
    expect(child).to eq([0, %w[tasker.task.execution tasker.step.execution]])
    expect(waiting).to eq(0)
  end

  it "never reads in a child what its parent left waiting: the parent reads it", timeout: 60 do
    start(1)
    step("step.execution_requested", 1, 10)
    # As if the fork went around the hook.
    allow(TaskerTraceNative::Native).to receive(:read_waiting_events).and_return(true)
    child = in_child(timeout: 40) do
      waited = TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING)
      step("step.execution_requested", 1, 11)
      runs = TaskerTraceNative.lifecycle_runs(include_open: true)
      [waited, runs.flat_map { |r| r[:spans].drop(1).map { |s| s[:attributes]["tasker.step_id"] } }]
    end
    expect(child).to eq([1, [11]])
    expect(attempts(only_run(include_open: true)).map { |a| attrs(a)["step_id"] }).to eq([10])
  end
end
