# frozen_string_literal: true

module TaskerTraceNative
  # The backend's settings. `TaskerTraceNative.configure` yields a copy of the
  # settings in force; each assignment is checked at once (ArgumentError naming
  # the setting), and the whole set is put in force only when the block returns
  # without error.
  class Configuration
    # The setting names, from the extension (its from_ruby/setting_checks.rs is their one home).
    SETTINGS = Native::SETTING_NAMES

    attr_reader(*SETTINGS)

    def self.in_force
      new(**Native.settings)
    end

    def initialize(**settings)
      missing = SETTINGS - settings.keys
      raise ArgumentError, "missing settings: #{missing.join(', ')}" unless missing.empty?

      settings.each { |name, value| public_send(:"#{name}=", value) }
    end

    SETTINGS.each do |setting|
      define_method(:"#{setting}=") do |value|
        Native.check_setting(setting, value)
        instance_variable_set(:"@#{setting}", value)
      end
    end

    # Puts these settings in force. Every value is checked again first (a
    # Hash can be changed in place after it was assigned): all or nothing.
    def apply!
      Native.apply_settings(to_h)
      # lifecycle_attributes may name new keys: decide their filtering now.
      if defined?(Lifecycle)
        Lifecycle.sync_filters!
        Lifecycle.sync_attribute_prefix!
        ContextListener.refresh! if defined?(ContextListener)
      end
      Exporter.arm_at_exit
      self
    end

    def to_h
      SETTINGS.to_h { |s| [s, public_send(s)] }
    end

    def ==(other)
      other.is_a?(Configuration) && other.to_h == to_h
    end

    # Settings whose values can hold credentials (authorization headers):
    # `inspect` shows their keys only.
    CREDENTIAL_SETTINGS = %i[otlp_headers].freeze

    def inspect
      shown = to_h.map do |k, v|
        v = v.to_h { |name, _| [name, "[FILTERED]"] } if CREDENTIAL_SETTINGS.include?(k) && v.is_a?(Hash)
        "#{k}=#{v.inspect}"
      end
      "#<TaskerTraceNative::Configuration #{shown.join(' ')}>"
    end
  end

  class << self
    # The settings in force (a frozen copy).
    def config
      Configuration.in_force.freeze
    end

    # Changes settings:
    #   TaskerTraceNative.configure { |c| c.max_traces = 50_000 }
    # A bad value raises ArgumentError naming the setting; then nothing changes.
    def configure
      raise ArgumentError, "TaskerTraceNative.configure needs a block" unless block_given?

      draft = Configuration.in_force
      yield draft
      draft.apply!
      config
    end
  end
end
