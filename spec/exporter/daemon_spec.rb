# frozen_string_literal: true

require "spec_helper"
require "json"
require "tmpdir"
require_relative "../rails/subprocess_helper"

# Process.daemon forks without Process._fork, and its parent exits at once
# without exporting. The events waiting (a run's opening, its step events)
# are read before it, and the daemon exports what finished before it (a
# fork child would leave that to its parent).
RSpec.describe "Background exporter: Process.daemon" do
  include SubprocessHelper

  # The console exporter drawing to `out` (defined first), its schedule far
  # off, and `publish`, which hands an event to the tracer's listener.
  DAEMON_PRELUDE = <<~'RUBY'
    require "json"
    require "tasker_trace_native"
    TaskerTraceNative.configure do |c|
      c.exporter = :console
      c.console_output = out
      c.export_schedule_delay = 600
    end
    event = Struct.new(:id, :payload)
    publish = ->(name, payload) { TaskerTraceNative::Lifecycle::LISTENER.call(event.new(name, payload)) }
  RUBY

  it "exports from the daemon the runs that finished before it, and the steps that waited", timeout: 90 do
    Dir.mktmpdir do |dir|
      out = File.join(dir, "console.log")
      marker = File.join(dir, "done.json")
      script = "out, marker = ARGV\n" + DAEMON_PRELUDE + <<~'RUBY'
        publish.call("task.start_requested", { task_id: 1, task_name: "finished_before", to_state: "in_progress" })
        publish.call("task.completed", { task_id: 1 })
        publish.call("task.start_requested", { task_id: 2, task_name: "finished_after", to_state: "in_progress" })
        publish.call("step.execution_requested", { task_id: 2, step_id: 20, step_name: "waiting_step" })
        publish.call("step.completed", { task_id: 2, step_id: 20 })
        waiting = TaskerTraceNative::TestHooks.waiting_events(TaskerTraceNative::Lifecycle::PENDING)
        Process.daemon(true, true)
        publish.call("task.completed", { task_id: 2 })
        result = TaskerTraceNative.flush(timeout: 10)
        stats = TaskerTraceNative.exporter_stats
        File.write("#{marker}.tmp", JSON.generate(waiting: waiting, sent: result[:sent], discarded: stats[:inherited_discarded]))
        File.rename("#{marker}.tmp", marker)
      RUBY
      argv = [RbConfig.ruby, "-I", SubprocessHelper::LIB, "-e", script, out, marker]
      result = run_command(argv, env: { "OTEL_TRACES_EXPORTER" => nil }, timeout: 60)
      expect(result).to be_success, result.describe
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 60
      sleep 0.05 until File.exist?(marker) || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      expect(File.exist?(marker)).to be(true), "the daemon never finished"
      done = JSON.parse(File.read(marker), symbolize_names: true)
      expect(done).to eq(waiting: 3, sent: 2, discarded: 0) # task 2's opening and its two step events
      drawn = File.read(out)
      expect(drawn).to include("finished_before (task 1)", "finished_after (task 2)", "waiting_step")
    end
  end

  it "leaves to the grandparent what it finished when a fork child calls Process.daemon", timeout: 90 do
    Dir.mktmpdir do |dir|
      outs = %w[parent daemon].map { |who| File.join(dir, "#{who}.log") }
      marker = File.join(dir, "done.json")
      script = "out, daemon_out, marker = ARGV\n" + DAEMON_PRELUDE + <<~'RUBY'
        publish.call("task.start_requested", { task_id: 1, task_name: "the_grandparents", to_state: "in_progress" })
        publish.call("task.completed", { task_id: 1 })
        pid = fork do
          # The child daemonizes before its exporter ever started.
          Process.daemon(true, true)
          TaskerTraceNative.configure { |c| c.console_output = daemon_out }
          publish.call("task.start_requested", { task_id: 2, task_name: "the_daemons", to_state: "in_progress" })
          publish.call("task.completed", { task_id: 2 })
          result = TaskerTraceNative.flush(timeout: 10)
          stats = TaskerTraceNative.exporter_stats
          File.write("#{marker}.tmp", JSON.generate(sent: result[:sent], discarded: stats[:inherited_discarded]))
          File.rename("#{marker}.tmp", marker)
        end
        Process.wait(pid)
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 60
        sleep 0.05 until File.exist?(marker) || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        TaskerTraceNative.flush(timeout: 10)
      RUBY
      argv = [RbConfig.ruby, "-I", SubprocessHelper::LIB, "-e", script, *outs, marker]
      result = run_command(argv, env: { "OTEL_TRACES_EXPORTER" => nil }, timeout: 80)
      expect(result).to be_success, result.describe
      expect(File.exist?(marker)).to be(true), "the daemon never finished"
      expect(JSON.parse(File.read(marker), symbolize_names: true)).to eq(sent: 1, discarded: 1)
      parent, daemon = outs.map { |f| File.read(f) }
      expect(parent).to include("the_grandparents (task 1)")
      expect(daemon).to include("the_daemons (task 2)")
      expect(daemon).not_to include("the_grandparents")
    end
  end
end
