# frozen_string_literal: true

# bin/demo's headline: a Tasker app's own event stream (the real event names,
# their duplicates, payload keys) published through a stand-in for
# Tasker::Events::Publisher, with the lifecycle tracer subscribed by
# TaskerTraceNative.trace_lifecycle!. A web process creates eight tasks; three
# worker threads run seven of them (steps fan out to threads of their own,
# one payment call times out and is retried, one task fails for good, one is
# re-enqueued and runs again); the eighth is picked up by a worker elsewhere,
# so no run of it opens here. Then: what was subscribed, the run counts,
# and a waterfall of one task run.

require_relative "../spec/support/stand_in_publisher"
require_relative "../spec/support/tasker_event_stream"

module LifecycleDemo
  S = TaskerEventStream
  WIDTH = 100
  MARKS = { "OK" => "✓", "ERROR" => "✗", "UNSET" => "·" }.freeze

  # A step: its name, how long its handler works (s), and how its attempts end.
  Step = Struct.new(:name, :work, :outcomes, :parallel, keyword_init: true)

  ORDER = [
    Step.new(name: "validate_cart", work: 0.004, outcomes: %i[completed]),
    Step.new(name: "reserve_inventory", work: 0.018, outcomes: %i[completed], parallel: true),
    Step.new(name: "charge_payment", work: 0.012, outcomes: %i[failed completed], parallel: true),
    Step.new(name: "fraud_check", work: 0.026, outcomes: %i[completed], parallel: true),
    Step.new(name: "create_shipment", work: 0.010, outcomes: %i[completed]),
    Step.new(name: "send_confirmation", work: 0.003, outcomes: %i[completed])
  ].freeze
  REFUND = [
    Step.new(name: "load_order", work: 0.003, outcomes: %i[completed]),
    Step.new(name: "issue_refund", work: 0.008, outcomes: %i[failed failed failed])
  ].freeze
  SYNC = [
    Step.new(name: "fetch_supplier_feed", work: 0.006, outcomes: %i[completed]),
    Step.new(name: "apply_adjustments", work: 0.004, outcomes: %i[completed])
  ].freeze

  TASKS = {
    101 => ["process_order", ORDER], 102 => ["process_order", ORDER], 103 => ["refund_payment", REFUND],
    104 => ["sync_inventory", SYNC], 105 => ["sync_inventory", SYNC], 106 => ["process_order", ORDER],
    107 => ["sync_inventory", SYNC], 108 => ["process_order", ORDER]
  }.freeze
  RE_ENQUEUED = 105
  ELSEWHERE = 108
  SHOWN = 101

  module_function

  def step_ids(task_id, steps)
    steps.each_index.map { |i| (task_id * 100) + i }
  end

  # One step's attempts, as the step executor publishes them.
  def run_step(publisher, task_id, step, step_id)
    step.outcomes.each_with_index do |outcome, i|
      last = i == step.outcomes.size - 1
      events = S.step_attempt(task_id, step_id, step.name, i + 1, outcome: outcome, work: step.work,
                                                                   error: "#{step.name}: Net::OpenTimeout after 5s",
                                                                   backoff: outcome == :failed && !last ? 1 : nil,
                                                                   retry_after: outcome == :failed && !last)
      S.play(publisher, events)
    end
    step.outcomes.last
  end

  # A worker's run of a task: sequential steps in its thread, parallel ones
  # each in a thread of its own (Tasker runs them as futures).
  def work_task(publisher, task_id)
    name, steps = TASKS.fetch(task_id)
    ids = step_ids(task_id, steps)
    S.play(publisher, S.worker_start(task_id, name, ids))
    if task_id == RE_ENQUEUED
      S.play(publisher, S.reenqueue(task_id, name))
      sleep 0.005
      S.play(publisher, S.worker_start(task_id, name, ids))
    end
    outcomes = []
    steps.zip(ids).chunk_while { |a, b| a[0].parallel && b[0].parallel }.each do |group|
      if group.size > 1
        outcomes.concat(group.map { |step, id| Thread.new { run_step(publisher, task_id, step, id) } }.map(&:value))
      else
        outcomes << run_step(publisher, task_id, *group.first)
      end
      break if outcomes.last == :failed
    end
    failed = outcomes.count(:failed)
    outcome = failed.zero? ? :completed : :failed
    S.play(publisher, S.finish(task_id, name, outcome, total: steps.size, failed: failed,
                                                       error: "issue_refund failed after 3 attempts"))
  end

  def replay(publisher)
    TASKS.each { |id, (name, _)| S.play(publisher, S.web_process(id, name)) }
    queue = Queue.new
    (TASKS.keys - [ELSEWHERE]).each { |id| queue << id }
    queue.close
    Array.new(3) { Thread.new { while (id = queue.pop) do work_task(publisher, id) end } }.each(&:join)
  end

  def wrap(words, indent, width = WIDTH - 1)
    lines = [+""]
    words.each do |w|
      lines << +"" if lines.last.size + w.size + 1 > width - indent && !lines.last.empty?
      lines.last << (lines.last.empty? ? w : " #{w}")
    end
    lines.map { |l| (" " * indent) + l }.join("\n").lstrip
  end

  def ms(seconds)
    format("%.1f ms", seconds * 1000)
  end

  # The run drawn natively (the console exporter's drawing), plus the legend.
  def waterfall(run)
    TaskerTraceNative.lifecycle_waterfall(run[:trace_id], color: $stdout.tty?) +
      "#{' ' * 43}│#{MARKS.map { |code, mark| "#{mark} #{code}" }.join('   ')} (open, or ended with its run)"
  end

  def stats_line(stats, keys)
    keys.map { |k| "#{k}=#{stats.fetch(k)}" }.join(" ")
  end

  def main
    publisher = StandInPublisher.new
    subscribed = TaskerTraceNative.trace_lifecycle!(publisher)
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    replay(publisher)
    elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    stats = TaskerTraceNative.lifecycle_stats
    runs = TaskerTraceNative.lifecycle_runs
    open_runs = TaskerTraceNative.lifecycle_runs(include_open: true) - runs

    puts "## Lifecycle tracer: Tasker's own events, one trace per task run"
    puts
    others = publisher.__bus__.events.keys - subscribed
    puts "trace_lifecycle!  subscribed to #{subscribed.size} of the publisher's " \
         "#{publisher.__bus__.events.size} events, the ones its trace model uses (span events only, " \
         "opt-in with lifecycle_workflow_events, or the app's own: #{others.join(', ')}):"
    subscribed.group_by { |n| n.split(".")[0...-1].join(".") }.each do |ns, names|
      puts "  #{"#{ns}.*".ljust(22)}#{wrap(names.map { |n| n.delete_prefix("#{ns}.") }, 24)}"
    end
    puts
    events = stats.values_at(:events_recorded, :events_ignored, :events_orphaned).sum
    puts "replayed          #{events} events of #{TASKS.size} tasks in #{ms(elapsed)} (3 worker threads, " \
         "steps fanned out)"
    ends = runs.map { |r| r[:end] }.tally.map { |k, v| "#{v} #{k}" }.join(", ")
    puts "runs              #{runs.size} finished (#{ends}), #{stats[:open_runs]} open"
    puts "not run here      task #{ELSEWHERE}: created and enqueued by the web process, run by a worker " \
         "elsewhere:"
    puts "                  creation and enqueueing open no run (#{open_runs.size} open)"
    puts "spans             #{runs.sum { |r| r[:spans].size }} (one root per run, one per step attempt; " \
         "Tasker's duplicates merged)"
    puts "stats             #{stats_line(stats, %i[events_recorded events_ignored events_orphaned events_late])}"
    puts "                  #{stats_line(stats, %i[expired_runs evicted_runs dropped_spans events_refused])}"
    linked = runs.find { |r| r[:task_id] == RE_ENQUEUED && !r[:spans].first[:links].empty? }
    puts "re-enqueued       task #{RE_ENQUEUED}: run 1 ended pending (UNSET), run 2 links to trace " \
         "#{linked[:spans].first[:links].first[:trace_id][0, 12]}…" if linked
    failed = runs.find { |r| r[:end] == "failed" }
    puts "failed            task #{failed[:task_id]}: ERROR \"#{failed[:spans].first[:status][:message]}\"" if failed
    shown = runs.find { |r| r[:task_id] == SHOWN }
    puts
    root = shown[:spans].first
    puts "one task run   #{root[:events].size} root events (the drawing is the console exporter's: " \
         "exporter = :console)"
    puts waterfall(shown)
    puts
    json = Tasker::Telemetry::TraceBackend.instance.export_otlp
    spans = runs.sum { |r| r[:spans].size }
    puts "export_otlp       #{json.bytesize} bytes of OTLP JSON: #{runs.size} runs as #{runs.size} traces " \
         "of #{spans} spans (push_otlp too)"
  end
end
