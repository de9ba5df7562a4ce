# frozen_string_literal: true

require "rails/railtie"

module TaskerTraceNative
  # Rails integration. Loaded only when Rails is present (see
  # tasker_trace_native.rb and railtie_loader.rb).
  #
  #   # config/application.rb (or config/environments/*.rb, or an initializer)
  #   config.tasker_trace_native.max_traces = 50_000
  #   config.tasker_trace_native.max_spans_per_trace = 1_000
  #   config.tasker_trace_native.timestamp_precision = 6
  #   config.tasker_trace_native.lifecycle_tracing = false   # default true
  #   config.tasker_trace_native.exporter = :otlp   # the background exporter
  #
  # - The settings given there are put in force at boot, after
  #   config/initializers/ ran; a bad value or an unknown setting stops the
  #   boot with an ArgumentError naming it. The OTEL_* variables are read
  #   again then, for the settings not given in Ruby.
  # - The background exporter (`exporter = :otlp`, `export_*` settings) is
  #   configured at boot like any setting, but no thread starts at boot: each
  #   process starts its exporter at its first recorded event, so a server
  #   that preloads the app and forks (Puma's preload_app!) starts one per
  #   worker and none in its master.
  # - The native methods serve Tasker::Telemetry::TraceBackend whether the
  #   engine's own class was loaded before this gem, after it, or replaced by a
  #   code reload.
  # - After boot, when Tasker::Events::Publisher exists, the lifecycle tracer
  #   subscribes to it (TaskerTraceNative.trace_lifecycle!), unless
  #   `lifecycle_tracing` is false; lifecycle attributes are filtered with the
  #   application's `filter_parameters`.
  # - `created_at` follows `Time.zone`, and internal errors in handle_event are
  #   logged to `Rails.logger` (both hold with or without this Railtie; they
  #   look for Rails at call time).
  class Railtie < ::Rails::Railtie
    CONFIG_PATH = "config.tasker_trace_native"
    # Settings only the Railtie takes (the others are Configuration's).
    RAILTIE_SETTINGS = Configuration::RAILS_ONLY_SETTINGS
    SETTINGS = (Configuration::SETTINGS + RAILTIE_SETTINGS).freeze

    config.tasker_trace_native = ActiveSupport::OrderedOptions.new

    class << self
      # Puts the settings named in `config.tasker_trace_native` in force, once
      # per application; the ones not named keep their values.
      def apply_settings(app)
        return if defined?(@applied_to) && @applied_to.equal?(app)

        settings = settings_from(app.config.tasker_trace_native)
        lifecycle_tracing(settings)
        settings = settings.reject { |name, _| RAILTIE_SETTINGS.include?(name) }
        # Even without settings: `configure` reads the environment again
        # (an app may have loaded its .env files after requiring the gem).
        begin
          TaskerTraceNative.configure do |c|
            settings.each { |name, value| c.public_send(:"#{name}=", value) }
          end
        rescue ArgumentError => e
          raise ArgumentError, "#{CONFIG_PATH}.#{e.message}"
        end
        @applied_to = app
      end

      # Subscribes the lifecycle tracer to Tasker's publisher when it exists,
      # unless `lifecycle_tracing` is false; returns the names subscribed.
      def trace_lifecycle(app)
        Lifecycle.sync_filters!
        return [] if lifecycle_tracing(settings_from(app.config.tasker_trace_native)) == false
        return [] unless defined?(::Tasker::Events::Publisher) && ::Tasker::Events::Publisher.respond_to?(:instance)

        TaskerTraceNative.trace_lifecycle!(::Tasker::Events::Publisher.instance)
      end

      private

      def lifecycle_tracing(settings)
        value = settings.fetch(:lifecycle_tracing, true)
        return value if [true, false].include?(value)

        raise ArgumentError, "#{CONFIG_PATH}.lifecycle_tracing must be true or false (got #{value.inspect[0, 80]})"
      end

      # The settings named in `config.tasker_trace_native`: its own
      # OrderedOptions, or a Hash an application put there instead (nil: none).
      def settings_from(options)
        unless options.nil? || options.is_a?(Hash)
          raise ArgumentError,
                "#{CONFIG_PATH} must be a Hash of settings (got #{options.inspect[0, 80]}); " \
                "set each one as #{CONFIG_PATH}.max_traces = ..."
        end
        settings = options.to_h.transform_keys { |name| name.respond_to?(:to_sym) ? name.to_sym : name }
        unknown = settings.keys - SETTINGS
        unless unknown.empty?
          raise ArgumentError,
                "#{CONFIG_PATH}.#{unknown.first}: unknown setting " \
                "(settings: #{SETTINGS.join(', ')})"
        end
        settings
      end
    end

    initializer "tasker_trace_native.settings", after: :load_config_initializers do |app|
      Railtie.apply_settings(app)
    end

    # Runs at the end of boot, or at once when this file is loaded after boot
    # (the gem required lazily: the initializer above then never ran). A code
    # reload can define the engine's class afresh: serve it natively too.
    config.after_initialize do |app|
      TaskerTraceNative.install!
      Railtie.apply_settings(app)
      Railtie.trace_lifecycle(app)
      app.reloader.to_prepare { TaskerTraceNative.install! }
    end
  end
end
