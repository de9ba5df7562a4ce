# frozen_string_literal: true

# Failure paths of the lifecycle tracer, run INSIDE the real Tasker engine's
# dummy app (its blog example helpers, PostgreSQL). Not part of the gem's own
# suite (the file name does not end in _spec.rb): it needs Tasker, Rails and a
# database. Pass it as an extra spec file to an rspec run from the engine's root.
#
# Each example drives a real order-processing task through a failure and
# checks the runs the tracer made against the database's record of the task.
require File.join(Dir.pwd, "spec/blog/support/blog_spec_helper")

RSpec.describe "tasker_trace_native on the engine: failure paths", type: :blog_example do
  self.use_transactional_tests = false

  before(:all) { load_blog_code_safely("post_01_ecommerce_reliability") }

  before do
    MockPaymentService.reset! if MockPaymentService.respond_to?(:reset!)
    MockInventoryService.reset! if MockInventoryService.respond_to?(:reset!)
  end

  def context_for(card)
    sample_ecommerce_context.deep_merge(payment_info: { card_last_four: card })
  end

  # The task as the database has it now (Tasker's Task#reload returns nil).
  def fresh(task)
    Tasker::Task.find(task.task_id)
  end

  def runs_of(task)
    TaskerTraceNative.lifecycle_runs(include_open: true).select { |r| r[:task_id] == task.task_id.to_i }
  end

  def attr(span, key)
    span[:attributes]["#{TaskerTraceNative::Native.attribute_prefix}#{key}"]
  end

  def retry_errored_steps(task)
    fresh(task).workflow_steps.each do |s|
      next unless s.status == "error" && s.retryable && s.attempts.to_i < s.retry_limit.to_i

      s.state_machine.transition_to!(:pending)
    end
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 60
    until ActiveRecord::Base.connection.select_all(
      "SELECT ready_for_execution FROM get_step_readiness_status(#{task.task_id.to_i})"
    ).to_a.any? { |r| r["ready_for_execution"] }
      raise "no step became ready" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.25
    end
  end

  # What holds for every run: span events inside their span, the root covering
  # every span of the run, attempts with a real positive duration.
  def expect_well_formed(run)
    root = run[:spans].first
    run[:spans].each do |span|
      next if span[:end_time].nil?

      expect(span[:start_time]).to be >= root[:start_time]
      expect(span[:end_time]).to be <= root[:end_time]
      span[:events].each { |e| expect(e[:time]).to be_between(span[:start_time], span[:end_time]) }
    end
    run[:spans].drop(1).each do |attempt|
      next if attempt[:end_time].nil?

      expect(attr(attempt, "execution_duration")).to be > 0
    end
  end

  it "ends a run pending with the finalizer's counts, then completes the retry in a linked run" do
    MockPaymentService.stub_failure(:process_payment, MockPaymentService::PaymentError,
                                    "Temporary payment gateway error", fail_count: 1)
    task = create_test_task(name: "order_processing", context: context_for("8101"))
    created_at_ns = (Time.now.to_r * 1_000_000_000).to_i
    expect(runs_of(task)).to eq([]) # creation opens nothing
    execute_workflow(task)
    first = runs_of(task)
    expect(first.size).to eq(1)
    expect(first[0][:end]).to eq("pending")
    steps = fresh(task).workflow_steps
    root = first[0][:spans].first
    expect(attr(root, "total_steps")).to eq(steps.size)
    expect(attr(root, "completed_steps")).to eq(steps.count { |s| s.status == "complete" })
    expect(attr(root, "failed_steps")).to eq(steps.count { |s| s.status == "error" })
    expect(root[:start_time]).to be >= created_at_ns
    failed = first[0][:spans].drop(1).select { |s| s[:status][:code] == "ERROR" }
    # The message is what the step raised, as the engine reports it (its
    # payment handler turns the stubbed error into a NameError of its own).
    expect(failed).not_to be_empty
    expect(failed.map { |s| s[:status][:message].to_s }).to all(satisfy { |m| !m.empty? })
    expect_well_formed(first[0])

    retry_errored_steps(task)
    execute_workflow(task)
    expect(fresh(task).status).to eq("complete")
    both = runs_of(task)
    expect(both.map { |r| r[:end] }).to eq(%w[pending completed])
    second = both[1]
    expect(second[:spans].first[:links]).to eq([{ trace_id: first[0][:trace_id], span_id: root[:span_id] }])
    expect(second[:spans].first[:start_time]).to be >= root[:end_time]
    expect_well_formed(second)
    # One span per attempt the database counts.
    attempts = fresh(task).workflow_steps.sum { |s| s.attempts.to_i }
    expect(both.sum { |r| r[:spans].size - 1 }).to eq(attempts)
  end

  it "ends a run as the task did when a step fails for good" do
    MockInventoryService.stub_failure(:check_availability, MockInventoryService::InsufficientStockError,
                                      "Insufficient stock")
    task = create_test_task(name: "order_processing", context: context_for("8202"))
    execute_workflow(task)
    runs = runs_of(task)
    expect(runs.size).to eq(1)
    expect(runs[0][:end]).to eq(fresh(task).status == "error" ? "failed" : "pending")
    errors = runs[0][:spans].drop(1).select { |s| s[:status][:code] == "ERROR" }
    expect(errors).not_to be_empty
    expect(errors.first[:status][:message]).to include("Insufficient stock")
    expect_well_formed(runs[0])
  end

  it "holds no open run for a task created and never run" do
    before = TaskerTraceNative.lifecycle_stats[:open_runs]
    task = create_test_task(name: "order_processing", context: context_for("8303"))
    expect(runs_of(task)).to eq([])
    expect(TaskerTraceNative.lifecycle_stats[:open_runs]).to eq(before)
  end

  it "exports no payload secrets" do
    task = create_test_task(name: "order_processing", context: context_for("8404"))
    execute_workflow(task)
    json = Tasker::Telemetry::TraceBackend.instance.export_otlp(include_open: true)
    expect(json).not_to include("tok_visa_valid")
    expect(json).not_to include("customer@example.com")
  end
end
