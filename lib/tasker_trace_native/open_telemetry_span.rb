# frozen_string_literal: true

module TaskerTraceNative
  # The span a connected context carries (see ContextListener): a
  # non-recording OpenTelemetry span for a run's root or a step attempt,
  # made from what Native.listen answered when the span was entered.
  #
  # It is an instance of a subclass of the loaded API's own
  # `OpenTelemetry::Trace::Span` (`for_api`), so it is everything that class
  # is (`recording?` false, the no-op setters). Only its SpanContext is made
  # when first asked for (`context`, the API's public reader): most attempts
  # end without any code asking for their span's ids, and making the API's
  # objects is most of what attaching a context costs.
  module OpenTelemetrySpan
    class << self
      # The subclass of `api_span` (the API's Span class) with this module's
      # methods, made once per API class.
      def for_api(api_span)
        return @span_class if @span_class&.superclass.equal?(api_span)

        methods = self
        @span_class = Class.new(api_span) { include methods }
      end
    end

    # `entered` is the frozen [trace_id, span_id, sampled, handle,
    # root_handle] Native.listen answers (binary ids). The API's own
    # initializer is not called: it would make the SpanContext now.
    def initialize(entered) # rubocop:disable Lint/MissingSuper
      @entered = entered
    end

    # The span's OpenTelemetry::Trace::SpanContext, made at the first call.
    def context
      @context ||= begin
        trace_id, span_id, sampled = @entered
        flags = sampled ? ::OpenTelemetry::Trace::TraceFlags::SAMPLED : ::OpenTelemetry::Trace::TraceFlags::DEFAULT
        ::OpenTelemetry::Trace::SpanContext.new(trace_id: trace_id, span_id: span_id, trace_flags: flags)
      end
    end

    def inspect
      "#<TaskerTraceNative span #{@entered[1].unpack1('H*')} of trace #{@entered[0].unpack1('H*')}>"
    end
  end
end
