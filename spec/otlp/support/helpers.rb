# frozen_string_literal: true

require "open3"
require "rbconfig"
require_relative "collector"
require_relative "test_ca"

# What the OTLP specs share: the otlp_* settings restored after each
# example, finished traces, and fresh Ruby processes for the environment.
module OtlpSpecHelpers
  OTLP_SETTINGS = TaskerTraceNative::Configuration::SETTINGS.grep(/\Aotlp_/).freeze
  LIB = File.expand_path("../../../lib", __dir__)

  def self.included(group)
    group.around do |example|
      saved = TaskerTraceNative.config.to_h.slice(*OTLP_SETTINGS)
      example.run
    ensure
      TaskerTraceNative.configure { |c| saved.each { |name, value| c.public_send(:"#{name}=", value) } }
    end
  end

  def configure_otlp(**settings)
    TaskerTraceNative.configure { |c| settings.each { |name, value| c.public_send(:"otlp_#{name}=", value) } }
  end

  def finished(id, **payload)
    backend = Tasker::Telemetry::TraceBackend.instance
    backend.handle_event("task.started", { task_id: id, task_name: "order", **payload })
    backend.handle_event("step.before_handle", { task_id: id, workflow_step_id: id })
    backend.handle_event("step.after_handle", { task_id: id, workflow_step_id: id })
    backend.handle_event("task.completed", { task_id: id })
  end

  def with_collector(*replies, **options)
    collector = OtlpSpecCollector.new(*replies, **options)
    yield collector
  ensure
    collector&.close
  end

  # Runs `script` in a new Ruby that loads the gem with exactly the OTEL_*
  # variables of `env` (none of this process's); returns stdout, stderr and
  # whether it succeeded. Killed after `deadline` seconds.
  def fresh_ruby(env, script, *args, deadline: 30)
    cleared = ENV.keys.grep(/\AOTEL_/).to_h { |k| [k, nil] }
    cmd = [RbConfig.ruby, "-I", LIB, "-r", "tasker_trace_native", "-e", script, *args]
    Open3.popen3(cleared.merge(env), *cmd) do |stdin, stdout, stderr, wait|
      stdin.close
      out = Thread.new { stdout.read }
      err = Thread.new { stderr.read }
      unless wait.join(deadline)
        Process.kill("KILL", wait.pid)
        raise "fresh Ruby did not finish in #{deadline} s"
      end
      [out.value, err.value, wait.value.success?]
    end
  end
end
