# frozen_string_literal: true

# What every benchmark process loads: the libraries a Tasker app has loaded
# (ActiveSupport with its Time extensions, concurrent-ruby), the native gem
# from this checkout and the pure-Ruby reference backend from spec/support.

ROOT = File.expand_path("..", __dir__)
$LOAD_PATH.unshift(File.join(ROOT, "lib"))

require "json"
require "active_support"
require "active_support/core_ext/object/deep_dup"
require "active_support/core_ext/time"
require "concurrent"
# The no-op floor is a test hook (TaskerTraceNative::TestHooks.noop).
ENV["TASKER_TRACE_NATIVE_TEST_HOOKS"] = "1"
require "tasker_trace_native"
require File.join(ROOT, "spec", "support", "reference_trace_backend")

# Rails' default: Time.current is UTC.
Time.zone_default = Time.find_zone!("UTC")
Time.zone = "UTC"

module TaskerTraceNative
  module Bench
    module_function

    def native_backend
      Tasker::Telemetry::TraceBackend.instance
    end

    # The reference as the original engine behaves (references kept, second
    # timestamps parsed back for durations).
    def reference_backend
      TaskerTraceNative::Spec::ReferenceTraceBackend.new
    end

    def backend(name)
      case name
      when "native" then native_backend
      when "reference" then reference_backend
      else raise ArgumentError, "unknown backend #{name.inspect} (native or reference)"
      end
    end

    # What a task's events carry that comes from its records: Strings loaded
    # from the database are objects of their own for each task (not shared
    # literals), shared by that task's events.
    def task_data(task_id)
      {
        name: String.new("order_fulfillment"),
        customer: "customer-#{task_id % 997}",
        region: String.new("eu-west-1"),
        tags: [String.new("web"), String.new("priority"), String.new("eu")]
      }
    end

    # A realistic Tasker payload: ids, a name, and a nested context with a few
    # strings, numbers and an array. A new Hash each call, as each published
    # event carries its own.
    def payload(task_id, data = task_data(task_id))
      {
        task_id: task_id,
        task_name: data[:name],
        context: {
          order_id: 100_000 + task_id,
          customer: data[:customer],
          amount: 129.95,
          priority: 3,
          tags: data[:tags],
          region: data[:region]
        }
      }
    end

    LIFECYCLE = %w[task.started step.before_handle step.after_handle task.completed].freeze

    # One whole task: start, two spans, finish, each event with its own payload.
    def lifecycle(backend, task_id)
      data = task_data(task_id)
      LIFECYCLE.each { |name| backend.handle_event(name, payload(task_id, data)) }
    end

    def rss_bytes
      File.read("/proc/self/status")[/^VmRSS:\s+(\d+)\s+kB/, 1].to_i * 1024
    end

    def monotonic_ns
      Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)
    end

    def full_gc
      GC.start(full_mark: true, immediate_sweep: true)
    end

    def median(values)
      sorted = values.sort
      mid = sorted.size / 2
      sorted.size.odd? ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2.0
    end
  end
end
