# frozen_string_literal: true

require "spec_helper"
require "tmpdir"
require "fileutils"
require_relative "../rails/subprocess_helper"

# A minimal Rails app (no database) booted in a fresh process. A stand-in
# engine defines Tasker::Events::Publisher during boot, as the Tasker engine
# does; the child reports what the Railtie did with it as one JSON line.
module LifecycleRailtieSources
  ENGINE = <<~'RUBY'
    require ENV.fetch("STAND_IN_PUBLISHER")

    module StandInTaskerEngine
      class Engine < ::Rails::Railtie
        initializer "stand_in_tasker.events" do
          next unless ENV["WITH_PUBLISHER"] == "1"

          module ::Tasker
            module Events
              # Tasker's publisher: a singleton with dry-events' shape.
              class Publisher < StandInPublisher
                def self.instance
                  @instance ||= new
                end
              end
            end
          end
        end
      end
    end
  RUBY

  APP = <<~'RUBY'
    require "json"
    require "rails"
    require "active_support/core_ext/integer/time"
    require "tasker_trace_native"
    require ENV.fetch("STAND_IN_ENGINE")

    class SpecApp < Rails::Application
      config.root = __dir__
      config.eager_load = false
      config.logger = ActiveSupport::Logger.new(nil)
      config.secret_key_base = "0" * 64
      config.filter_parameters += [:region]
      # Development: code reloading on.
      config.cache_classes = false if ENV["RELOADS"]
    end
    JSON.parse(ENV.fetch("SETTINGS", "{}")).each { |k, v| SpecApp.config.tasker_trace_native[k] = v }
    SpecApp.config.tasker_trace_native.lifecycle_ttl = 2.hours if ENV["TTL_AS_DURATION"] == "1"

    report = {}
    begin
      SpecApp.initialize!
    rescue ArgumentError => e
      puts JSON.generate(boot_error: e.message)
      exit 0
    end
    publisher = defined?(Tasker::Events::Publisher) ? Tasker::Events::Publisher.instance : nil
    report[:listeners] = publisher&.listener_count
    if publisher
      publisher.publish("task.start_requested", to_state: "in_progress", task_id: 1, task_name: "order", region: "eu-west")
      publisher.publish("task.completed", task_id: 1)
    end
    report[:stats] = TaskerTraceNative.lifecycle_stats.slice(:finished_runs, :events_recorded)
    run = TaskerTraceNative.lifecycle_runs.first
    report[:root_attributes] = run && run[:spans].first[:attributes]
    report[:ttl] = TaskerTraceNative.config.lifecycle_ttl
    report[:again] = publisher && TaskerTraceNative.trace_lifecycle!(publisher).size
    if ENV["RELOADS"]
      # A setting changed after boot stays: a reload does not apply config again.
      TaskerTraceNative.configure { |c| c.max_traces = 5 }
      Integer(ENV["RELOADS"]).times { Rails.application.reloader.reload! }
      publisher = Tasker::Events::Publisher.instance
      publisher.publish("task.start_requested", to_state: "in_progress", task_id: 2, task_name: "order")
      publisher.publish("task.completed", task_id: 2)
      backend = Tasker::Telemetry::TraceBackend.instance
      report[:after_reloads] = {
        listeners: publisher.listener_count,
        stats: TaskerTraceNative.lifecycle_stats.slice(:finished_runs, :events_recorded),
        owner: backend.method(:handle_event).owner.name,
        handled: backend.handle_event("task.started", task_id: 1),
        max_traces: TaskerTraceNative.config.max_traces
      }
    end
    puts JSON.generate(report)
  RUBY
end

RSpec.describe "TaskerTraceNative::Railtie and the lifecycle tracer (a Rails app booted in a child process)" do
  include SubprocessHelper

  before(:context) do
    @dir = Dir.mktmpdir("tasker_trace_native_lifecycle_rails")
    File.write(File.join(@dir, "engine.rb"), LifecycleRailtieSources::ENGINE)
    File.write(File.join(@dir, "app.rb"), LifecycleRailtieSources::APP)
  end

  after(:context) { FileUtils.rm_rf(@dir) }

  def boot(settings = {}, publisher: true, env: {})
    env = {
      "SETTINGS" => JSON.generate(settings),
      "WITH_PUBLISHER" => publisher ? "1" : "0",
      "STAND_IN_ENGINE" => File.join(@dir, "engine.rb"),
      "STAND_IN_PUBLISHER" => File.expand_path("../support/stand_in_publisher.rb", __dir__)
    }.merge(env)
    result = run_command([RbConfig.ruby, "-I", SubprocessHelper::LIB, File.join(@dir, "app.rb")],
                         env: env, chdir: @dir)
    expect(result).to be_success, result.describe
    result.json
  end

  # The registered names the trace model uses (the default subscription).
  let(:model_names) { StandInPublisher::TASKER_EVENTS & TaskerTraceNative::Native::LIFECYCLE_SPAN_EVENT_NAMES }

  it "subscribes the tracer to Tasker's publisher after boot, filtering with filter_parameters" do
    report = boot({ "lifecycle_attributes" => ["region"] }, env: { "TTL_AS_DURATION" => "1" })
    expect(report[:listeners]).to eq(model_names.size)
    expect(report[:again]).to eq(0)
    expect(report[:stats]).to eq(finished_runs: 1, events_recorded: 2)
    expect(report[:root_attributes]).to eq("tasker.task_name": "order", "tasker.region": "[FILTERED]",
                                           "tasker.task_id": 1)
    expect(report[:ttl]).to eq(7200)
  end

  it "keeps one subscription and the native backend across code reloads in development" do
    report = boot({ "max_traces" => 9 }, env: { "RELOADS" => "3" })
    expect(report[:listeners]).to eq(model_names.size)
    expect(report[:after_reloads]).to eq(listeners: model_names.size, stats: { finished_runs: 2, events_recorded: 4 },
                                         owner: "TaskerTraceNative::BackendMethods", handled: true, max_traces: 5)
  end

  it "does not subscribe when config.tasker_trace_native.lifecycle_tracing = false" do
    report = boot({ "lifecycle_tracing" => false })
    expect(report[:listeners]).to eq(0)
    expect(report[:stats]).to eq(finished_runs: 0, events_recorded: 0)
    # Still possible by hand.
    expect(report[:again]).to eq(model_names.size)
  end

  it "subscribes to every registered lifecycle event with lifecycle_workflow_events" do
    report = boot({ "lifecycle_workflow_events" => true })
    expect(report[:listeners]).to eq(StandInPublisher::TASKER_EVENTS.size)
    expect(model_names.size).to be < StandInPublisher::TASKER_EVENTS.size
  end

  it "boots without a publisher and subscribes nothing" do
    report = boot({}, publisher: false)
    expect(report).to include(listeners: nil, stats: { finished_runs: 0, events_recorded: 0 })
  end

  it "stops the boot for a lifecycle_tracing that is not true or false, naming it" do
    report = boot({ "lifecycle_tracing" => "yes" })
    expect(report[:boot_error]).to eq('config.tasker_trace_native.lifecycle_tracing must be true or false (got "yes")')
  end

  it "stops the boot for a bad lifecycle setting, naming it" do
    report = boot({ "lifecycle_max_open_runs" => 0 })
    expect(report[:boot_error])
      .to eq("config.tasker_trace_native.lifecycle_max_open_runs must be a positive Integer (got 0)")
  end
end
