# frozen_string_literal: true

# The events Tasker publishes for a task, in order, with their duplicates and
# payload keys (see the shared description of Tasker's event stream): what the
# specs, bin/demo and bin/bench replay through a StandInPublisher.
#
# Each builder returns an Array of [event_name, payload] pairs; `[:work, s]`
# entries stand for a step handler working `s` seconds (TaskerEventStream.play
# sleeps there, callers that only count events skip them).
module TaskerEventStream
  module_function

  def task_payload(task_id, task_name)
    { task_id: task_id, task_name: task_name }
  end

  # The process that creates the task: initialize, the first
  # start_requested (the task is still pending), the job enqueued. That run
  # never finishes in this process.
  def web_process(task_id, task_name, context: { order_id: task_id, customer: "cust-#{task_id}" })
    t = task_payload(task_id, task_name)
    [
      ["task.initialize_requested", t],
      ["task.start_requested", t.merge(task_context: context)],
      ["observability.task.enqueue", t.merge(job: "TaskRunnerJob")]
    ]
  end

  # The worker's two start_requested (state machine, then initializer) and
  # the orchestration that discovers the steps.
  def worker_start(task_id, task_name, step_ids, context: { order_id: task_id, customer: "cust-#{task_id}" })
    t = task_payload(task_id, task_name)
    [
      ["task.start_requested", t.merge(task_context: context, from_state: "pending", to_state: "in_progress",
                                       transitioned_at: Time.now)],
      ["task.start_requested", t.merge(task_context: context)],
      ["workflow.viable_steps_discovered", t.merge(step_ids: step_ids, count: step_ids.size)],
      ["workflow.steps_execution_started", t.merge(count: step_ids.size)]
    ]
  end

  def step_payload(task_id, step_id, step_name, attempt, retry_limit: 3)
    { task_id: task_id, step_id: step_id, step_name: step_name, attempt_number: attempt,
      retry_limit: retry_limit, started_at: Time.now, event_type: "execution",
      step_inputs: { "card_token" => "tok_#{step_id}" }, step_dependencies: [] }
  end

  # One attempt: three execution_requested, before_handle, the handler's work
  # (and a backoff when asked), then three completed (attempt_number 0 and
  # execution_duration 0 in the first) or three failed, and a retry_requested
  # when the step is to be retried.
  def step_attempt(task_id, step_id, step_name, attempt, outcome: :completed, work: 0, error: nil,
                   backoff: nil, retry_after: false)
    s = step_payload(task_id, step_id, step_name, attempt)
    events = Array.new(3) { ["step.execution_requested", s] }
    events << ["step.before_handle", s]
    events << ["observability.step.backoff", s.merge(backoff_seconds: backoff, backoff_type: "server_requested")] if backoff
    events << [:work, work] if work.positive?
    if outcome == :completed
      results = { step_results: { "charge_id" => "ch_#{step_id}", "card_number" => "4242424242424242" } }
      events << ["step.completed", s.merge(attempt_number: 0, execution_duration: 0).merge(results)]
      2.times { events << ["step.completed", s.merge(execution_duration: 1).merge(results)] }
    else
      message = error || "#{step_name}: connection refused"
      failed = s.merge(error_message: message, error_class: "Net::OpenTimeout", exception_class: "StandardError",
                       backtrace: ["app/handlers/#{step_name}.rb:12:in `process'"], step_results: {})
      3.times { events << ["step.failed", failed] }
      events << ["step.retry_requested", s.merge(previous_attempts: attempt)] if retry_after
    end
    events
  end

  # The end of a run: finalization and the two task.completed (state machine
  # first, without counts; then the finalizer's) or the two task.failed (only
  # the second with error_message).
  def finish(task_id, task_name, outcome, total:, failed: 0, error: nil)
    t = task_payload(task_id, task_name)
    counts = { total_steps: total, completed_steps: total - failed, failed_steps: failed, pending_steps: 0,
               started_at: Time.now, completed_at: Time.now, total_execution_duration: 1,
               current_execution_duration: 1 }
    events = [["workflow.steps_execution_completed", t.merge(count: total)],
              ["workflow.task_finalization_started", t]]
    events << if outcome == :completed
                ["task.completed", t]
              else
                ["task.failed", t]
              end
    events << if outcome == :completed
                ["task.completed", t.merge(counts)]
              else
                ["task.failed", t.merge(counts).merge(error_message: error || "step failed", error_steps: [failed])]
              end
    events << ["workflow.task_finalization_completed", t]
    events
  end

  # A run that ends with the task back in pending (re-enqueued for later).
  def reenqueue(task_id, task_name)
    t = task_payload(task_id, task_name)
    [["workflow.task_reenqueue_requested", t.merge(reason: "waiting for dependencies", delay_seconds: 30)],
     ["task.initialize_requested", t]]
  end

  # A whole worker run of a task with `step_names`, each step completing in
  # one attempt of `work` seconds.
  def successful_run(task_id, task_name, step_names, first_step_id:, work: 0)
    ids = step_names.each_index.map { |i| first_step_id + i }
    events = worker_start(task_id, task_name, ids)
    step_names.each_with_index do |name, i|
      events.concat(step_attempt(task_id, ids[i], name, 1, work: work))
    end
    events.concat(finish(task_id, task_name, :completed, total: step_names.size))
  end

  # Publishes the events, sleeping at [:work, s] entries.
  def play(publisher, events)
    events.each do |name, payload|
      if name == :work
        sleep(payload)
      else
        publisher.publish(name, payload)
      end
    end
  end

  # The events alone (no work entries).
  def events_only(events)
    events.reject { |name, _| name == :work }
  end
end
