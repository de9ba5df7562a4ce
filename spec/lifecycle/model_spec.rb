# frozen_string_literal: true

require "spec_helper"

# The trace model through the publisher: each row of the issue's table and
# every duplicate pattern Tasker publishes.
RSpec.describe "Lifecycle tracer: the trace model, through the publisher" do

  def step_span(run, step_id, nth = 0)
    attempts(run).select { |s| attrs(s)["step_id"] == step_id }.fetch(nth)
  end

  describe "a task run (root span tasker.task.execution)" do
    it "is opened by the first task.start_requested and merges the later ones" do
      play(ts.worker_start(1, "order", [10]))
      publish("task.start_requested", to_state: "in_progress", task_id: 1, task_name: "order_v2")
      run = only_run(include_open: true)
      expect(run[:end]).to eq("open")
      expect(run[:spans].size).to eq(1)
      r = root(run)
      expect(r).to include(name: "tasker.task.execution", parent_span_id: nil, end_time: nil, duration: nil)
      expect(r[:status]).to eq(code: "UNSET", message: nil)
      expect(attrs(r)).to include("task_id" => 1, "task_name" => "order_v2")
      expect(event_names(r)).to eq(%w[workflow.viable_steps_discovered workflow.steps_execution_started])
      expect(stats).to include(open_runs: 1, events_recorded: 5)
    end

    it "is closed OK by the first task.completed and ends at its last event; the second brings the counts" do
      play(ts.worker_start(1, "order", []))
      play(ts.finish(1, "order", :completed, total: 3))
      run = only_run
      expect(run[:end]).to eq("completed")
      r = root(run)
      expect(r[:status]).to eq(code: "OK", message: nil)
      expect(attrs(r)).to include("total_steps" => 3, "completed_steps" => 3, "failed_steps" => 0)
      expect(r[:end_time]).to be > r[:start_time]
      # Closed by the first task.completed; the finalization after it lies
      # inside the root, which ends at the run's last event.
      expect(r[:events].map { |e| e[:name] }.last).to eq("workflow.task_finalization_completed")
      expect(r[:end_time]).to eq(r[:events].last[:time])
    end

    it "is closed ERROR by task.failed, the message from the one that carries it (the second)" do
      play(ts.worker_start(2, "refund", []))
      play(ts.finish(2, "refund", :failed, total: 2, failed: 1, error: "charge_card failed: card declined"))
      r = root(only_run)
      expect(r[:status]).to eq(code: "ERROR", message: "charge_card failed: card declined")
      expect(attrs(r)).to include("error" => "charge_card failed: card declined", "failed_steps" => 1)
    end

    it "gives a task.failed without any message an ERROR status without one" do
      publish("task.start_requested", to_state: "in_progress", task_id: 3)
      publish("task.failed", task_id: 3)
      expect(root(only_run)[:status]).to eq(code: "ERROR", message: nil)
    end

    it "ends with task.cancelled (ERROR cancelled) and task.resolved_manually (OK), with a span event" do
      publish("task.start_requested", to_state: "in_progress", task_id: 4)
      publish("task.cancelled", task_id: 4)
      publish("task.start_requested", to_state: "in_progress", task_id: 5)
      publish("task.resolved_manually", task_id: 5)
      cancelled, resolved = runs
      expect(cancelled[:end]).to eq("cancelled")
      expect(root(cancelled)[:status]).to eq(code: "ERROR", message: "cancelled")
      expect(event_names(root(cancelled))).to eq(["task.cancelled"])
      expect(resolved[:end]).to eq("resolved_manually")
      expect(root(resolved)[:status]).to eq(code: "OK", message: nil)
      expect(event_names(root(resolved))).to eq(["task.resolved_manually"])
    end
  end

  describe "a step attempt (child span tasker.step.execution)" do
    it "runs from the first execution_requested to the first completed, on the native clock" do
      play(ts.worker_start(1, "order", [10]))
      play(ts.step_attempt(1, 10, "charge_card", 1, work: 0.05))
      run = only_run(include_open: true)
      expect(attempts(run).size).to eq(1)
      step = attempts(run).first
      expect(step).to include(name: "tasker.step.execution", parent_span_id: root(run)[:span_id])
      # The work's 50 ms, on the native clock (within its calibration
      # error); the upper bound only catches a stall.
      expect(step[:duration]).to be_between(0.05 * 0.95, 10)
      expect(step[:status]).to eq(code: "OK", message: nil)
      expect(attrs(step)).to include("task_id" => 1, "step_id" => 10, "step_name" => "charge_card",
                                     "attempt_number" => 1, "retry_limit" => 3)
      # The attempt's own measured seconds, not Tasker's figure (1 here).
      expect(attrs(step)["execution_duration"]).to be_within(1e-6).of(step[:duration])
      expect(event_names(step)).to eq(["step.before_handle"])
    end

    it "is opened by step.before_handle when no execution_requested came" do
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      publish("step.before_handle", task_id: 1, step_id: 7, step_name: "ship")
      publish("step.completed", task_id: 1, step_id: 7)
      step = attempts(only_run(include_open: true)).first
      expect(attrs(step)).to include("step_name" => "ship")
      expect(event_names(step)).to eq(["step.before_handle"])
      expect(step[:status][:code]).to eq("OK")
    end

    it "is ERROR with the error message after three step.failed, exception_class from error_class" do
      play(ts.worker_start(1, "order", [10]))
      play(ts.step_attempt(1, 10, "charge_card", 1, outcome: :failed, error: "card declined"))
      step = attempts(only_run(include_open: true)).first
      expect(step[:status]).to eq(code: "ERROR", message: "card declined")
      expect(attrs(step)).to include("error" => "card declined", "exception_class" => "Net::OpenTimeout")
      expect(attrs(step).keys).not_to include("backtrace", "step_results", "error_class")
    end

    it "keeps exception_class when no error_class comes" do
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      publish("step.execution_requested", task_id: 1, step_id: 2)
      publish("step.failed", task_id: 1, step_id: 2, exception_class: "StandardError", error_message: "x")
      publish("step.failed", task_id: 1, step_id: 2, exception_class: "Other")
      expect(attrs(attempts(only_run(include_open: true)).first)).to include("exception_class" => "StandardError")
    end

    it "takes the highest attempt_number of the three completed (the first says 0)" do
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      play(ts.step_attempt(1, 10, "a", 2))
      step = attempts(only_run(include_open: true)).first
      expect(attrs(step)).to include("attempt_number" => 2)
      expect(attrs(step)["execution_duration"]).to be_within(1e-6).of(step[:duration])
    end

    it "ends with step.cancelled (ERROR cancelled) and step.resolved_manually (OK)" do
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      publish("step.execution_requested", task_id: 1, step_id: 1)
      publish("step.cancelled", task_id: 1, step_id: 1)
      publish("step.execution_requested", task_id: 1, step_id: 2)
      publish("step.resolved_manually", task_id: 1, step_id: 2)
      cancelled, resolved = attempts(only_run(include_open: true))
      expect(cancelled[:status]).to eq(code: "ERROR", message: "cancelled")
      expect(event_names(cancelled)).to eq(["step.cancelled"])
      expect(resolved[:status]).to eq(code: "OK", message: nil)
      expect(event_names(resolved)).to eq(["step.resolved_manually"])
    end

    it "still open when its run ends, ends with the run with status UNSET" do
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      publish("step.execution_requested", task_id: 1, step_id: 1)
      publish("task.completed", task_id: 1)
      run = only_run
      step = attempts(run).first
      expect(step[:status][:code]).to eq("UNSET")
      expect(step[:end_time]).to eq(root(run)[:end_time])
    end
  end

  describe "retries" do
    it "make one span per attempt and a step.retry_requested event on the task span" do
      play(ts.worker_start(1, "order", [10]))
      play(ts.step_attempt(1, 10, "charge_card", 1, outcome: :failed, retry_after: true))
      play(ts.step_attempt(1, 10, "charge_card", 2))
      play(ts.finish(1, "order", :completed, total: 1))
      run = only_run
      first, second = attempts(run)
      expect([first[:status][:code], second[:status][:code]]).to eq(%w[ERROR OK])
      expect([attrs(first)["attempt_number"], attrs(second)["attempt_number"]]).to eq([1, 2])
      expect(second[:start_time]).to be >= first[:end_time]
      retry_event = root(run)[:events].find { |e| e[:name] == "step.retry_requested" }
      expect(attrs(retry_event)).to include("step_id" => 10, "attempt_number" => 1)
    end
  end

  describe "span events" do
    it "puts step.before_handle and observability.step.backoff on the attempt, else on the task span" do
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      play(ts.step_attempt(1, 10, "call_api", 1, backoff: 2))
      publish("observability.step.backoff", task_id: 1, step_id: 10, backoff_seconds: 4)
      run = only_run(include_open: true)
      expect(event_names(attempts(run).first)).to eq(%w[step.before_handle observability.step.backoff])
      backoff = root(run)[:events].find { |e| e[:name] == "observability.step.backoff" }
      expect(attrs(backoff)).to include("step_id" => 10)
    end

    it "puts workflow.*, observability.task.* and other task-level events on the task span" do
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      publish("observability.task.enqueue", task_id: 1)
      publish("workflow.task_reenqueue_delayed", task_id: 1, step_id: 3)
      r = root(only_run(include_open: true))
      expect(event_names(r)).to eq(%w[observability.task.enqueue workflow.task_reenqueue_delayed])
      expect(attrs(r[:events].last)).to eq("step_id" => 3)
    end
  end

  describe "runs that end without finishing" do
    it "end UNSET with a task.pending event when re-enqueued; the next run links to it" do
      play(ts.worker_start(1, "order", [10]))
      play(ts.reenqueue(1, "order"))
      play(ts.worker_start(1, "order", [10]))
      play(ts.step_attempt(1, 10, "a", 1))
      play(ts.finish(1, "order", :completed, total: 1))
      pending, done = runs
      expect(pending[:end]).to eq("pending")
      expect(root(pending)[:status][:code]).to eq("UNSET")
      expect(event_names(root(pending)).last).to eq("task.pending")
      expect(done[:trace_id]).not_to eq(pending[:trace_id])
      expect(root(done)[:links]).to eq([{ trace_id: pending[:trace_id], span_id: root(pending)[:span_id] }])
    end

    it "expire after lifecycle_ttl without an event, counted and never exported" do
      configure_lifecycle(lifecycle_ttl: 0.5)
      # The web process that creates the task opens nothing.
      play(ts.web_process(1, "order"))
      expect(stats).to include(open_runs: 0, events_ignored: 3)
      play(ts.worker_start(1, "order", [10]))
      expect(stats).to include(open_runs: 1, expired_runs: 0)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
      sleep 0.05 until stats[:expired_runs] == 1 || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      expect(stats).to include(open_runs: 0, expired_runs: 1)
      expect(runs(include_open: true)).to eq([])
      # Its worker's events, arriving later, open a new run.
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      expect(stats[:open_runs]).to eq(1)
    end
  end

  describe "the duplicates, all at once" do
    it "make one trace of one root and one span per attempt from a whole run", :gc_stress_safe do
      play(ts.web_process(1, "order"))
      play(ts.successful_run(1, "order", %w[a b c], first_step_id: 10))
      run = only_run
      expect(run[:spans].size).to eq(4)
      expect(attempts(run).map { |s| attrs(s)["step_id"] }).to eq([10, 11, 12])
      expect(attempts(run).map { |s| s[:status][:code] }.uniq).to eq(["OK"])
      expect(run[:spans].map { |s| s[:span_id] }.uniq.size).to eq(4)
      # The web process's events come before any run (creation and
      # enqueueing open nothing): ignored.
      expect(stats).to include(events_recorded: 4 + 3 * 7 + 5, events_ignored: 3, events_orphaned: 0,
                               events_late: 0)
    end
  end

  describe "odd input" do
    it "counts events of unknown tasks as orphaned and exports nothing for them" do
      publish("step.completed", task_id: 99, step_id: 1)
      publish("task.completed", task_id: 99)
      expect(stats).to include(events_orphaned: 2, open_runs: 0, finished_runs: 0)
      expect(runs(include_open: true)).to eq([])
    end

    it "keeps a closing step event with no attempt as an event on the task span, counted orphaned" do
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      publish("step.completed", task_id: 1, step_id: 5)
      r = root(only_run(include_open: true))
      expect(event_names(r)).to eq(["step.completed"])
      expect(attrs(r[:events].first)).to eq("step_id" => 5)
      expect(stats[:events_orphaned]).to eq(1)
    end

    it "ignores events without a task id and initialize_requested without an open run" do
      publish("workflow.viable_steps_discovered", count: 2)
      publish("task.initialize_requested", task_id: 1)
      expect(stats).to include(events_ignored: 2, open_runs: 0)
    end

    it "counts duplicates after an export as late and opens nothing" do
      publish("task.start_requested", to_state: "in_progress", task_id: 1)
      publish("task.completed", task_id: 1)
      Tasker::Telemetry::TraceBackend.instance.export_otlp(drain: true)
      publish("task.completed", task_id: 1, total_steps: 1)
      expect(stats).to include(events_late: 1, finished_runs: 0, open_runs: 0)
    end

    it "treats 42 and \"42\" as the same task and step" do
      publish("task.start_requested", to_state: "in_progress", task_id: 42)
      publish("step.execution_requested", task_id: "42", step_id: "7")
      publish("step.completed", task_id: 42, step_id: 7)
      publish("task.completed", task_id: "42")
      run = only_run
      expect(run[:task_id]).to eq(42)
      expect(attrs(attempts(run).first)).to include("step_id" => 7)
    end
  end
end
