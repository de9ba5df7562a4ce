# frozen_string_literal: true

require "tmpdir"
require "fileutils"
require_relative "subprocess_helper"

# Boots a minimal Rails application (no database) in a fresh Ruby process. A
# stand-in "engine" loads a pure-Ruby Tasker::Telemetry::TraceBackend during
# boot, as the Tasker engine does, and routes events to
# `TraceBackend.instance` through an EventRouter-style router. The child
# reports what it saw as one JSON line; the examples check it.
module RailtieSpecSources
  # The engine's pure-Ruby backend, as far as these specs need it: the same
  # constant and singleton shape, with its own handle_event. It counts its own
  # calls, so the child can tell which implementation served.
  BACKEND = <<~RUBY
    require "singleton"

    module Tasker
      module Telemetry
        class TraceBackend
          include Singleton

          class << self
            attr_accessor :pure_ruby_calls
          end
          self.pure_ruby_calls = 0

          attr_reader :created_at

          def initialize
            @created_at = Time.current
            @by_name = {}
          end

          def handle_event(event_name, payload = {})
            self.class.pure_ruby_calls += 1
            return false unless payload.is_a?(Hash)

            (@by_name[event_name] ||= []) << payload
            true
          end

          def traces
            @by_name
          end

          def export
            { traces: @by_name.dup, metadata: { backend: "trace" } }
          end

          def stats
            { active_traces: @by_name.size }
          end

          def reset!
            @by_name.clear
          end
        end
      end
    end
  RUBY

  # A stand-in for the engine: during boot it loads the backend (unless it is
  # already loaded) and builds a router holding `TraceBackend.instance`.
  ENGINE = <<~RUBY
    module StandInTasker
      class EventRouter
        def initialize(trace_backend)
          @trace_backend = trace_backend
          @routes = { trace: ->(name, payload) { @trace_backend.handle_event(name, payload) } }
        end

        def route_event(event_name, payload = {})
          @routes.fetch(:trace).call(event_name, payload)
        end
      end

      class << self
        attr_accessor :router
      end

      class Engine < ::Rails::Railtie
        initializer "stand_in_tasker.telemetry" do
          require ENV.fetch("STAND_IN_BACKEND")
          StandInTasker.router = EventRouter.new(Tasker::Telemetry::TraceBackend.instance)
        end
      end
    end
  RUBY

  # The application. LOAD_ORDER says how the gem, Rails and the engine's
  # backend come in; SETTINGS (JSON) goes into config.tasker_trace_native.
  APP = <<~'RUBY'
    require "json"
    require "logger"
    require "stringio"

    case ENV.fetch("LOAD_ORDER")
    when "rails_then_gem" # config/application.rb: require "rails", then Bundler.require
      require "rails"
      require "tasker_trace_native"
    when "gem_then_rails" # the gem is required before Rails
      require "tasker_trace_native"
      require "rails"
    when "backend_then_gem" # the engine's backend class exists before the gem loads
      require "rails"
      require "active_support/core_ext/time"
      require ENV.fetch("STAND_IN_BACKEND")
      require "tasker_trace_native"
    when "gem_after_boot" # the gem is required lazily, after the app booted
      require "rails"
    else
      abort "unknown LOAD_ORDER"
    end
    require ENV.fetch("STAND_IN_ENGINE")

    LOG = StringIO.new
    settings = JSON.parse(ENV.fetch("SETTINGS", "{}"))

    class SpecApp < Rails::Application
      config.root = __dir__
      config.eager_load = false
      config.logger = ActiveSupport::Logger.new(LOG).tap do |logger|
        logger.formatter = proc { |severity, _time, _progname, message| "#{severity} -- #{message}\n" }
      end
      config.log_level = :info
      config.time_zone = "Tokyo"
      config.secret_key_base = "0" * 64
    end
    settings.each { |k, v| SpecApp.config.tasker_trace_native[k] = v } unless settings.empty?
    # An application replacing the options object itself.
    SpecApp.config.tasker_trace_native = JSON.parse(ENV["SETTINGS_OBJECT"]) if ENV.key?("SETTINGS_OBJECT")

    report = {}
    begin
      SpecApp.initialize!
    rescue ArgumentError => e
      report[:boot_error] = { class: e.class.name, message: e.message }
      report[:config] = TaskerTraceNative.config.to_h.slice(:max_traces, :max_spans_per_trace, :timestamp_precision)
      puts JSON.generate(report)
      exit 0
    end
    require "tasker_trace_native" if ENV["LOAD_ORDER"] == "gem_after_boot"

    backend_class = Tasker::Telemetry::TraceBackend
    backend = backend_class.instance
    router = StandInTasker.router
    report[:railtie_loaded] = !defined?(TaskerTraceNative::Railtie).nil?
    report[:router_holds_instance] = router.instance_variable_get(:@trace_backend).equal?(backend)
    report[:handle_event_owner] = backend.method(:handle_event).owner.name
    report[:config] = TaskerTraceNative.config.to_h.slice(:max_traces, :max_spans_per_trace, :timestamp_precision)
    report[:routed] = [
      router.route_event("task.started", { task_id: 1, task_name: "order" }),
      router.route_event("step.before_handle", { task_id: 1, workflow_step_id: 10 }),
      router.route_event("step.after_handle", { task_id: 1, workflow_step_id: 10 }),
      router.route_event("task.completed", { task_id: 1 })
    ]
    first = backend.export[:traces]["task_1"]
    report[:first_trace] = first && {
      status: first[:status], duration_class: first[:duration].class.name,
      start_time: first[:start_time], spans: first[:spans].size
    }
    report[:routed] += [
      router.route_event("task.started", { task_id: 2 }),
      router.route_event("task.started", { task_id: 3 }),
      router.route_event("task.started", "not a hash")
    ]
    report[:pure_ruby_calls] = backend_class.pure_ruby_calls
    report[:trace_keys] = backend.export[:traces].keys
    report[:stats] = backend.stats.slice(:events_handled, :rejected_events, :evicted_traces,
                                         :dropped_spans, :max_traces)
    # (Module#=== because TimeWithZone#is_a? also claims Time, and on
    # ActiveSupport < 7.1 TimeWithZone.name is "Time".)
    created_at = backend.created_at
    report[:created_at] = {
      time_with_zone: ActiveSupport::TimeWithZone === created_at, # rubocop:disable Style/CaseEquality
      zone: created_at.respond_to?(:time_zone) ? created_at.time_zone.name : nil
    }

    TaskerTraceNative::TestHooks.panic_next_call!
    report[:failed_event] = router.route_event("task.failed", { task_id: 3 })
    report[:log] = LOG.string

    # A code reload defines the engine's class afresh; the Railtie's to_prepare
    # hook must serve the new class natively too.
    Tasker::Telemetry.send(:remove_const, :TraceBackend)
    load ENV.fetch("STAND_IN_BACKEND")
    Rails.application.reloader.prepare!
    fresh = Tasker::Telemetry::TraceBackend.instance
    report[:after_reload] = {
      owner: fresh.method(:handle_event).owner.name,
      handled: fresh.handle_event("task.started", { task_id: 9 }),
      pure_ruby_calls: Tasker::Telemetry::TraceBackend.pure_ruby_calls,
      stored: fresh.export[:traces].key?("task_9")
    }
    puts JSON.generate(report)
  RUBY
