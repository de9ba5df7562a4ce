# frozen_string_literal: true

require "spec_helper"

# Event streams recorded from the real Tasker engine (spec/fixtures/streams),
# replayed through the stand-in publisher in their original threads and
# order: the exact trace each must make. The expectations follow the run
# model and the engine's own record of each task (`tasks` in the
# .expected.json files), not the `live_runs` there (the old gem's output,
# with the defects these specs pin down).
#
# The trace each recorded stream must make.
module RecordedStreams
  # A run as expected: how it ends, its root's status and counts
  # [total, completed, failed], and its attempts in start order as
  # [step name, status, message, attempt_number].
  Expected = Struct.new(:end, :status, :counts, :attempts, :root_events, keyword_init: true)

  PAYMENT_ERROR = "uninitialized constant MockPaymentService::ServiceError"
  ORDER_STEPS = %w[validate_cart process_payment update_inventory create_order send_confirmation].freeze
  def self.ok(name, attempt = 1) = [name, "OK", nil, attempt]

  STREAMS = {
    "order_complete" => {
      # Creation's start_requested and enqueue, and the transition about to
      # start: before the run.
      ignored: [[1, "task.start_requested"], [2, "observability.task.enqueue"], [3, "task.before_transition"]],
      runs: [
        Expected.new(end: "completed", status: ["OK", nil], counts: [5, 5, 0],
                     attempts: ORDER_STEPS.map { |s| ok(s) },
                     root_events: { "workflow.task_started" => 1, "workflow.viable_steps_discovered" => 10,
                                    "workflow.steps_execution_started" => 5,
                                    "workflow.steps_execution_completed" => 5, "workflow.no_viable_steps" => 2,
                                    "workflow.task_finalization_started" => 2, "task.before_transition" => 1,
                                    "workflow.task_finalization_completed" => 2 })
      ]
    },
    "order_payment_retry" => {
      # ... and between the runs, the retry's step back to pending and the
      # next transition into in_progress: the next run's, not the first's.
      ignored: [[1, "task.start_requested"], [2, "observability.task.enqueue"], [3, "task.before_transition"],
                [38, "step.initialize_requested"], [39, "task.before_transition"]],
      runs: [
        Expected.new(end: "pending", status: ["UNSET", nil], counts: [5, 1, 1],
                     attempts: [ok("validate_cart"), ["process_payment", "ERROR", PAYMENT_ERROR, 1]],
                     root_events: { "workflow.task_started" => 1, "workflow.viable_steps_discovered" => 4,
                                    "workflow.steps_execution_started" => 2,
                                    "workflow.steps_execution_completed" => 2, "workflow.no_viable_steps" => 2,
                                    "workflow.task_finalization_started" => 2, "task.before_transition" => 1,
                                    "task.pending" => 1, "workflow.task_finalization_completed" => 2 }),
        Expected.new(end: "completed", status: ["OK", nil], counts: [5, 5, 0],
                     attempts: [ok("process_payment", 2)] + ORDER_STEPS.drop(2).map { |s| ok(s) },
                     root_events: { "workflow.task_started" => 1, "workflow.viable_steps_discovered" => 8,
                                    "workflow.steps_execution_started" => 4,
                                    "workflow.steps_execution_completed" => 4, "workflow.no_viable_steps" => 2,
                                    "workflow.task_finalization_started" => 2, "task.before_transition" => 1,
                                    "workflow.task_finalization_completed" => 2 })
      ]
    },
    "order_inventory_exhausted" => {
      ignored: [[1, "task.start_requested"], [2, "observability.task.enqueue"], [3, "task.before_transition"],
                [49, "step.initialize_requested"], [50, "task.before_transition"]],
      runs: [
        Expected.new(end: "pending", status: ["UNSET", nil], counts: [5, 2, 1],
                     attempts: [ok("validate_cart"), ok("process_payment"),
                                ["update_inventory", "ERROR", "Insufficient stock", 1]],
                     root_events: { "workflow.task_started" => 1, "workflow.viable_steps_discovered" => 6,
                                    "workflow.steps_execution_started" => 3,
                                    "workflow.steps_execution_completed" => 3, "workflow.no_viable_steps" => 2,
                                    "workflow.task_finalization_started" => 2, "task.before_transition" => 1,
                                    "task.pending" => 1, "workflow.task_finalization_completed" => 2 }),
        Expected.new(end: "failed", status: %w[ERROR steps_in_error_state], counts: [5, 2, 1],
                     attempts: [["update_inventory", "ERROR", "Insufficient stock", 2]],
                     root_events: { "workflow.task_started" => 1, "workflow.viable_steps_discovered" => 2,
                                    "workflow.steps_execution_started" => 1,
                                    "workflow.steps_execution_completed" => 1,
                                    "workflow.task_finalization_started" => 2, "task.before_transition" => 1,
                                    "workflow.task_finalization_completed" => 2 })
      ]
    },
    "user_registration_pending" => {
      ignored: [],
      runs: [
        Expected.new(end: "pending", status: ["UNSET", nil], counts: [5, 4, 1],
                     attempts: %w[create_user_account setup_billing_profile initialize_preferences
                                  send_welcome_sequence].map { |s| ok(s) } +
                               [["update_user_status", "ERROR", "User not found for status update: 1", 1]],
                     root_events: { "workflow.task_started" => 1, "workflow.viable_steps_discovered" => 8,
                                    "workflow.steps_execution_started" => 4,
                                    "workflow.steps_execution_completed" => 4, "workflow.no_viable_steps" => 2,
                                    "workflow.task_finalization_started" => 2, "task.before_transition" => 1,
                                    "task.pending" => 1, "workflow.task_finalization_completed" => 2 })
      ]
    },
    "order_created_never_run" => {
      # Created and enqueued, never run: no run at all, open or finished.
      ignored: [[1, "task.start_requested"], [2, "observability.task.enqueue"]],
      runs: []
    }
  }.freeze

