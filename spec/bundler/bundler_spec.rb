# frozen_string_literal: true

require "tmpdir"
require "fileutils"
require_relative "../rails/subprocess_helper"

# A throwaway application directory whose Gemfile takes this checkout by
# path, next to the system's installed gems; Bundler (the system's) installs
# it with --local, and the gem is used under `bundle exec`. Any attempt to
# reach the network goes to a closed local port, so nothing can be fetched.
RSpec.describe "Using the gem through Bundler (path: checkout)" do
  include SubprocessHelper

  def bundle_command
    [RbConfig.ruby, Gem.bin_path("bundler", "bundle")]
  rescue Gem::Exception
    ["bundle"]
  end

  def bundler_env
    closed = "http://127.0.0.1:9"
    {
      "BUNDLE_GEMFILE" => File.join(@app, "Gemfile"),
      "BUNDLE_APP_CONFIG" => File.join(@app, ".bundle"),
      "BUNDLE_USER_HOME" => File.join(@app, ".bundle-home"),
      "BUNDLE_SILENCE_ROOT_WARNING" => "1",
      "HOME" => @app,
      "http_proxy" => closed, "https_proxy" => closed, "HTTP_PROXY" => closed, "HTTPS_PROXY" => closed
    }
  end

  def bundle(*args, timeout: 180)
    run_command([*bundle_command, *args], env: bundler_env, chdir: @app, timeout: timeout)
  end

  before(:context) do
    @app = Dir.mktmpdir("tasker_trace_native_bundler")
    # The gem is listed before Rails, so Bundler.require loads it first.
    File.write(File.join(@app, "Gemfile"), <<~GEMFILE)
      gem "tasker_trace_native", path: #{SubprocessHelper::CHECKOUT.dump}
      gem "concurrent-ruby"
      gem "activesupport"
      gem "railties", require: "rails"
    GEMFILE
    @install = bundle("install", "--local")
  end

  after(:context) { FileUtils.rm_rf(@app) }

  it "installs with --local, from the checkout and the installed gems, fetching nothing" do
    expect(@install).to be_success, @install.describe
    expect(@install.stdout).not_to match(/^Fetching/)
    lock = File.read(File.join(@app, "Gemfile.lock"))
    expect(lock).to include("PATH\n  remote: #{SubprocessHelper::CHECKOUT}\n  specs:\n    tasker_trace_native (0.1.0)")
  end

  it "under bundle exec, require \"tasker_trace_native\" loads the checkout's gem and works" do
    expect(@install).to be_success, @install.describe
    script = <<~'RUBY'
      require "json"
      require "tasker_trace_native"
      b = Tasker::Telemetry::TraceBackend.instance
      ok = [b.handle_event("task.started", { task_id: 1 }), b.handle_event("task.completed", { task_id: 1 })]
      puts JSON.generate(
        loaded: $LOADED_FEATURES.grep(/tasker_trace_native\.so\z/),
        spec_dir: Gem.loaded_specs["tasker_trace_native"]&.full_gem_path,
        ok: ok,
        status: b.export[:traces]["task_1"][:status],
        railtie: !defined?(TaskerTraceNative::Railtie).nil?
      )
    RUBY
    result = bundle("exec", RbConfig.ruby, "-e", script)
    expect(result).to be_success, result.describe
    expect(result.json).to eq(
      loaded: [File.join(SubprocessHelper::LIB, "tasker_trace_native", "tasker_trace_native.so")],
      spec_dir: SubprocessHelper::CHECKOUT,
      ok: [true, true],
      status: "success",
      railtie: false
    )
  end

  it "with Bundler.require loading the gem before Rails, the Railtie applies config.tasker_trace_native" do
    expect(@install).to be_success, @install.describe
    script = <<~'RUBY'
      require "json"
      Bundler.require
      before_app = !defined?(TaskerTraceNative::Railtie).nil?
      class BundledApp < Rails::Application
        config.root = Dir.pwd
        config.eager_load = false
        config.logger = Logger.new(nil)
        config.tasker_trace_native.max_traces = 9
        config.tasker_trace_native.timestamp_precision = 6
      end
      BundledApp.initialize!
      puts JSON.generate(
        rails_loaded_after_gem: $LOADED_FEATURES.index { |f| f.end_with?("/tasker_trace_native.rb") } <
                                $LOADED_FEATURES.index { |f| f.end_with?("/rails.rb") },
        railtie_before_app: before_app,
        config: TaskerTraceNative.config.to_h.slice(:max_traces, :max_spans_per_trace, :timestamp_precision)
      )
    RUBY
    result = bundle("exec", RbConfig.ruby, "-e", script)
    expect(result).to be_success, result.describe
    expect(result.json).to eq(
      rails_loaded_after_gem: true,
      railtie_before_app: false,
      config: { max_traces: 9, max_spans_per_trace: 10_000, timestamp_precision: 6 }
    )
  end
end