end

RSpec.describe "TaskerTraceNative::Railtie (a Rails app booted in a child process)" do
  include SubprocessHelper

  before(:context) do
    @dir = Dir.mktmpdir("tasker_trace_native_rails")
    File.write(File.join(@dir, "stand_in_backend.rb"), RailtieSpecSources::BACKEND)
    File.write(File.join(@dir, "stand_in_engine.rb"), RailtieSpecSources::ENGINE)
    File.write(File.join(@dir, "app.rb"), RailtieSpecSources::APP)
  end

  after(:context) { FileUtils.rm_rf(@dir) }

  # (`extra_env` is positional: callers pass settings as a braceless Hash
  # with String keys, which Ruby 3.3 would take for unknown keywords.)
  def boot(load_order, settings = {}, extra_env = {})
    env = extra_env.merge(
      "LOAD_ORDER" => load_order,
      "SETTINGS" => JSON.generate(settings),
      "STAND_IN_BACKEND" => File.join(@dir, "stand_in_backend.rb"),
      "STAND_IN_ENGINE" => File.join(@dir, "stand_in_engine.rb")
    )
    result = run_command([RbConfig.ruby, "-I", SubprocessHelper::LIB, File.join(@dir, "app.rb")],
                         env: env, chdir: @dir)
    expect(result).to be_success, result.describe
    result.json
  end

  def settings
    { "max_traces" => 2, "max_spans_per_trace" => 1, "timestamp_precision" => 3 }
  end

  shared_examples "the native backend serving a Rails app" do
    it "serves TraceBackend.instance.handle_event from the router natively, from boot" do
      expect(report[:railtie_loaded]).to be(true)
      expect(report[:router_holds_instance]).to be(true)
      expect(report[:handle_event_owner]).to eq("TaskerTraceNative::BackendMethods")
      expect(report[:routed]).to eq([true, true, true, true, true, true, false])
      expect(report[:pure_ruby_calls]).to eq(0)
      expect(report[:first_trace]).to include(status: "success", duration_class: "Float")
    end

    it "puts config.tasker_trace_native in force at boot" do
      expect(report[:first_trace][:spans]).to eq(1) # max_spans_per_trace 1
      expect(report[:first_trace][:start_time]).to match(/\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\z/)
      expect(report[:config]).to eq(max_traces: 2, max_spans_per_trace: 1, timestamp_precision: 3)
      # max_traces 2: task_1 was evicted by task_3.
      expect(report[:trace_keys]).to eq(%w[task_2 task_3])
      expect(report[:stats]).to include(events_handled: 6, rejected_events: 1, evicted_traces: 1,
                                        dropped_spans: 1, max_traces: 2)
    end

    it "gives created_at in Time.zone" do
      expect(report[:created_at]).to eq(time_with_zone: true, zone: "Tokyo")
    end

    it "logs an internal error to Rails.logger at error level and returns false" do
      expect(report[:failed_event]).to be(false)
      expect(report[:log]).to match(
        /^ERROR -- TraceBackend error handling task\.failed: internal error: injected test panic$/
      )
    end

    it "serves a TraceBackend class defined afresh by a code reload" do
      expect(report[:after_reload]).to eq(owner: "TaskerTraceNative::BackendMethods", handled: true,
                                          pure_ruby_calls: 0, stored: true)
    end
  end

  context "when Rails is loaded before the gem (config/application.rb, then Bundler.require)" do
    before(:context) { @report = boot("rails_then_gem", settings) }
    let(:report) { @report }

    include_examples "the native backend serving a Rails app"
  end

  context "when the gem is loaded before Rails" do
    before(:context) { @report = boot("gem_then_rails", settings) }
    let(:report) { @report }

    include_examples "the native backend serving a Rails app"
  end

  context "when the engine's pure-Ruby class is loaded before the gem" do
    before(:context) { @report = boot("backend_then_gem", settings) }
    let(:report) { @report }

    include_examples "the native backend serving a Rails app"
  end

  context "when the gem is required only after the app booted" do
    before(:context) { @report = boot("gem_after_boot") }
    let(:report) { @report }

    it "serves natively at once, with the default settings" do
      expect(report[:railtie_loaded]).to be(true)
      expect(report[:handle_event_owner]).to eq("TaskerTraceNative::BackendMethods")
      expect(report[:routed]).to eq([true, true, true, true, true, true, false])
      expect(report[:pure_ruby_calls]).to eq(0)
      expect(report[:config]).to eq(max_traces: 100_000, max_spans_per_trace: 10_000, timestamp_precision: 0)
      expect(report[:created_at]).to eq(time_with_zone: true, zone: "Tokyo")
      expect(report[:failed_event]).to be(false)
      expect(report[:log]).to include("TraceBackend error handling task.failed: internal error: injected test panic")
      expect(report[:after_reload]).to eq(owner: "TaskerTraceNative::BackendMethods", handled: true,
                                          pure_ruby_calls: 0, stored: true)
    end
  end

  context "with a bad setting" do
    it "stops the boot with an ArgumentError naming the setting; the settings in force stay" do
      report = boot("rails_then_gem", "max_traces" => 10, "max_spans_per_trace" => -1)
      expect(report[:boot_error][:class]).to eq("ArgumentError")
      expect(report[:boot_error][:message]).to start_with("config.tasker_trace_native.max_spans_per_trace must be ")
      expect(report[:boot_error][:message]).to end_with("(got -1)")
      expect(report[:config]).to eq(max_traces: 100_000, max_spans_per_trace: 10_000, timestamp_precision: 0)
    end

    it "refuses an unknown setting by name" do
      report = boot("gem_then_rails", "max_trace" => 10)
      expect(report[:boot_error][:class]).to eq("ArgumentError")
      expect(report[:boot_error][:message]).to start_with("config.tasker_trace_native.max_trace: unknown setting")
    end

    it "refuses a config.tasker_trace_native that is not a Hash with an ArgumentError naming it" do
      ["5", '"max_traces=5"', "[1]"].each do |object|
        report = boot("rails_then_gem", {}, { "SETTINGS_OBJECT" => object })
        expect(report[:boot_error]).to include(class: "ArgumentError"), object
        expect(report[:boot_error][:message]).to start_with("config.tasker_trace_native must be a Hash of settings")
      end
    end

    it "takes a Hash put in place of config.tasker_trace_native" do
      report = boot("rails_then_gem", {}, { "SETTINGS_OBJECT" => JSON.generate(settings) })
      expect(report[:config]).to eq(max_traces: 2, max_spans_per_trace: 1, timestamp_precision: 3)
    end
  end

  context "without Rails" do
    it "loads nothing of the Rails integration; its watcher stops once ActiveSupport is loaded" do
      script = <<~'RUBY'
        require "json"
        require "tasker_trace_native"
        report = {
          railtie: defined?(TaskerTraceNative::Railtie).nil? ? nil : "defined",
          rails: defined?(::Rails).nil? ? nil : "defined",
          active_support: defined?(::ActiveSupport).nil? ? nil : "defined",
          rails_features: $LOADED_FEATURES.grep(%r{/(rails|active_support)(/|\.rb\z)|/tasker_trace_native/railtie\.rb\z}).size,
          waiting: TaskerTraceNative::RailtieLoader.waiting?
        }
        require "active_support"
        report[:waiting_with_active_support] = TaskerTraceNative::RailtieLoader.waiting?
        report[:railtie_with_active_support] = defined?(TaskerTraceNative::Railtie).nil? ? nil : "defined"
        puts JSON.generate(report)
      RUBY
      result = run_command([RbConfig.ruby, "-I", SubprocessHelper::LIB, "-e", script], chdir: @dir)
      expect(result).to be_success, result.describe
      expect(result.json).to eq(railtie: nil, rails: nil, active_support: nil, rails_features: 0, waiting: true,
                                waiting_with_active_support: false, railtie_with_active_support: nil)
    end
  end
end
