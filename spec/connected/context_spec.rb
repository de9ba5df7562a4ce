# frozen_string_literal: true

require "spec_helper"

# Connected traces against the OpenTelemetry API stand-in
# (spec/support/open_telemetry_stand_in.rb): the run's parent is the current
# span, each open span is the current span in the thread that published its
# opening event, and no context is ever left attached.
RSpec.describe "Connected traces (OpenTelemetry context)" do
  include LifecycleHelper

  include_context "with the OpenTelemetry API stand-in"

  def start(task, **extra)
    publish("task.start_requested", task_id: task, task_name: "t", to_state: "in_progress", **extra)
  end

  def open_step(task, step)
    publish("step.execution_requested", task_id: task, step_id: step, step_name: "s#{step}")
    publish("step.before_handle", task_id: task, step_id: step)
  end

  def close_step(task, step)
    publish("step.completed", task_id: task, step_id: step)
  end

  # The state machine's copy of a step's opening event published inside an
  # app's block (a transaction span) that raises: the API's detach takes the
  # step's context and leaves the app's.
  def open_step_in_raising_block(task, step, app)
    otel::Trace.with_span(app) do
      publish("step.execution_requested", task_id: task, step_id: step, step_name: "s#{step}")
      raise "rolled back"
    end
  rescue RuntimeError
    nil
  end

  def current_hex
    OpenTelemetryStandIn.current_span_hex
  end

  def stack
    OpenTelemetryStandIn.stack
  end

  def in_thread(&block)
    Thread.new(&block).value
  end

  # Where ContextDetachGuard is not prepended to the API's Context (it could
  # not be), the listener repairs what an app's detach did at its next
  # event instead: these run the same scenarios that way.
  def without_detach_guard
    publisher # subscribed first (subscribing prepends the guard)
    listener = TaskerTraceNative::ContextListener
    listener.instance_variable_set(:@guarded, false)
    TaskerTraceNative::Native.set_detach_guard(false)
    yield
  ensure
    listener.instance_variable_set(:@guarded, true)
    TaskerTraceNative::Native.set_detach_guard(true)
  end

  # The same thread's next job, after one that raised: its run (task 2) is
  # that job's child, its root current while it runs, and nothing is left
  # after; not in the trace of `remote` (the raising job's remote parent).
  def next_job_is_the_runs_parent(remote = nil)
    second = OpenTelemetryStandIn.app_span
    otel::Trace.with_span(second) do
      start(2)
      expect(current_hex).not_to eq(second.context.hex_span_id)
      publish("task.completed", task_id: 2)
      expect(current_hex).to eq(second.context.hex_span_id)
    end
    expect(stack).to be_empty
    run = runs(include_open: true).find { |r| r[:task_id] == 2 }
    expect(root(run)[:parent_span_id]).to eq(second.context.hex_span_id)
    expect(root(run)[:trace_id]).not_to eq(remote.context.hex_trace_id) if remote
  end

  # An app's block (a job's span) that raises after its run opened.
  def job_that_raises(job, task)
    otel::Trace.with_span(job) do
      start(task)
      raise "the job failed"
    end
  end

  it "makes the run the child of the current span, and each open span current while it runs" do
    job = OpenTelemetryStandIn.app_span
    seen = {}
    otel::Trace.with_span(job) do
      start(1)
      seen[:root] = current_hex
      publish("task.start_requested", task_id: 1, task_name: "t")   # the initializer's copy
      expect(stack.size).to eq(2), "the job's context and the root's, once"
      open_step(1, 10)
      seen[:step] = current_hex   # what an HTTP client span's parent would be
      close_step(1, 10)
      seen[:after_step] = current_hex
      publish("task.completed", task_id: 1)
      seen[:after_run] = current_hex
    end
    run = only_run
    expect(run[:trace_id]).to eq(job.context.hex_trace_id)
    expect(root(run)[:parent_span_id]).to eq(job.context.hex_span_id)
    expect(seen[:root]).to eq(root(run)[:span_id])
    expect(seen[:step]).to eq(attempts(run).first[:span_id])
    expect(seen[:after_step]).to eq(root(run)[:span_id])
    expect(seen[:after_run]).to eq(job.context.hex_span_id)
    expect(stack).to be_empty
    expect(otel.errors).to be_empty
  end

  it "opens a run whose payload's default proc raises, never reading the payload in Ruby" do
    raising = Hash.new { |_, key| raise "default proc asked for #{key.inspect}" }
    raising.merge!("task_id" => 1, "task_name" => "t", "to_state" => "in_progress")
    vivifying = Hash.new { |hash, key| hash[key] = [] }
    vivifying.merge!("task_id" => 2, "task_name" => "t", "to_state" => "in_progress")
    publisher # subscribed; the event goes to the listener as published, payload and all
    listen = ->(payload) { TaskerTraceNative::Lifecycle::LISTENER.call(StandInPublisher::Event.new("task.start_requested", payload)) }
    expect { listen.call(raising) }.not_to raise_error
    expect { listen.call(vivifying) }.not_to raise_error
    expect(vivifying.keys).to eq(%w[task_id task_name to_state]) # nothing added to the app's Hash
    expect(runs(include_open: true).map { |r| r[:task_id] }).to contain_exactly(1, 2)
    expect(stack.size).to eq(2) # each run's root current in turn
  end

  it "carries the run's root as the API's Span, answering for the attempt current in the asking thread" do
    start(1)
    open_step(1, 10)
    span = otel::Trace.current_span
    expect(span).to be_a(otel::Trace::Span)
    expect(span.recording?).to be(false)
    expect(span.instance_variable_get(:@context)).to be_nil, "no SpanContext made before it is asked for"
    context = span.context
    expect(context).to be_a(otel::Trace::SpanContext)
    expect(span.context).to equal(context)
    expect([context.valid?, context.trace_flags.sampled?, context.remote?]).to eq([true, true, false])
    # Asked in a thread no attempt of its run is current in: the root.
    elsewhere = in_thread { span.context.hex_span_id }
    close_step(1, 10)
    after = span.context
    publish("task.completed", task_id: 1)
    run = only_run
    expect(context.hex_trace_id).to eq(run[:trace_id])
    expect(context.hex_span_id).to eq(attempts(run).first[:span_id])
    expect([elsewhere, after.hex_span_id]).to eq([root(run)[:span_id]] * 2)
    expect(span.inspect).to include(after.hex_span_id, after.hex_trace_id)
  end

  it "answers with the root's or no span's ids, never raising, when the extension fails to say" do
    start(1)
    in_thread { open_step(1, 10) } # the thread's span is attached there
    thread_span = in_thread do
      open_step(1, 11)
      otel::Trace.current_span.tap { close_step(1, 11) }
    end
    open_step(1, 12)
    allow(TaskerTraceNative::Native).to receive(:current_attempt).and_raise(TaskerTraceNative::Error, "boom")
    expect(otel::Trace.current_span.context.hex_span_id).to eq(root(only_run(include_open: true))[:span_id])
    expect(thread_span.context.valid?).to be(false)
  end

  it "answers the extension's context questions for any argument, never raising" do
    native = TaskerTraceNative::Native
    start(1)
    open_step(1, 10) # current here, under run 1's root
    root_id = [root(only_run(include_open: true))[:span_id]].pack("H*")
    deep = [[[[[[[[[[["x"]]]]]]]]]]]
    odd = [nil, "", "x" * 10_000_000, 42, deep, { a: deep }, "\xff".b * 9, :sym]
    # Not a root's 8-byte span id: the attempt current here, whatever its run.
    answers = odd.map { |root| native.current_attempt(root)&.then { |a| a[1].unpack1("H*") } }
    expect(answers).to all(eq(attempts(only_run(include_open: true)).first[:span_id]))
    expect(native.current_attempt(root_id)).to be_frozen
    expect(native.current_attempt("\0".b * 8)).to be_nil # another run's root
    # Only true marks the thread; anything else unmarks it.
    expect(odd.map { |held| native.thread_span_held(held) }).to all(be(false))
    expect(native.thread_span_held(true)).to be(true)
    expect(native.thread_span_held(false)).to be(false)
    # Any truthy value says the detach guard is in place; nil, that it is not.
    expect(odd.map { |on| native.set_detach_guard(on) }).to eq([false] + [true] * (odd.size - 1))
    expect([native.set_detach_guard(false), native.set_detach_guard(true)]).to eq([false, true])
    expect(native.context_taken).to be(true)
    expect { native.context_taken(1) }.to raise_error(ArgumentError)
  end

  it "starts a new trace when no span is current, as without the API" do
    start(1)
    expect(current_hex).to eq(only_run(include_open: true)[:spans][0][:span_id])
    publish("task.completed", task_id: 1)
    expect(root(only_run)[:parent_span_id]).to be_nil
    expect(stack).to be_empty
  end

  it "makes each attempt current in the thread that runs it, through one context a thread" do
    start(1)
    root_id = current_hex
    seen = Array.new(3) do |i|
      Thread.new do
        2.times.map do |n|
          step = 10 + (i * 2) + n
          open_step(1, step)
          during = current_hex
          close_step(1, step)
          [during, current_hex, TaskerTraceNative::ContextListener.held, stack.size]
        end
      end
    end.map(&:value)
    publish("task.completed", task_id: 1)
    ids = attempts(only_run).to_h { |a| [attrs(a)["step_id"], a[:span_id]] }
    seen.each_with_index do |in_thread, i|
      in_thread.each_with_index do |(during, after, held, depth), n|
        expect(during).to eq(ids.fetch(10 + (i * 2) + n))
        # The thread's span stays, and answers nothing between attempts.
        expect([after, held, depth]).to eq(["0" * 16, 1, 1])
      end
    end
    expect(current_hex).to eq("0" * 16)
    expect(root(only_run)[:span_id]).to eq(root_id)
  end

  it "attaches nothing in a step thread its run's root was carried into, and a thread span under another run's" do
    start(1)
    carried = otel::Context.current # what the concurrent-ruby instrumentation hands a future
    start(2)
    other = otel::Context.current
    seen = [[1, carried], [2, carried], [2, other]].each_with_index.map do |(task, context), i|
      in_thread do
        otel::Context.with_current(context) do
          open_step(task, 10 + i)
          [current_hex, stack.size].tap { close_step(task, 10 + i) }
        end
      end
    end
    ids = runs(include_open: true).flat_map { |r| attempts(r) }.to_h { |a| [attrs(a)["step_id"], a[:span_id]] }
    # Run 1's root answers for its own step; under it, run 2's step needs
    # the thread's span; run 2's root answers for run 2's.
    expect(seen).to eq([[ids.fetch(10), 1], [ids.fetch(11), 2], [ids.fetch(12), 1]])
    expect(otel.errors).to be_empty
  end

  it "lets a step thread's events wait, and its span reads them before it answers" do
    waiting = -> { TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING) }
    start(1)
    seen = in_thread do
      open_step(1, 10) # the thread's first attempt: its span is attached
      close_step(1, 10)
      publish("step.execution_requested", task_id: 1, step_id: 11, step_name: "s11")
      publish("step.before_handle", task_id: 1, step_id: 11)
      before = waiting.call
      during = current_hex # what an HTTP client span's parent would be: what waits is read
      after = waiting.call
      close_step(1, 11)
      [before, during, after, waiting.call]
    end
    publish("task.completed", task_id: 1)
    ids = attempts(only_run).to_h { |a| [attrs(a)["step_id"], a[:span_id]] }
    expect(seen).to eq([4, ids.fetch(11), 0, 1]) # all after step 10's first event
    expect(waiting.call).to eq(0)
    expect(only_run[:end]).to eq("completed")
  end

  it "records the event that reads a step thread's waiting events before an interrupt they raise" do
    waiting = -> { TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING) }
    cut = Object.new
    cut.define_singleton_method(:to_s) { raise Interrupt }
    start(1)
    in_thread do
      open_step(1, 10) # the thread's first attempt: its span is attached
      close_step(1, 10)
      publish("step.execution_requested", task_id: 1, step_id: 11, step_name: cut)
      open_step(1, 12)
      close_step(1, 12)
    end
    expect(waiting.call).to eq(6) # all after step 10's first event
    expect { publish("task.completed", task_id: 1) }.to raise_error(Interrupt)
    expect(waiting.call).to eq(0)
    run = only_run
    expect(run[:end]).to eq("completed")
    expect(attempts(run).map { |a| attrs(a)["step_id"] }).to eq([10, 12])
    expect(stats).to include(events_recorded: 8, events_refused: 1, open_runs: 0)
  end

  it "attaches a thread's span again after an app's block took it while the thread's events waited" do
    start(1)
    seen = in_thread do
      begin
        otel::Trace.with_span(OpenTelemetryStandIn.app_span) do
          publish("step.execution_requested", task_id: 1, step_id: 10, step_name: "s10") # attaches
          publish("step.before_handle", task_id: 1, step_id: 10) # waits
          raise "rolled back" # the block's end takes the thread's span
        end
      rescue RuntimeError
        nil
      end
      taken = stack.size
      close_step(1, 10)
      open_step(1, 11)
      [taken, current_hex, stack.size].tap { close_step(1, 11) }
    end
    ids = attempts(only_run(include_open: true)).to_h { |a| [attrs(a)["step_id"], a[:span_id]] }
    expect(seen).to eq([0, ids.fetch(11), 1])
    expect(otel.errors).to be_empty
  end

  it "answers for each thread's attempt with many step threads, 24 of them at once" do
    start(1)
    count = 80 # more step threads than the extension keeps views of (64)
    first_done = Queue.new
    go = Array.new(count) { Queue.new }
    opened = Queue.new
    ask = Queue.new
    serial = Mutex.new
    threads = Array.new(count) do |i|
      Thread.new do
        open_step(1, 100 + i) # attaches the thread's span
        close_step(1, 100 + i)
        first_done << true
        go[i].pop
        second = lambda do
          open_step(1, 200 + i) # waits: the thread's span answers
          opened << true
          yield_now = ask.pop if i < 24 # all 24 opened before any asks
          during = current_hex
          close_step(1, 200 + i)
          [i, during, yield_now]
        end
        i < 24 ? second.call : serial.synchronize { second.call }
      end
    end
    count.times { first_done.pop }
    24.times { |i| go[i] << true }
    24.times { opened.pop }
    24.times { ask << true }
    seen = threads.first(24).map(&:value)
    (24...count).each { |i| go[i] << true }
    seen += threads.drop(24).map(&:value)
    (count - 24).times { opened.pop }
    publish("task.completed", task_id: 1)
    ids = attempts(only_run).to_h { |a| [attrs(a)["step_id"], a[:span_id]] }
    expect(seen.map { |i, during, _| [i, during] }).to eq(Array.new(count) { |i| [i, ids.fetch(200 + i)] })
    expect(otel.errors).to be_empty
  end

  it "goes to Ruby only for a run's own events and a thread's first attempt" do
    start(1)
    calls = []
    allow(TaskerTraceNative::ContextListener).to receive(:answer).and_wrap_original do |m, event, answer|
      calls << [event.id, answer]
      m.call(event, answer)
    end
    step = { task_id: 1, step_id: 10, step_name: "s10", attempt_number: 0, retry_limit: 3 }
    3.times { publish("step.execution_requested", step) }
    publish("step.before_handle", step)
    entered = current_hex
    publish("step.completed", step)
    2.times { publish("step.completed", step.merge(attempt_number: 1)) }
    publish("task.start_requested", task_id: 1, task_name: "t") # merges into the root: current already
    expect(TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING)).to eq(1)
    # Here the run's root answers for its attempts: nothing is attached
    # for them. Entering the current root again needs no check (no app's
    # block took its context): the copy waits to be read, as step events
    # do.
    expect(calls).to eq([])
    expect(entered).to eq(attempts(only_run(include_open: true)).first[:span_id])
    expect(current_hex).to eq(root(only_run(include_open: true))[:span_id])
    expect(TaskerTraceNative.lifecycle_stats[:events_repeated]).to eq(4)
    # In another thread, the first attempt asks for the thread's span, once.
    in_thread do
      [20, 21].each do |id|
        other = step.merge(step_id: id, step_name: "s#{id}")
        publish("step.execution_requested", other)
        publish("step.before_handle", other)
        publish("step.completed", other)
      end
    end
    expect(calls).to eq([["step.execution_requested", :thread_span]])
    # A run ended: minus its root's handle.
    publish("task.completed", task_id: 1)
    expect(calls.last).to match(["task.completed", be_a(Integer).and(be_negative)])
    expect([current_hex, TaskerTraceNative::ContextListener.held]).to eq(["0" * 16, 0])
  end

  it "makes an attempt that ended in another thread current nowhere" do
    start(1)
    step_thread = Queue.new
    results = Queue.new
    worker = Thread.new do
      while (job = step_thread.pop)
        job.call
        results << [current_hex, TaskerTraceNative::ContextListener.held]
      end
    end
    step_thread << -> { open_step(1, 10) }
    first = results.pop
    close_step(1, 10) # published here, not in the step's thread
    step_thread << -> {} # nothing published: the context is still there
    stale = results.pop
    step_thread << -> { publish("observability.step.backoff", task_id: 1, step_id: 11) }
    cleaned = results.pop
    step_thread.close
    worker.join
    attempt = attempts(only_run(include_open: true)).first[:span_id]
    expect(first).to eq([attempt, 1])
    expect(stale).to eq(["0" * 16, 1]) # the thread's span stays, and answers nothing
    expect(cleaned).to eq(["0" * 16, 1])
  end

  it "never leaves a context when an exception ends the job between open and close" do
    job = OpenTelemetryStandIn.app_span
    expect { job_that_raises(job, 1) }.to raise_error("the job failed")
    # The job's block took the run's context with its own: nothing is left,
    # and the API saw matched calls.
    expect(stack).to be_empty
    expect(otel.errors).to be_empty
    next_job_is_the_runs_parent
    expect(stats[:context_restores]).to eq(0)
  end

  it "takes out, without the guard, what a job left when it raised, at the thread's next event" do
    without_detach_guard do
      expect { job_that_raises(OpenTelemetryStandIn.app_span, 1) }.to raise_error("the job failed")
      # The API's detach took ours instead of the job's: the job's is left.
      expect(stack.size).to eq(1)
      next_job_is_the_runs_parent # the leftover goes at its first event
      expect(stats[:context_restores]).to eq(1)
    end
  end

  it "makes the next attempt current in a thread whose step's handler raised" do
    start(1)
    in_thread do
      begin
        open_step(1, 10)
        raise "handler blew up" # no step.completed from this thread
      rescue RuntimeError
        nil
      end
      open_step(1, 11)
      held = TaskerTraceNative::ContextListener.held
      current = current_hex
      close_step(1, 11)
      expect(held).to eq(1)
      expect(current).to eq(attempts(only_run(include_open: true)).last[:span_id])
      expect(stack.size).to eq(1) # the thread's span
    end
  end

  it "ends a re-enqueued run's contexts everywhere, and the next run has its own parent" do
    first_job = OpenTelemetryStandIn.app_span
    step_inbox = Queue.new
    step_out = Queue.new
    worker = Thread.new do
      while (job = step_inbox.pop)
        job.call
        step_out << [current_hex, stack.size]
      end
    end
    otel::Trace.with_span(first_job) do
      start(1)
      step_inbox << -> { open_step(1, 10) } # left open: the run is re-enqueued
      step_out.pop
      publish("task.initialize_requested", task_id: 1)
      expect(current_hex).to eq(first_job.context.hex_span_id)
    end
    second_job = OpenTelemetryStandIn.app_span
    during = nil
    otel::Trace.with_span(second_job) do
      start(1)
      step_inbox << -> { open_step(1, 10) }
      during = step_out.pop
      expect(stack.size).to eq(2)
      step_inbox << -> { close_step(1, 10) }
      expect(step_out.pop).to eq(["0" * 16, 1])
      publish("task.completed", task_id: 1)
    end
    step_inbox.close
    worker.join
    first, second = runs
    expect(during).to eq([attempts(second).first[:span_id], 1]), "the second run's attempt current, the first's gone"
    expect(first[:end]).to eq("pending")
    expect(root(second)[:parent_span_id]).to eq(second_job.context.hex_span_id)
    expect(root(second)[:links]).to eq([{ trace_id: first[:trace_id], span_id: root(first)[:span_id] }])
    expect(stack).to be_empty
  end

  # A step whose closing event comes while a context the app attached is
  # above the thread's span (detached after the step ends). The app's
  # context carries the run's root, made in the job's thread: it answers
  # for the attempt current in this thread.
  def step_under_app_context(app_context)
    open_step(1, 10)
    otel::Context.with_current(app_context) { @inner = current_hex }
    token = otel::Context.attach(app_context)
    close_step(1, 10)
    expect(otel::Context.current).to equal(app_context)
    otel::Context.detach(token)
    expect(stack.size).to eq(1) # the thread's span, below the app's
    @inner
  end

  it "keeps contexts the app attaches inside a step, with and without the guard" do
    start(1)
    app_context = otel::Context.current.set_value(otel::Context.create_key("app"), 1)
    inner = [in_thread { step_under_app_context(app_context) }]
    without_detach_guard { inner << in_thread { step_under_app_context(app_context) } }
    expect(inner).to eq(attempts(only_run(include_open: true)).map { |a| a[:span_id] })
    expect(stats[:context_restores]).to eq(0)
    expect(otel.errors).to be_empty
  end

  it "follows an unsampled parent: its spans are current, marked unsampled, and not exported" do
    job = OpenTelemetryStandIn.app_span(sampled: false)
    flags = []
    otel::Trace.with_span(job) do
      start(1)
      flags << otel::Trace.current_span.context.trace_flags.sampled?
      open_step(1, 10)
      flags << otel::Trace.current_span.context.trace_flags.sampled?
      expect(otel::Trace.current_span.context.hex_trace_id).to eq(job.context.hex_trace_id)
      close_step(1, 10)
      expect(only_run(include_open: true)[:sampled]).to be(false)
      publish("task.completed", task_id: 1)
    end
    expect(flags).to eq([false, false])
    expect(runs).to be_empty
    expect(stats).to include(sampled_out: 1, finished_runs: 0)
    exported = Tasker::Telemetry::TraceBackend.instance.export_otlp(include_open: true)
    expect(exported).to be_a(String)
    expect(exported).not_to include(job.context.hex_trace_id)
  end

  it "leaves one context per step thread, and none in jobs, after 1,000 runs over 8 threads" do
    configure_lifecycle(lifecycle_max_finished_runs: 2_000)
    publisher # subscribe before the threads start
    leftovers = Array.new(8) do |t|
      Thread.new do
        steps = Queue.new
        done = Queue.new
        step_thread = Thread.new do
          while (job = steps.pop)
            job.call
            done << [TaskerTraceNative::ContextListener.held, stack.size]
          end
        end
        held_in_steps = []
        125.times do |i|
          task = t * 1_000 + i
          otel::Trace.with_span(OpenTelemetryStandIn.app_span) do
            start(task)
            2.times do |s|
              steps << -> { open_step(task, s) }
              done.pop
              steps << -> { close_step(task, s) }
              held_in_steps << done.pop
            end
            publish("task.completed", task_id: task)
          end
        end
        steps.close
        step_thread.join
        [held_in_steps.uniq, TaskerTraceNative::ContextListener.held, stack.size]
      end
    end.map(&:value)
    # Each step thread keeps its span (and nothing more); each job thread
    # nothing.
    expect(leftovers).to all(eq([[[1, 1]], 0, 0]))
    expect(runs.size).to eq(1_000)
    expect(runs.map { |r| r[:spans].size }.uniq).to eq([3])
    expect(stats[:context_restores]).to eq(0)
    expect(otel.errors).to be_empty
  end

  it "attaches a thread's span again at the step's next opening event when an app's block took it" do
    start(1)
    seen = in_thread do
      # The thread's first attempt opens inside an app's block that raises:
      # the thread's span, attached above the block's context, goes with it.
      open_step_in_raising_block(1, 10, OpenTelemetryStandIn.app_span)
      taken = [current_hex, stack.size]
      publish("step.before_handle", task_id: 1, step_id: 10)
      during = [current_hex, stack.size] # what the handler's HTTP calls nest under
      close_step(1, 10)
      [taken, during, stack.size]
    end
    step = attempts(only_run(include_open: true)).first[:span_id]
    expect(seen).to eq([["0" * 16, 0], [step, 1], 1])
    publish("task.completed", task_id: 1)
    expect(stack).to be_empty
    expect(otel.errors).to be_empty
  end

  it "attaches a run's root again at its second opening copy when the transaction's block took it" do
    job = OpenTelemetryStandIn.app_span
    transaction = OpenTelemetryStandIn.app_span
    otel::Trace.with_span(job) do
      # The state machine's copy, inside its transaction's span.
      otel::Trace.with_span(transaction) { start(1) }
      expect(current_hex).to eq(job.context.hex_span_id)
      publish("task.start_requested", task_id: 1, task_name: "t") # the initializer's copy
      root = root(only_run(include_open: true))
      expect(root[:parent_span_id]).to eq(transaction.context.hex_span_id)
      expect(current_hex).to eq(root[:span_id])
      # The state machine's task.completed, inside the next transaction:
      # the root's context waits under it, and goes with it.
      otel::Trace.with_span(OpenTelemetryStandIn.app_span) do
        publish("task.completed", task_id: 1)
        expect(stack.size).to eq(3)
      end
      expect(current_hex).to eq(job.context.hex_span_id)
      expect(stack.size).to eq(1)
    end
    expect(stack).to be_empty
    expect(otel.errors).to be_empty
    expect(stats[:context_restores]).to eq(0)
  end

  it "records a run's second opening copy that waited, with what it brings, before the run ends" do
    start(1)
    publish("task.start_requested", task_id: 1, task_name: "t", total_steps: 5) # the initializer's copy
    expect(TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING)).to eq(1)
    publish("task.completed", task_id: 1)
    expect(TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING)).to eq(0)
    expect(attrs(root(only_run))).to include("total_steps" => 5)
    expect(stack).to be_empty
    expect(stats).to include(events_repeated: 0, open_runs: 0)
  end

  it "attaches a run's root again at its second opening copy after the app cleared the stack" do
    start(1)
    otel::Context.clear
    expect(stack).to be_empty
    publish("task.start_requested", task_id: 1, task_name: "t") # the initializer's copy
    expect(current_hex).to eq(root(only_run(include_open: true))[:span_id])
    publish("task.completed", task_id: 1)
    expect(stack).to be_empty
    expect(otel.errors).to be_empty
  end

  it "checks a run's root at its second copy only in the thread where the app's block took it" do
    transaction = OpenTelemetryStandIn.app_span
    roots = {}
    ready = Queue.new
    go = Queue.new
    t1 = Thread.new do
      otel::Trace.with_span(transaction) { start(1) } # the block's end takes the root's context
      ready << true
      go.pop
      publish("task.start_requested", task_id: 1, task_name: "t")
      roots[1] = current_hex
      publish("task.completed", task_id: 1)
      stack.size
    end
    ready.pop
    t2 = Thread.new do
      start(2)
      publish("task.start_requested", task_id: 2, task_name: "t")
      waited = TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING)
      roots[2] = current_hex
      publish("task.completed", task_id: 2)
      [waited, stack.size]
    end
    expect(t2.value).to eq([1, 0]) # nothing taken here: the copy waited
    go << true
    expect(t1.value).to eq(0)
    by_task = runs.to_h { |r| [r[:task_id], root(r)[:span_id]] }
    expect(roots).to eq(by_task)
    expect(otel.errors).to be_empty
  end

  # A job (with a remote parent's context around it) that raises through
  # two blocks with its run and a step open in its thread.
  def job_that_raises_through_two_blocks(remote)
    expect do
      otel::Context.with_current(otel::Trace.context_with_span(remote)) do
        otel::Trace.with_span(OpenTelemetryStandIn.app_span) do
          start(1)
          open_step(1, 10)
          raise "the job failed"
        end
      end
    end.to raise_error("the job failed")
  end


  it "leaves nothing when a job raised through two blocks with its run open" do
    remote = OpenTelemetryStandIn.app_span
    job_that_raises_through_two_blocks(remote)
    expect(stack).to be_empty
    expect(otel.errors).to be_empty
    next_job_is_the_runs_parent(remote)
  end

  it "takes out, without the guard, what a job left when it raised through two blocks" do
    remote = OpenTelemetryStandIn.app_span
    without_detach_guard do
      job_that_raises_through_two_blocks(remote)
      # The job block's detach took ours (the root's), and the outer block's
      # the job span's: the remote parent's context is left.
      expect(stack.size).to eq(1)
      expect(OpenTelemetryStandIn::OpenTelemetry::Trace.current_span(stack.first).context.hex_span_id)
        .to eq(remote.context.hex_span_id)
      next_job_is_the_runs_parent(remote)
    end
  end

  it "keeps the API's calls matched whatever app blocks, raising or not, surround runs and steps" do
    rng = Random.new(20_261_203)
    open_runs = []
    steps = {}
    next_task = 0
    # One random event of the gem's, published where the blocks are.
    event = lambda do
      case rng.rand(5)
      when 0 then start(next_task += 1).then { open_runs << next_task }
      when 1
        task = open_runs.sample(random: rng) or next
        step = (steps[task] ||= 0) + 1
        steps[task] = step
        open_step(task, task * 100 + step)
      when 2
        task = open_runs.sample(random: rng) or next
        close_step(task, task * 100 + steps[task]) if steps[task]
      when 3
        task = open_runs.delete(open_runs.sample(random: rng)) or next
        publish("task.completed", task_id: task)
      else publish("task.start_requested", task_id: open_runs.last || 1, task_name: "t") # a second copy
      end
    end
    block = lambda do |depth|
      otel::Trace.with_span(OpenTelemetryStandIn.app_span) do
        rng.rand(4).times do
          rng.rand(3).zero? && depth < 3 ? block.call(depth + 1) : event.call
          raise "unwound at #{depth}" if rng.rand(12).zero?
        end
      end
    rescue RuntimeError
      nil
    end
    300.times { block.call(0) }
    expect(otel.errors).to be_empty
    open_runs.each { |task| publish("task.completed", task_id: task) }
    expect(stack).to be_empty
    expect(TaskerTraceNative::ContextListener.held).to eq(0)
  end

  it "reads a new run's parent after letting go of a run that ended in another thread" do
    in_worker = Queue.new
    out = Queue.new
    worker = Thread.new do
      while (job = in_worker.pop)
        job.call
        out << current_hex
      end
    end
    in_worker << -> { start(1) }
    first_root = out.pop
    publish("task.completed", task_id: 1) # the run ends in another thread
    in_worker << -> { start(2) }          # no span of the app's current
    out.pop
    in_worker.close
    worker.join
    first, second = runs(include_open: true).sort_by { |r| r[:task_id] }
    expect(root(first)[:span_id]).to eq(first_root)
    expect(root(second)[:parent_span_id]).to be_nil
    expect(second[:trace_id]).not_to eq(first[:trace_id])
  end

  [["evicted past lifecycle_max_open_runs", :evict], ["expired past lifecycle_ttl", :expire]].each do |how, way|
    it "lets go of a run #{how} at the thread's next event, and a new run is not its child" do
      start(1)
      open_step(1, 10)
      expect(stack.size).to eq(1) # the root's, which answers for the attempt
      if way == :evict
        configure_lifecycle(lifecycle_max_open_runs: 1)
        in_thread { start(2) } # evicts task 1's run
      else
        expect(TaskerTraceNative::TestHooks.expire_lifecycle_runs_in(7200)).to eq(1)
      end
      expect(stats[way == :evict ? :evicted_runs : :expired_runs]).to eq(1)
      publish("observability.step.backoff", task_id: 3, step_id: 30) # any next event
      expect([stack.size, TaskerTraceNative::ContextListener.held]).to eq([0, 0])
      start(4)
      run = runs(include_open: true).find { |r| r[:task_id] == 4 }
      expect(root(run)[:parent_span_id]).to be_nil
      expect(current_hex).to eq(root(run)[:span_id])
    end
  end

  it "lets go of a dropped run even when the thread's next event enters a span" do
    start(1)
    open_step(1, 10)
    configure_lifecycle(lifecycle_max_open_runs: 1)
    in_thread { start(2) } # evicts task 1's run
    expect(stats[:evicted_runs]).to eq(1)
    open_step(2, 20) # a change of this thread's own: entering run 2's attempt
    publish("observability.step.backoff", task_id: 3, step_id: 30)
    step = attempts(runs(include_open: true).find { |r| r[:task_id] == 2 }).first[:span_id]
    # Run 1's root went; the thread's span answers for run 2's attempt.
    expect([stack.size, TaskerTraceNative::ContextListener.held, current_hex]).to eq([1, 1, step])
    close_step(2, 20)
    expect([stack.size, current_hex]).to eq([1, "0" * 16])
  end

  it "lets go of a run its own thread's opening event evicted, and the new run is not its child" do
    start(1)
    configure_lifecycle(lifecycle_max_open_runs: 1)
    start(2) # evicts task 1's run, in this thread
    expect(stats[:evicted_runs]).to eq(1)
    second = runs(include_open: true).find { |r| r[:task_id] == 2 }
    expect([stack.size, current_hex]).to eq([1, root(second)[:span_id]])
    expect(root(second)[:parent_span_id]).to be_nil
    publish("task.completed", task_id: 2)
    expect([stack.size, TaskerTraceNative::ContextListener.held]).to eq([0, 0])
  end

  it "makes a run whose opening evicted the run current in its job the job's child" do
    job = OpenTelemetryStandIn.app_span
    job_hex = job.context.hex_span_id
    otel::Trace.with_span(job) do
      start(1)
      configure_lifecycle(lifecycle_max_open_runs: 1)
      start(2) # evicts task 1's run, whose root is current in this job
      expect(stats[:evicted_runs]).to eq(1)
      second = runs(include_open: true).find { |r| r[:task_id] == 2 }
      expect(root(second)[:parent_span_id]).to eq(job_hex)
      expect(second[:trace_id]).to eq(job.context.hex_trace_id)
      publish("task.completed", task_id: 2)
    end
    expect([stack.size, TaskerTraceNative::ContextListener.held]).to eq([0, 0])
  end

  it "lets go of a dropped run when the thread's next event ends a span" do
    in_thread { start(2) }
    start(1)
    open_step(2, 20)
    configure_lifecycle(lifecycle_max_open_runs: 2)
    in_thread { publish("step.execution_requested", task_id: 2, step_id: 21, step_name: "s21") }
    in_thread { start(3) } # evicts task 1's run, the least recently active
    expect(stats[:evicted_runs]).to eq(1)
    close_step(2, 20) # this thread's next event
    expect([stack.size, TaskerTraceNative::ContextListener.held]).to eq([0, 0])
  end

  it "makes the attempt current in a new thread that runs on an exited thread's native thread" do
    start(1)
    # Ruby runs a new thread on the native thread of one that exited.
    in_thread { publish("step.execution_requested", task_id: 1, step_id: 10, step_name: "s10") }
    got = in_thread do
      publish("step.before_handle", task_id: 1, step_id: 10)
      [current_hex, TaskerTraceNative::ContextListener.held].tap { close_step(1, 10) }
    end
    expect(got).to eq([attempts(only_run(include_open: true)).first[:span_id], 1])
  end

  it "attaches a step's context again when it was taken and spans ended elsewhere since" do
    start(1)
    open_step_in_raising_block(1, 10, OpenTelemetryStandIn.app_span)
    in_thread do # a span ends in another thread: this one is not up to date
      start(2)
      publish("task.completed", task_id: 2)
    end
    publish("step.before_handle", task_id: 1, step_id: 10)
    step = attempts(runs(include_open: true).find { |r| r[:task_id] == 1 }).first[:span_id]
    expect(current_hex).to eq(step)
    close_step(1, 10)
    publish("task.completed", task_id: 1)
    expect(stack).to be_empty
  end

  it "takes out the app's context an app's block left, after one of ours left the stack's middle" do
    outer = OpenTelemetryStandIn.app_span
    inner = OpenTelemetryStandIn.app_span
    in_thread { start(2) }
    otel::Trace.with_span(outer) do
      otel::Trace.with_span(inner) do
        start(1) # run 1's root: current here
        begin
          otel::Trace.with_span(OpenTelemetryStandIn.app_span) do
            open_step(2, 20) # run 2's attempt, above the app's block
            in_thread { publish("task.completed", task_id: 1) } # run 1 ends elsewhere
            publish("observability.step.backoff", task_id: 2, step_id: 20) # root 1 goes
            raise "the block failed" # its detach takes the attempt's context
          end
        rescue RuntimeError
          nil
        end
        close_step(2, 20) # the block's own context was left: it goes, not `inner`'s
        expect(current_hex).to eq(inner.context.hex_span_id)
      end
      expect(current_hex).to eq(outer.context.hex_span_id)
    end
    expect(stack).to be_empty
    expect(otel.errors).to be_empty
  end

  describe "turning it off" do
    after { TaskerTraceNative.configure { |c| c.opentelemetry_context = :auto } }

    it "uses the plain listener with opentelemetry_context = false" do
      TaskerTraceNative.configure { |c| c.opentelemetry_context = false }
      listener = publisher.__bus__.listeners["task.start_requested"].first
      expect(listener).to equal(TaskerTraceNative::Lifecycle::LISTENER)
      otel::Trace.with_span(OpenTelemetryStandIn.app_span) do
        start(1)
        expect(stack.size).to eq(1)
      end
      expect(root(only_run(include_open: true))[:parent_span_id]).to be_nil
    end

    it "stops attaching at once when switched off after subscribing, and releases what it held" do
      start(1)
      expect(stack.size).to eq(1)
      TaskerTraceNative.configure { |c| c.opentelemetry_context = false }
      open_step(1, 10)
      expect(stack).to be_empty
      expect(only_run(include_open: true)[:spans].size).to eq(2)
    end

    it "takes the plain path again once no fiber holds a context after it is switched off" do
      listener = TaskerTraceNative::ContextListener
      start(1)
      holding = Queue.new
      go = Queue.new
      worker = Thread.new do
        open_step(1, 10)
        holding << listener.held
        go.pop
        close_step(1, 10) # released here, at this thread's own event
        listener.held
      end
      expect(holding.pop).to eq(1)
      TaskerTraceNative.configure { |c| c.opentelemetry_context = false }
      publish("task.start_requested", task_id: 1, task_name: "t") # releases the root here
      expect([stack, listener.held]).to eq([[], 0])
      expect(listener.engaged?).to be(true), "the worker's fiber still holds its step's context"
      go << true
      expect(worker.value).to eq(0)
      expect(listener.engaged?).to be(false)
      # The plain path: a step event waits to be read with the others.
      publish("step.execution_requested", task_id: 1, step_id: 11, step_name: "s11")
      expect(TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING)).to eq(1)
      publish("task.completed", task_id: 1)
      expect(attempts(only_run).map { |a| attrs(a)["step_id"] }).to eq([10, 11])
      expect(stack).to be_empty
    end

    it "does not wait for a fiber that died holding a context" do
      listener = TaskerTraceNative::ContextListener
      start(1)
      held = in_thread do
        open_step(1, 10)
        listener.held
      end
      expect(held).to eq(1), "the thread ends holding its step's context"
      TaskerTraceNative.configure { |c| c.opentelemetry_context = false }
      expect(listener.engaged?).to be(true)
      publish("task.start_requested", task_id: 1, task_name: "t") # releases the root here
      expect([listener.held, listener.engaged?]).to eq([0, false])
    end

    it "uses the plain listener when the API is not loaded" do
      OpenTelemetryStandIn.uninstall!
      expect(TaskerTraceNative::ContextListener.enabled?).to be(false)
      expect(publisher.__bus__.listeners["step.completed"].first).to equal(TaskerTraceNative::Lifecycle::LISTENER)
    end

    it "checks the setting" do
      expect(TaskerTraceNative.config.opentelemetry_context).to eq(:auto)
      expect { TaskerTraceNative.configure { |c| c.opentelemetry_context = :yes } }
        .to raise_error(ArgumentError, "opentelemetry_context must be true, false or :auto (got :yes)")
    end
  end
end
