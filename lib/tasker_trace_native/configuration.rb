# frozen_string_literal: true

module TaskerTraceNative
  # The backend's settings. `TaskerTraceNative.configure` yields a copy of the
  # settings in force; each assignment is checked at once (ArgumentError naming
  # the setting; an unknown name is an ArgumentError listing the settings),
  # and the settings assigned are put in force only when the block returns
  # without error. A setting assigned in Ruby wins over its variable from then
  # on; every `configure` reads the environment again for the others (see
  # docs/configuration.md).
  class Configuration
    # The setting names, from the extension (its from_ruby/setting_checks.rs is their one home).
    SETTINGS = Native::SETTING_NAMES
    # Settings of the Rails integration only (config.tasker_trace_native.*),
    # listed in the settings table but not taken by `configure`.
    RAILS_ONLY_SETTINGS = %i[lifecycle_tracing].freeze

    attr_reader(*SETTINGS)

    def self.in_force
      new(**Native.settings)
    end

    def initialize(**settings)
      missing = SETTINGS - settings.keys
      raise ArgumentError, "missing settings: #{missing.join(', ')}" unless missing.empty?

      settings.each do |name, value|
        Native.check_setting(name, value)
        instance_variable_set(:"@#{name}", value)
      end
      @assigned = {}
    end

    SETTINGS.each do |setting|
      define_method(:"#{setting}=") do |value|
        Native.check_setting(setting, value)
        @assigned[setting] = value
        instance_variable_set(:"@#{setting}", value)
      end
    end

    # The settings assigned since this copy was made.
    def assigned
      @assigned.dup
    end

    # `c.no_such_setting = 1` (or `c.no_such_setting`): ArgumentError listing
    # the settings, as for a Railtie setting of that name.
    def method_missing(name, *args)
      return super unless name.match?(/\A[a-z_][a-z0-9_]*=?\z/)

      setting = name.to_s.delete_suffix("=")
      if RAILS_ONLY_SETTINGS.include?(setting.to_sym)
        raise ArgumentError, "#{setting} is a Rails setting: set config.tasker_trace_native.#{setting} " \
                             "(outside Rails, call TaskerTraceNative.trace_lifecycle! or not)"
      end

      raise ArgumentError, "unknown setting #{setting} (settings: #{SETTINGS.join(', ')})"
    end

    def respond_to_missing?(_name, _include_private = false)
      false
    end

    # Puts the settings assigned in force over what the environment gives
    # for the others (read again now). Every value is checked again first (a
    # Hash can be changed in place after it was assigned): all or nothing.
    def apply!
      Native.apply_settings(@assigned)
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

    # The password of a URL's userinfo (`http://user:password@host`, sent as
    # Basic authentication), as the native messages find it: after the
    # scheme, if any, up to the authority's last "@".
    URL_PASSWORD = %r{\A(\s*(?:[A-Za-z][A-Za-z0-9+.\-]*://)?[^/?#:]*:)[^/?#]*@}

    # `url` with the password of its userinfo shown as `***`.
    def self.shown_url(url)
      url.is_a?(String) ? url.sub(URL_PASSWORD) { "#{Regexp.last_match(1)}***@" } : url
    end

    def inspect
      shown = to_h.map do |k, v|
        v = v.to_h { |name, _| [name, "[FILTERED]"] } if CREDENTIAL_SETTINGS.include?(k) && v.is_a?(Hash)
        v = Configuration.shown_url(v) if k == :otlp_endpoint
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
