# frozen_string_literal: true

require "spec_helper"
require "tmpdir"
require_relative "../rails/subprocess_helper"

# The console exporter (`exporter = :console`, OTEL_TRACES_EXPORTER=console):
# each finished run drawn as a waterfall from the exporter's native thread.
# Run in child processes: the spec process keeps its exporter off.
RSpec.describe "the console exporter" do
  include SubprocessHelper

  CONSOLE_CHILD = File.expand_path("child.rb", __dir__)
  CONSOLE_GOLDEN = File.expand_path("../fixtures/console/order_payment_retry.txt", __dir__)

  def child(path, *args)
    run_command([RbConfig.ruby, "-I", SubprocessHelper::LIB, CONSOLE_CHILD, path, *args],
                env: { "TASKER_TRACE_NATIVE_TEST_HOOKS" => "1", "OTEL_TRACES_EXPORTER" => nil })
  end

  it "draws a recorded real stream as the golden file shows", timeout: 120 do
    Dir.mktmpdir do |dir|
      path = File.join(dir, "console.log")
      r = child(path, "stream", "order_payment_retry")
      expect(r).to be_success, r.describe
      expect(r.json).to include(sent: 2, failed: 0, error: nil)
      File.write(CONSOLE_GOLDEN, File.read(path)) if ENV["UPDATE_GOLDEN"] == "1"
      expect(File.read(path)).to eq(File.read(CONSOLE_GOLDEN))
    end
  end

  it "writes whole lines when 4 processes write at once", timeout: 180 do
    Dir.mktmpdir do |dir|
      path = File.join(dir, "console.log")
      children = Array.new(4) { Thread.new { child(path, "many", "150") } }.map(&:value)
      children.each { |r| expect(r).to be_success, r.describe }
      expect(children.map { |r| r.json[:sent] }).to eq([151] * 4)
      lines = File.read(path).lines
      expect(lines.last).to end_with("\n")
      header = /\Ajob_\d+ \(task \d+\)  trace \h{32}  completed OK  \d+\.\d ms\n\z/
      axis = /\A {43}│0 +\d+\.\d ms\n\z/
      row = /\A[✓✗·] .{30} +(\d+\.\d ms|open) │[ ▏▎▍▌▋▊▉█]*\n\z/
      message = /\A {6}step \d+ failed with a second line\n\z/
      root_row = /\A✓ job_\d+ \(task \d+\) +\d+\.\d ms │█+\n\z/
      odd = lines.reject { |l| [header, axis, row, message, root_row].any? { |re| re.match?(l) } }
      expect(odd).to eq([])
      expect(lines.grep(header).size).to eq(4 * 151)
      # Every process's rows: 150 runs of 1 + 3 spans, one of 1 + 80.
      expect(lines.grep(row).size).to eq(4 * ((150 * 4) + 81))
      pids = lines.grep(header).map { |l| l[/\Ajob_(\d+)/, 1].to_i }.tally
      expect(pids.keys).to match_array(children.map { |r| r.json[:pid] })
    end
  end

  it "takes its settings and refuses a path it cannot write" do
    expect { TaskerTraceNative.configure { |c| c.console_output = "/nonexistent-dir/out.log" } }
      .to raise_error(ArgumentError, %r{\Aconsole_output must be the path of a file to append to, or nil \(standard output\) \(got "/nonexistent-dir/out\.log"\): })
    expect { TaskerTraceNative.configure { |c| c.exporter = [:otlp, :zipkin] } }
      .to raise_error(ArgumentError, "exporter must be :none, :otlp, :console or [:otlp, :console] (got [:otlp, :zipkin])")
  end

  it "is turned on by OTEL_TRACES_EXPORTER=console, or otlp,console for both" do
    script = 'require "tasker_trace_native"; p TaskerTraceNative.config.exporter'
    expect(run_ruby(script, env: { "OTEL_TRACES_EXPORTER" => "console" }).stdout).to eq(":console\n")
    expect(run_ruby(script, env: { "OTEL_TRACES_EXPORTER" => "otlp,console" }).stdout).to eq("[:otlp, :console]\n")
  end
end
