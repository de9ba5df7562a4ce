# frozen_string_literal: true

module TaskerTraceNative
  # Keeps `TraceBackend.instance` one object for the life of the process.
  # Tasker's own file says `include Singleton`, and including Singleton again
  # resets the class's instance: loaded after an instance exists (gem first, or
  # a second load), it would make `.instance` hand out a new object.
  module SingleInstance
    def instance
      @tasker_trace_native_instance ||= super
    end
  end
end
