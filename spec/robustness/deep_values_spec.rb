# frozen_string_literal: true

require "spec_helper"
require "tmpdir"
require_relative "../rails/subprocess_helper"

# Values nested far deeper than any stack, and values that contain
# themselves, under an allowlisted lifecycle key and in a drop-in payload.
# Each case runs in a fresh process with a deadline: what is asserted is that
# the call returns, and that the thread afterwards does IO and lets other
# threads run (a wedged process never prints its report and is killed).
RSpec.describe "Deep and cyclic values" do
  include SubprocessHelper

  PRELUDE = <<~'RUBY'
    require "json"
    require "tmpdir"
    require "tasker_trace_native"

    def deep_hash(n)
      v = { "leaf" => "x" }
      n.times { v = { "k" => v } }
      v
    end

    def deep_array(n)
      v = ["x"]
      n.times { v = [v] }
      v
    end

    def cyclic_hash
      h = { "id" => 7 }
      h["self"] = h
      h
    end

    def cyclic_array
      a = [1]
      a << a
      a
    end

    # Where the child writes straight after the calls (the first IO after
    # them, at the top level, as a wedged thread showed it).
    PATH = File.join(Dir.tmpdir, "deep-values-#{Process.pid}")

    # After that write: IO again, and another thread gets to run.
    def healthy?(path = PATH)
      other = Thread.new { 21 * 2 }
      ok = File.read(path) == "ok" && other.join(10)&.value == 42
      File.delete(path)
      ok
    end
  RUBY

  # Runs `script` in a fresh Ruby whose standard output and error are files
  # (as a server's are; a wedged thread shows there at its first write), and
  # kills it after `timeout` seconds (within the example's own timeout; a
  # child still running when the example ends for any reason is killed too:
  # a wedged one ignores SIGTERM). Returns its last JSON line.
  def run_case(script, timeout: 45)
    Dir.mktmpdir do |dir|
      out = File.join(dir, "out")
      err = File.join(dir, "err")
      pid = Process.spawn(clean_env, RbConfig.ruby, "-I", SubprocessHelper::LIB, "-e", PRELUDE + script,
                          out: out, err: err, pgroup: true)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      status = nil
      begin
        until (status = Process.wait2(pid, Process::WNOHANG)&.last)
          if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
            Process.kill(:KILL, -pid)
            status = Process.wait2(pid).last
            break
          end
          sleep 0.05
        end
      ensure
        unless status
          Process.kill(:KILL, -pid)
          Process.wait2(pid)
        end
      end
      described = "exit: #{status.inspect}\n--- stdout\n#{File.read(out)}\n--- stderr\n#{File.read(err)[0, 4000]}"
      expect(status.success?).to be(true), described
      line = File.read(out).lines.reverse.find { |l| l.start_with?("{") }
      expect(line).not_to be_nil, described
      JSON.parse(line, symbolize_names: true)
    end
  end

  %w[deep_hash(100_000) deep_array(100_000) cyclic_hash cyclic_array].each do |value|
    it "returns from record_lifecycle_event with #{value} under an allowlisted key, and the thread stays healthy" do
      out = run_case(<<~RUBY)
        TaskerTraceNative.configure { |c| c.lifecycle_attributes = %w[order] }
        v = #{value}
        results = []
        results << TaskerTraceNative::Native.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: 1, order: v })
        results << TaskerTraceNative::Native.record_lifecycle_event("step.execution_requested",
                                                                     { task_id: 1, step_id: 2, order: v })
        File.write(PATH, "ok")
        healthy = healthy?
        runs = TaskerTraceNative.lifecycle_runs(include_open: true)
        json = Tasker::Telemetry::TraceBackend.instance.export_otlp(include_open: true)
        puts JSON.generate(results: results, healthy: healthy, runs: runs.size,
                           json_bytes: json.bytesize, spans: runs.sum { |r| r[:spans].size })
      RUBY
      expect(out[:results]).to all(be(true))
      expect(out[:healthy]).to be(true)
      expect(out[:runs]).to eq(1)
      expect(out[:spans]).to eq(2)
      # The value is cut, not copied whole: the export stays small.
      expect(out[:json_bytes]).to be < 200_000
    end

    it "returns from handle_event with #{value} in a drop-in payload, and the thread stays healthy" do
      out = run_case(<<~RUBY)
        backend = Tasker::Telemetry::TraceBackend.instance
        v = #{value}
        backend.handle_event("task.started", { task_id: 1, order: v })
        backend.handle_event("task.completed", { task_id: 1, nested: { deeper: v } })
        File.write(PATH, "ok")
        healthy = healthy?
        exported = backend.export
        json = backend.export_otlp
        puts JSON.generate(healthy: healthy, traces: exported[:traces].size, json_bytes: json.bytesize)
      RUBY
      expect(out[:healthy]).to be(true)
      expect(out[:traces]).to eq(1)
      expect(out[:json_bytes]).to be < 2_000_000
    end
  end

  # An id is spelled with its own to_s (as "task_#{v}" spells it): never for
  # a container too deep for that, whose event is refused instead.
  { "deep_hash(100_000)" => false, "deep_array(100_000)" => false,
    "cyclic_hash" => true, "cyclic_array" => true }.each do |value, taken|
    it "answers #{taken} from handle_event with #{value} as the task id, and the thread stays healthy" do
      out = run_case(<<~RUBY)
        backend = Tasker::Telemetry::TraceBackend.instance
        v = #{value}
        results = 2.times.map { backend.handle_event("task.started", { task_id: v }) }
        File.write(PATH, "ok")
        healthy = healthy?
        puts JSON.generate(results: results, healthy: healthy, traces: backend.export[:traces].size)
      RUBY
      expect(out[:results]).to eq([taken, taken])
      expect(out[:healthy]).to be(true)
      expect(out[:traces]).to eq(taken ? 1 : 0)
    end

    it "refuses, counted, a lifecycle event with #{value} as its task or step id; the thread stays healthy" do
      out = run_case(<<~RUBY)
        v = #{value}
        results = [TaskerTraceNative.record_lifecycle_event("task.start_requested", { to_state: "in_progress", task_id: v }),
                   TaskerTraceNative.record_lifecycle_event("step.execution_requested", { task_id: 1, step_id: v })]
        File.write(PATH, "ok")
        healthy = healthy?
        puts JSON.generate(results: results, healthy: healthy,
                           refused: TaskerTraceNative.lifecycle_stats[:events_refused])
      RUBY
      expect(out[:results]).to eq([false, false])
      expect(out[:healthy]).to be(true)
      expect(out[:refused]).to eq(2)
    end
  end
end
