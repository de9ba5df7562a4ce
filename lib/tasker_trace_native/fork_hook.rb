# frozen_string_literal: true

module TaskerTraceNative
  # Reads the events waiting in Lifecycle::PENDING before this process
  # forks, so that the child starts from the tracer as it was, as it would
  # have without the waiting (the extension drops, in a child, what its
  # parent left waiting: the parent reads it). Prepended to Process's
  # singleton class, where Ruby's own `_fork` is the one method every fork
  # (Process.fork, Kernel#fork, IO.popen("-")) goes through.
  #
  # `Process.daemon` forks without `_fork`, and its parent exits at once
  # without exporting: the events waiting are read before, and the daemon
  # exports what finished before it (a fork child leaves that to its
  # parent), but what its parent held of its own parent's, still to be
  # removed, which that ancestor exports.
  module ForkHook
    def _fork
      begin
        Native.read_waiting_events
      rescue StandardError
        nil # nothing of the tracer stops a fork
      end
      super
    end

    def daemon(*args)
      before = nil
      begin
        Native.read_waiting_events
        # A fork child's copies of its own parent's finished traces stay
        # that parent's, in the daemon too.
        before = Native.unowned_before
      rescue StandardError
        nil
      end
      result = super
      begin
        Native.adopt_inherited(before)
      rescue StandardError
        nil
      end
      result
    end
  end
end

Process.singleton_class.prepend(TaskerTraceNative::ForkHook) if Process.respond_to?(:_fork)
