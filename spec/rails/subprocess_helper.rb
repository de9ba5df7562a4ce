# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"

# Runs Ruby (or any command) in a fresh process with a hard deadline, for the
# specs that need a process of their own: booting Rails, running Bundler.
module SubprocessHelper
  CHECKOUT = File.expand_path("../..", __dir__)
  LIB = File.join(CHECKOUT, "lib")

  # What the child printed, and how it ended.
  Result = Struct.new(:stdout, :stderr, :status, keyword_init: true) do
    def success?
      status.success?
    end

    # The child's last stdout line, parsed as JSON with Symbol keys.
    def json
      line = stdout.lines.reverse.find { |l| l.start_with?("{") }
      raise "no JSON line in the child's output:\n#{describe}" unless line

      JSON.parse(line, symbolize_names: true)
    end

    def describe
      "exit: #{status.inspect}\n--- stdout\n#{stdout}\n--- stderr\n#{stderr}"
    end
  end

  # The environment for a child: without whatever Bundler or the caller put in
  # RUBYOPT/RUBYLIB, so the child loads only what it is told to.
  def clean_env(extra = {})
    unset = ENV.keys.grep(/\A(BUNDLE_|BUNDLER_|RUBYOPT\z|RUBYLIB\z|GEM_HOME\z|GEM_PATH\z)/)
    unset.to_h { |k| [k, nil] }.merge(extra)
  end

  # Runs `argv` in `chdir` and returns a Result; kills it after `timeout`
  # seconds (then the status is that of a killed process).
  def run_command(argv, env: {}, chdir: CHECKOUT, timeout: 180)
    Open3.popen3(clean_env(env), *argv, chdir: chdir, pgroup: true) do |stdin, out, err, waiter|
      stdin.close
      readers = [Thread.new { out.read }, Thread.new { err.read }]
      unless waiter.join(timeout)
        Process.kill(:KILL, -waiter.pid)
        waiter.join
      end
      Result.new(stdout: readers[0].value, stderr: readers[1].value, status: waiter.value)
    end
  end

  # Runs a Ruby script (a String) with this checkout's lib/ on the load path.
  def run_ruby(script, env: {}, chdir: CHECKOUT, timeout: 180, load_path: [LIB])
    argv = [RbConfig.ruby, *load_path.flat_map { |p| ["-I", p] }, "-e", script]
    run_command(argv, env: env, chdir: chdir, timeout: timeout)
  end
end
