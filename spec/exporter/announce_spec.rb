# frozen_string_literal: true

require "spec_helper"
require_relative "exporter_helper"

# Drops announced: a collector that answers 503 for 3 minutes of the
# announcer's clock (a fake clock, moved by a test hook), then 200. The
# child records runs (more than lifecycle_max_finished_runs: the oldest are
# dropped while the collector is down) and flushes every 10 fake seconds;
# the lines reach Ruby (here standard error, no Rails) at the flush.
RSpec.describe "drops announced" do
  include ExporterSpecHelper

  # A child with the exporter on, sending to a receiver that answers 503
  # (SCHEDULE_DELAY defined first), its standard error in `err`.
  ANNOUNCE_PRELUDE = <<~'RUBY'
    require "json"
    require "stringio"
    module RSpec; def self.configure; end; end # the helper's hooks are the spec process's
    require_relative "spec/exporter/exporter_helper"
    require "tasker_trace_native"

    receiver = ExporterSpecHelper::Receiver.new([{ status: 503 }])
    TaskerTraceNative.configure do |c|
      c.exporter = :otlp
      c.otlp_endpoint = "http://127.0.0.1:#{receiver.port}"
      c.otlp_protocol = "http/json"
      c.export_schedule_delay = SCHEDULE_DELAY
      c.export_timeout = 2
      c.lifecycle_max_finished_runs = 5
    end
    err = StringIO.new
    $stderr = err
  RUBY

  ANNOUNCE_SCRIPT = "SCHEDULE_DELAY = 600\n" + ANNOUNCE_PRELUDE + <<~'RUBY'
    lines = []
    task = 0
    runs = lambda do |n|
      n.times do
        task += 1
        TaskerTraceNative::Native.record_lifecycle_event("task.start_requested", { task_id: task, to_state: "in_progress" })
        TaskerTraceNative::Native.record_lifecycle_event("task.completed", { task_id: task })
      end
    end
    collect = lambda do |t|
      err.string.lines.each { |l| lines << [t, l.chomp] }
      err.truncate(0)
      err.rewind
    end
    (0..180).step(10) do |t|
      runs.call(8)
      TaskerTraceNative.flush(timeout: 10)
      collect.call(t)
      TaskerTraceNative::TestHooks.advance_announcer_clock(10)
    end
    receiver.mode = :ok
    runs.call(2)
    # On a busy machine one flush may time out before the receiver (a Ruby
    # thread) answers: flush until the exporter delivered, or a minute.
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 60
    until TaskerTraceNative.flush(timeout: 10)[:failed].zero? ||
          Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    end
    collect.call(190)
    $stderr = STDERR
    puts JSON.generate(lines: lines, dropped: TaskerTraceNative.exporter_stats[:dropped_traces])
  RUBY

  # The failure a warning names: the collector's 503, or, on a machine
  # so busy that the receiver (a Ruby thread) did not answer within
  # export_timeout, the timeout.
  FAILED = %r{(HTTP 503 from |timeout: \w+ \(|timed out after \d+ attempt\(s\) \()http://127\.0\.0\.1:\d+/v1/}.freeze

  it "says so at the start, at most once a minute, and once on recovery", timeout: 120 do
    r = run_ruby(ANNOUNCE_SCRIPT, env: { "TASKER_TRACE_NATIVE_TEST_HOOKS" => "1", "OTEL_TRACES_EXPORTER" => nil })
    expect(r).to be_success, r.describe
    lines = r.json[:lines]
    expect(lines).not_to be_empty, r.stdout
    expect(lines.map(&:last)).to all(start_with("tasker_trace_native: "))
    *warnings, recovery = lines
    expect(warnings.first[0]).to eq(0)
    # "retrying every" is the backoff's current wait, not the schedule
    # delay (600 s): after the first failure 1 s (times a jitter of 0.5 to
    # 1.0, shown in whole seconds, at least 1), doubling to at most 60 s.
    expect(warnings.first[1]).to match(/#{FAILED}.*\(retrying every 1 s\)\z/)
    waits = warnings.map { |(_, line)| line[/\(retrying every (\d+) s\)\z/, 1]&.to_i }
    expect(waits).to all(be_between(1, 60))
    # A line is shown with the fake time of the flush that handed it to
    # Ruby. On a busy machine a background retry (on the real clock) may
    # make one between a flush and the clock's next step: it is handed over
    # at the next flush, one step (10 s) late, never more.
    warnings.each_cons(2) { |(a, _), (b, _)| expect(b - a).to be >= 50 }
    expect(warnings.size).to be_between(2, 4)
    expect(warnings.map(&:last)).to all(match(FAILED))
    expect(warnings.drop(1).map(&:last)).to all(match(/\Atasker_trace_native: [\d,]+ traces dropped in the last \d+ s: /))
    expect(recovery[0]).to eq(190)
    expect(recovery[1]).to match(/\Atasker_trace_native: exports recovered: \d+ traces delivered; [\d,]+ traces dropped since the last warning\z/)
    expect(r.json[:dropped]).to be > 0
  end

  # One run (its opening and its end), and the monotonic clock.
  RUN_AND_CLOCK = <<~'RUBY'
    run = lambda do |task|
      TaskerTraceNative::Native.record_lifecycle_event("task.start_requested", { task_id: task, to_state: "in_progress" })
      TaskerTraceNative::Native.record_lifecycle_event("task.completed", { task_id: task })
    end
    now = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
  RUBY

  RECOVERY_SCRIPT = "SCHEDULE_DELAY = 0.05\n" + ANNOUNCE_PRELUDE + RUN_AND_CLOCK + <<~'RUBY'
    run.call(1)
    deadline = now.call + 30
    sleep 0.02 until TaskerTraceNative.exporter_stats[:failed_exports].positive? || now.call > deadline
    # Backing off, the exporter takes nothing: the tracer drops the oldest.
    (2..45).each { |task| run.call(task) }
    dropped = TaskerTraceNative.exporter_stats[:dropped_traces]
    receiver.mode = :ok
    sleep 0.05 until TaskerTraceNative.exporter_stats[:exported_traces] >= 6 || now.call > deadline
    TaskerTraceNative.exporter_stats # hands the lines to Ruby
    $stderr = STDERR
    puts JSON.generate(lines: err.string.lines.map(&:chomp), dropped: dropped)
  RUBY

  it "tells on recovery what was dropped while the exporter backed off, without a flush", timeout: 120 do
    r = run_ruby(RECOVERY_SCRIPT, env: { "OTEL_TRACES_EXPORTER" => nil })
    expect(r).to be_success, r.describe
    dropped = r.json[:dropped]
    expect(dropped).to be > 20 # of 45 runs, beyond the tracer's bounds
    recovery = r.json[:lines].grep(/exports recovered/)
    expect(recovery.size).to eq(1), r.json[:lines].inspect
    expect(recovery.first)
      .to match(/exports recovered: \d+ traces? delivered; #{dropped} traces dropped since the last warning\z/)
  end

  FORK_SCRIPT = "SCHEDULE_DELAY = 0.05\n" + ANNOUNCE_PRELUDE + RUN_AND_CLOCK + <<~'RUBY'
    failing = lambda do
      deadline = now.call + 30
      sleep 0.02 until TaskerTraceNative.exporter_stats[:failed_exports].positive? || now.call > deadline
    end
    run.call(1)
    failing.call
    (2..45).each { |task| run.call(task) }
    parent_dropped = TaskerTraceNative.exporter_stats[:dropped_traces]
    err.truncate(0)
    err.rewind
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      at_fork = TaskerTraceNative.exporter_stats[:dropped_traces]
      run.call(1001)
      failing.call # the child's own exporter, against the same collector
      (1002..1020).each { |task| run.call(task) }
      dropped = TaskerTraceNative.exporter_stats[:dropped_traces]
      TaskerTraceNative.flush(timeout: 5)
      writer.puts JSON.generate(at_fork: at_fork, dropped: dropped, lines: err.string.lines.map(&:chomp))
      writer.close
      exit!(0)
    end
    writer.close
    child = JSON.parse(reader.read, symbolize_names: true)
    Process.wait(pid)
    $stderr = STDERR
    puts JSON.generate(parent_dropped: parent_dropped, child: child)
  RUBY

  it "counts and tells in a fork child only what the child dropped", timeout: 120 do
    r = run_ruby(FORK_SCRIPT, env: { "OTEL_TRACES_EXPORTER" => nil })
    expect(r).to be_success, r.describe
    expect(r.json[:parent_dropped]).to be > 20 # of 45 runs, beyond the tracer's bounds
    child = r.json[:child]
    expect(child[:at_fork]).to eq(0)
    # Of its own 20 runs, beyond the tracer's bound of 5.
    expect(child[:dropped]).to be_between(1, 20)
    counts = child[:lines].filter_map { |l| l[/([\d,]+) traces? dropped/, 1]&.delete(",")&.to_i }
    expect(counts).to all(be <= 20), child[:lines].inspect
  end
end