end

RSpec.describe "Lifecycle tracer: streams recorded from the real engine" do
  # Replays the stream; returns the runs (open ones too) and the events the
  # tracer ignored, as [seq, name].
  def replay(name)
    events = StreamReplayer.load(name)
    publisher = StreamReplayer.publisher_for(events)
    TaskerTraceNative.trace_lifecycle!(publisher)
    ignored = []
    index = 0
    before = 0
    note = lambda do
      now = TaskerTraceNative.lifecycle_stats[:events_ignored]
      ignored << [events[index - 1].seq, events[index - 1].name] if index.positive? && now > before
      before = now
      index += 1
    end
    StreamReplayer.replay(events, publisher, between: note)
    note.call
    [events, TaskerTraceNative.lifecycle_runs(include_open: true), ignored]
  end

  def shape(span)
    a = attrs(span)
    [a["step_name"], span[:status][:code], span[:status][:message], a["attempt_number"]]
  end

  def within?(time, span)
    time.between?(span[:start_time], span[:end_time])
  end

  it "has a fixture for every stream it checks" do
    expect(StreamReplayer.names).to match_array(RecordedStreams::STREAMS.keys)
  end

  RecordedStreams::STREAMS.each do |name, expected|
    describe name do
      let(:engine) { StreamReplayer.engine_tasks(name).fetch(0) }

      context "with workflow events subscribed (lifecycle_workflow_events)" do
        before { configure_lifecycle(lifecycle_workflow_events: true) }

        it "makes one trace per run: roots, statuses, counts, attempts, links" do
          events, runs, = replay(name)
          task_id = events.first.payload.fetch(:task_id)
          expect(runs.map { |r| r[:end] }).to eq(expected[:runs].map(&:end))
          runs.zip(expected[:runs]).each_with_index do |(run, want), i|
            r = root(run)
            expect(run[:task_id]).to eq(task_id)
            expect(r[:name]).to eq("tasker.task.execution")
            expect([r[:status][:code], r[:status][:message]]).to eq(want.status)
            expect(attrs(r).values_at("task_id", "task_name")).to eq([task_id, engine.fetch("name")])
            expect(attrs(r).values_at("total_steps", "completed_steps", "failed_steps")).to eq(want.counts)
            expect(attempts(run).map { |s| shape(s) }).to eq(want.attempts)
            expect(r[:links]).to eq(i.zero? ? [] : [{ trace_id: runs[i - 1][:trace_id], span_id: root(runs[i - 1])[:span_id] }])
            expect(run[:spans].map { |s| s[:span_id] }.uniq.size).to eq(run[:spans].size)
            expect(attempts(run).map { |s| s[:parent_span_id] }.uniq).to eq([r[:span_id]]) unless attempts(run).empty?
          end
          expect(runs.map { |r| r[:trace_id] }.uniq.size).to eq(runs.size)
        end

        it "puts every span event inside its span, and the next run's events on none of the finished one" do
          _, runs, ignored = replay(name)
          expect(ignored).to eq(expected[:ignored])
          runs.zip(expected[:runs]).each do |run, want|
            r = root(run)
            expect(event_names(r).tally).to eq(want.root_events)
            expect(r[:events]).to all(satisfy { |e| within?(e[:time], r) })
            # The root ends at its last event: the finalization after
            # task.completed (or task.initialize_requested) lies inside.
            expect(r[:end_time]).to eq(r[:events].map { |e| e[:time] }.max)
            expect(event_names(r).last).to eq("workflow.task_finalization_completed")
            attempts(run).each do |s|
              expect(event_names(s)).to eq(["step.before_handle"])
              expect(s[:events]).to all(satisfy { |e| within?(e[:time], s) })
            end
          end
        end

        it "orders starts and ends: runs one after the other, attempts inside their root" do
          _, runs, = replay(name)
          runs.each_cons(2) { |a, b| expect(root(a)[:end_time]).to be <= root(b)[:start_time] }
          runs.each do |run|
            r = root(run)
            starts = attempts(run).map { |s| s[:start_time] }
            expect(starts).to eq(starts.sort)
            attempts(run).each do |s|
              expect(s[:start_time]).to be >= r[:start_time]
              expect(s[:end_time]).to be <= r[:end_time]
              # The attempt's own measured duration, on the native clock.
              expect(attrs(s)["execution_duration"]).to be_within(1e-6).of(s[:duration])
              expect(attrs(s)["execution_duration"]).to be >= 0
            end
          end
        end

        it "agrees with the engine's record of the task" do
          _, runs, = replay(name)
          steps = engine.fetch("steps")
          executed = runs.flat_map { |run| attempts(run) }
          expect(executed.map { |s| attrs(s)["step_name"] }.tally)
            .to eq(steps.select { |s| s["processed"] || s["status"] == "error" }
                        .to_h { |s| [s["name"], s["attempts"]] }.reject { |_, n| n.zero? })
          steps.each do |step|
            last = executed.reverse.find { |s| attrs(s)["step_name"] == step["name"] }
            next if last.nil?

            expect(last[:status][:code]).to eq(step["status"] == "complete" ? "OK" : "ERROR")
            expect(attrs(last)["step_id"]).to eq(step["step_id"])
          end
          final = { "complete" => "completed", "error" => "failed", "pending" => "pending" }
          expect(runs.last[:end]).to eq(final.fetch(engine["status"])) unless runs.empty?
        end
      end

      context "with connected traces (the OpenTelemetry API loaded)" do
        include_context "with the OpenTelemetry API stand-in"

        # Replays the stream with a listener after the gem's on every step
        # event: per event, its name, step id, thread and the current span
        # then (what an HTTP client span made there would have as parent).
        def replay_connected(name)
          events = StreamReplayer.load(name)
          publisher = StreamReplayer.publisher_for(events)
          TaskerTraceNative.trace_lifecycle!(publisher)
          seen = []
          lock = Mutex.new
          events.map(&:name).uniq.grep(/\Astep\./).each do |n|
            publisher.subscribe(n) do |event|
              now = [event.id, event.payload[:step_id], Thread.current, OpenTelemetryStandIn.current_span_hex]
              lock.synchronize { seen << now }
            end
          end
          StreamReplayer.replay(events, publisher)
          [seen, TaskerTraceNative.lifecycle_runs(include_open: true)]
        end

        it "makes the same runs, each attempt current in its thread from its opening to its closing event" do
          seen, runs = replay_connected(name)
          expect(runs.map { |r| r[:end] }).to eq(expected[:runs].map(&:end))
          runs.zip(expected[:runs]).each do |run, want|
            expect(attrs(root(run)).values_at("total_steps", "completed_steps", "failed_steps")).to eq(want.counts)
            expect(attempts(run).map { |s| shape(s) }).to eq(want.attempts)
          end
          # Each step's events, split into attempts (an attempt opens with
          # step.execution_requested after a closing event, or first).
          closing = %w[step.completed step.failed]
          attempt_events = %w[step.execution_requested step.before_handle] + closing
          by_step = seen.select { |e| attempt_events.include?(e[0]) }.group_by { |(_, step)| step }
          spans = runs.flat_map { |r| attempts(r) }.sort_by { |s| s[:start_time] }.group_by { |s| attrs(s)["step_id"] }
          by_step.each do |step, list|
            tries = list.slice_when { |a, b| closing.include?(a[0]) && !closing.include?(b[0]) }.to_a
            expect(tries.size).to eq(spans.fetch(step).size), "step #{step}: one attempt per opening"
            tries.zip(spans.fetch(step)).each do |events, span|
              expect(events.map { |e| e[2] }.uniq.size).to eq(1), "an attempt's events come from one thread"
              open, closed = events.partition { |e| !closing.include?(e[0]) }
              expect([open.size, closed.size]).to all(be_positive)
              expect(open.map { |e| e[3] }).to all(eq(span[:span_id]))
              expect(closed.map { |e| e[3] }).to all(satisfy { |hex| hex != span[:span_id] })
            end
          end
          expect(stats).to include(open_runs: 0, events_orphaned: 0, events_late: 0, events_dropped: 0)
          expect(otel.errors).to be_empty
        end
      end

      it "makes the same runs with the default subscription, without the span-event-only events" do
        configure_lifecycle(lifecycle_workflow_events: false)
        _, runs, ignored = replay(name)
        expect(ignored).to eq(expected[:ignored].select { |_, n| n == "task.start_requested" })
        expect(runs.map { |r| r[:end] }).to eq(expected[:runs].map(&:end))
        runs.zip(expected[:runs]).each do |run, want|
          r = root(run)
          expect([r[:status][:code], r[:status][:message]]).to eq(want.status)
          expect(attrs(r).values_at("total_steps", "completed_steps", "failed_steps")).to eq(want.counts)
          expect(attempts(run).map { |s| shape(s) }).to eq(want.attempts)
          expect(event_names(r)).to eq(run[:end] == "pending" ? ["task.pending"] : [])
          # step.before_handle is not subscribed: attempts carry no events.
          expect(attempts(run).flat_map { |s| event_names(s) }).to eq([])
        end
        expect(stats).to include(open_runs: 0, events_orphaned: 0, events_late: 0, events_dropped: 0)
      end
    end
  end
end
