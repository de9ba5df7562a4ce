# frozen_string_literal: true

module TaskerTraceNative
  # When the OpenTelemetry SDK is configured, the gem exports under the same
  # resource as the SDK's own spans, so a backend shows one service: the
  # SDK tracer provider's `service.name` and resource attributes (which it
  # took from OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and its detectors).
  #
  # Read when the lifecycle tracer subscribes with the context path in use
  # (see ContextListener). The gem's own settings win: `service_name` is
  # taken from the SDK only while it is the built-in default ("tasker"), and
  # `resource_attributes` keys already set are kept. The SDK's
  # `telemetry.sdk.*` keys are not copied (they name the SDK, not this
  # exporter).
  module SdkResource
    DEFAULT_SERVICE_NAME = "tasker"

    module_function

    # The SDK tracer provider's resource attributes as a Hash, or nil when
    # the SDK is not configured.
    def sdk_attributes
      return nil unless defined?(::OpenTelemetry) && ::OpenTelemetry.respond_to?(:tracer_provider)

      resource = ::OpenTelemetry.tracer_provider
      resource = resource.respond_to?(:resource) ? resource.resource : nil
      return nil unless resource.respond_to?(:attribute_enumerator)

      resource.attribute_enumerator.to_h
    rescue StandardError
      nil
    end

    # Puts the SDK's service name and attributes in force beneath the
    # gem's settings; returns the settings applied (empty when nothing).
    def adopt!
      attrs = sdk_attributes
      return {} if attrs.nil? || attrs.empty?

      current = Native.settings
      changes = {}
      name = attrs["service.name"]
      if current.fetch(:service_name) == DEFAULT_SERVICE_NAME && name.is_a?(String) && !name.empty?
        changes[:service_name] = name
      end
      extra = attrs.reject { |k, _| k == "service.name" || k.to_s.start_with?("telemetry.sdk.") }
      merged = extra.merge(current.fetch(:resource_attributes))
      changes[:resource_attributes] = merged unless merged == current.fetch(:resource_attributes)
      Native.apply_settings(changes) unless changes.empty?
      changes
    rescue ArgumentError
      {}
    end
  end
end
