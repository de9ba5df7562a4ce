# frozen_string_literal: true

require "io/wait"

# Helpers for spec/robustness: running a scenario in a child process with a
# hard deadline, and reading the process's resident memory.
module RobustnessHelper
  # What a child process sent back when its block raised.
  class ChildError < StandardError; end

  # A child that did not finish in time (a deadlock or a hang).
  class ChildTimeout < StandardError; end

  # Runs the block in a forked child and returns what the block returned
  # (passed back with Marshal). A deadlock that holds the GVL cannot be
  # interrupted by Timeout inside the process that deadlocked, but the parent
  # can kill the child: if the child has not finished after `timeout` seconds
  # it is killed and ChildTimeout is raised. An exception in the child is
  # raised here as ChildError with the child's message and backtrace.
  def in_child(timeout:, gc_stress: false)
    reader, writer = IO.pipe
    reader.binmode
    writer.binmode
    pid = fork do
      reader.close
      GC.stress = gc_stress
      reply = begin
        [:ok, yield]
      rescue Exception => e
        [:error, "#{e.class}: #{e.message}", Array(e.backtrace).first(15)]
      end
      data = begin
        Marshal.dump(reply)
      rescue StandardError => e
        Marshal.dump([:error, "child result could not be marshalled: #{e.message}", []])
      end
      writer.write(data)
      writer.close
      exit!(0)
    end
    writer.close
    data = read_until(reader, pid, Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout)
    _, status = Process.wait2(pid)
    raise ChildError, "child exited with #{status.inspect} and sent nothing" if data.empty?

    tag, value, backtrace = Marshal.load(data)
    raise ChildError, "in child: #{value}\n  #{backtrace.join("\n  ")}" if tag == :error

    value
  ensure
    reader&.close unless reader&.closed?
  end

  # VmRSS of this process, in bytes.
  def rss_bytes
    File.foreach("/proc/self/status") do |line|
      return Integer(line.split[1]) * 1024 if line.start_with?("VmRSS:")
    end
    raise "VmRSS not found in /proc/self/status"
  end

  def backend
    Tasker::Telemetry::TraceBackend.instance
  end

  # The trace records of an export without the per-call metadata.
  def exported_traces
    backend.export.fetch(:traces)
  end

  private

  def read_until(reader, pid, deadline)
    data = +"".b
    loop do
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      if left <= 0
        Process.kill(:KILL, pid)
        Process.wait(pid)
        raise ChildTimeout, "child process did not finish in time (deadlock or hang); killed it"
      end
      next unless reader.wait_readable([left, 0.5].min)

      chunk = reader.read_nonblock(1 << 16, exception: false)
      break if chunk.nil?

      data << chunk unless chunk == :wait_readable
    end
    data
  end
end

RSpec.configure do |config|
  config.include RobustnessHelper, file_path: %r{spec/robustness/}
end
