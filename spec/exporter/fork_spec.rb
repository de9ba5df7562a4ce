# frozen_string_literal: true

require "spec_helper"
require_relative "exporter_helper"

# A parent with a running exporter forks 20 children, as a preloading server
# does. The parent's finished traces are still waiting in its store when it
# forks (a 60 s schedule delay), so every child inherits them: each child's
# exporter must leave them to the parent.
RSpec.describe "Background exporter: fork" do
  # At normal priority: 21 processes send to it at once, and a loaded machine
  # must not make it slower than the flushes wait.
  let(:receiver) { ExporterSpecHelper::Receiver.new(nice: false) }

  after { receiver.close }

  def run_forking_parent(child_exit)
    script = <<~RUBY
      50.times { |i| lifecycle(i + 1) }          # the parent's own, finished
      B.handle_event("task.started", { task_id: 999 }) # open at the fork
      parent_stats = TaskerTraceNative.exporter_stats
      pids = Array.new(20) do |c|
        fork do
          base = 100_000 * (c + 1)
          10.times { |i| lifecycle(base + i) }
          B.handle_event("task.completed", { task_id: 999 }) if c.zero?
          # The child's exporter thread removes what the parent left as it starts.
          deadline = now + 30
          stats = TaskerTraceNative.exporter_stats
          while stats[:inherited_discarded].zero? && now < deadline
            sleep 0.01
            stats = TaskerTraceNative.exporter_stats
          end
          report(child: c, pid: Process.pid, running: stats[:running],
                 inherited_discarded: stats[:inherited_discarded])
          #{child_exit}
        end
      end
      statuses = pids.map { |pid| Process.wait2(pid).last.exitstatus }
      flushed = TaskerTraceNative.flush(timeout: 45)
      report(parent: Process.pid, parent_running: parent_stats[:running], statuses: statuses, flushed: flushed)
    RUBY
    result = run_child(script, env: exporter_env(receiver, delay_ms: 60_000), timeout: 150)
    expect_success(result)
    reports(result)
  end

  def expect_every_trace_once(lines, child_flushes: 0)
    parent = lines.find { |l| l.key?(:parent) }
    children = lines.select { |l| l.key?(:child) }
    expect(parent[:parent_running]).to be(true)
    expect(parent[:statuses]).to all(eq(0))
    expect(parent[:flushed]).to eq(sent: 50, failed: 0, error: nil)
    expect(children.size).to eq(20)
    expect(children.map { |c| c[:running] }).to all(be(true))
    # The parent's 50 finished traces, left to the parent by each child.
    expect(children.map { |c| c[:inherited_discarded] }).to all(eq(50))
    # A child that flushes before exit! reports what its flush delivered.
    flushes = lines.select { |l| l.key?(:child_flush) }
    expect(flushes.size).to eq(child_flushes)
    expect(flushes.map { |l| l[:flushed] }).to all(include(failed: 0, error: nil))

    by_key = receiver.trace_keys.group_by(&:first).transform_values { |v| v.map(&:last) }
    expect(by_key.values.map(&:size).uniq).to eq([1]), "a trace arrived twice"
    parent_keys = (1..50).map { |i| "task_#{i}" }
    expect(parent_keys.map { |k| by_key[k] }).to all(eq([parent[:parent]]))
    children.each do |c|
      keys = (0...10).map { |i| "task_#{100_000 * (c[:child] + 1) + i}" }
      expect(keys.map { |k| by_key[k] }).to all(eq([c[:pid]]))
    end
    # Open at the fork, finished in child 0 only: child 0's.
    expect(by_key["task_999"]).to eq([children.find { |c| c[:child].zero? }[:pid]])
    expect(by_key.size).to eq(50 + 200 + 1)
  end

  it "exports every child's traces from that child and none of the parent's twice (normal exit)",
     timeout: 180 do
    expect_every_trace_once(run_forking_parent("exit(0)"))
  end

  it "does the same when the children leave through exit! after TaskerTraceNative.flush", timeout: 180 do
    child_exit = <<~RUBY
      report(child_flush: c, flushed: TaskerTraceNative.flush(timeout: 45))
      exit!(0)
    RUBY
    expect_every_trace_once(run_forking_parent(child_exit), child_flushes: 20)
  end

  it "loses what was not exported when a child leaves through exit! without flushing" do
    script = <<~'RUBY'
      lifecycle(1)
      TaskerTraceNative.flush(timeout: 5)
      pid = fork do
        lifecycle(2)
        exit!(0)
      end
      Process.wait(pid)
      report(done: true)
      exit!(0)
    RUBY
    result = run_child(script, env: exporter_env(receiver, delay_ms: 60_000))
    expect_success(result)
    expect(receiver.trace_keys.map(&:first)).to eq(["task_1"])
  end

  it "counts in a child's exporter_stats only what the child sampled out and cut" do
    script = <<~'RUBY'
      TaskerTraceNative.configure { |c| c.attribute_value_length_limit = 5 }
      3.times do |i|
        B.handle_event("task.started", { task_id: i + 1, task_name: "x" * 50 })
        B.handle_event("task.completed", { task_id: i + 1 })
      end
      TaskerTraceNative.flush(timeout: 10) # the names are cut as they are encoded
      TaskerTraceNative.configure { |c| c.sample_ratio = 0.0 }
      4.times { |i| lifecycle(100 + i) }
      TaskerTraceNative.flush(timeout: 10) # sampled out as they are taken
      counts = ->(s) { { sampled_out: s[:sampled_out], cut: s[:limit_cuts][:attribute_values] } }
      parent = counts.(TaskerTraceNative.exporter_stats)
      pid = fork do
        first = counts.(TaskerTraceNative.exporter_stats)
        2.times { |i| lifecycle(200 + i) }
        TaskerTraceNative.flush(timeout: 10)
        report(child_first: first, child_after: counts.(TaskerTraceNative.exporter_stats))
        exit!(0)
      end
      Process.wait(pid)
      report(parent: parent, parent_after: counts.(TaskerTraceNative.exporter_stats))
    RUBY
    result = run_child(script, env: exporter_env(receiver, delay_ms: 60_000), timeout: 90)
    expect_success(result)
    got = reports(result).reduce({}, :merge)
    expect(got[:parent][:sampled_out]).to eq(4)
    expect(got[:parent][:cut]).to be >= 3
    expect(got[:child_first]).to eq(sampled_out: 0, cut: 0)
    expect(got[:child_after]).to eq(sampled_out: 2, cut: 0)
    expect(got[:parent_after]).to eq(got[:parent])
  end

  it "leaves the parent's finished traces to it when a child's first call is push_otlp" do
    script = <<~RUBY
      5.times { |i| lifecycle(i + 1) } # the parent's own, finished
      pid = fork do
        # Before this process's exporter started: the parent's are not its own to push.
        pushed = B.push_otlp(timeout: 5)
        report(child: Process.pid, pushed: pushed, discarded: TaskerTraceNative.exporter_stats[:inherited_discarded])
        exit!(0)
      end
      Process.wait(pid)
      report(parent: Process.pid, flushed: TaskerTraceNative.flush(timeout: 10))
    RUBY
    result = run_child(script, env: exporter_env(receiver, delay_ms: 60_000), timeout: 90)
    expect_success(result)
    child, parent = reports(result).partition { |l| l.key?(:child) }.map(&:first)
    expect(child[:pushed]).to include(sent: 0, error: nil)
    expect(child[:discarded]).to eq(5)
    expect(parent[:flushed]).to eq(sent: 5, failed: 0, error: nil)
    by_key = receiver.trace_keys.group_by(&:first)
    expect(by_key.keys.sort).to eq((1..5).map { |i| "task_#{i}" }.sort)
    expect(by_key.values.map(&:size).uniq).to eq([1]), "a trace arrived twice"
  end
end
