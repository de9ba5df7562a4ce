# frozen_string_literal: true

module TaskerTraceNative
  # Loads the Railtie when Rails is required *after* this gem: a Gemfile that
  # lists this gem before Rails with `Bundler.require` called first, or a boot
  # file requiring gems early. Without Rails, the Railtie never loads.
  #
  # The Railtie has to exist before the application's class body runs, so
  # that `config.tasker_trace_native` works there. Rails announces a new
  # application with ActiveSupport's `:before_configuration` load hook, from
  # `Rails::Application.inherited`, before that body runs: the Railtie is
  # required then. ActiveSupport may itself be loaded only later; until it is,
  # a TracePoint on class definitions waits for its load hooks to appear and
  # then switches itself off.
  module RailtieLoader
    RAILTIE = File.expand_path("railtie", __dir__)

    class << self
      def arm
        return if defined?(@armed)

        @armed = true
        if load_hooks?
          register
        else
          @watch = TracePoint.new(:class) do
            next unless load_hooks?

            @watch.disable
            register
          end
          @watch.enable
        end
      end

      # Whether the TracePoint is still waiting for ActiveSupport.
      def waiting?
        defined?(@watch) && @watch.enabled? ? true : false
      end

      private

      def load_hooks?
        defined?(::ActiveSupport) && ::ActiveSupport.respond_to?(:on_load)
      end

      def register
        ::ActiveSupport.on_load(:before_configuration) do
          require RAILTIE if defined?(::Rails::Railtie)
        end
      end
    end
  end
end
