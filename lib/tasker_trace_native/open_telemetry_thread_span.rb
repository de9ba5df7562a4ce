# frozen_string_literal: true

module TaskerTraceNative
  # The span of the context ContextListener attaches once in a thread that
  # runs steps where no run's root is current (a future's thread): it stays
  # attached, and its `context` is the SpanContext of the step attempt
  # current in the asking thread, or, between attempts, that of the span
  # that was current when it was attached (usually none: the API's invalid
  # SpanContext). So a step's HTTP and SQL spans are the attempt's children,
  # and entering or ending an attempt attaches and detaches nothing.
  #
  # An instance of a subclass of the loaded API's `OpenTelemetry::Trace::Span`
  # (`OpenTelemetrySpan.for_api(api_span, OpenTelemetryThreadSpan)`), as
  # OpenTelemetrySpan's are.
  module OpenTelemetryThreadSpan
    # `below`: the span current when it was attached.
    def initialize(below) # rubocop:disable Lint/MissingSuper
      @below = below
      @owner = Thread.current
    end

    def context
      ids = OpenTelemetrySpan.current_attempt(nil)
      return @below.context unless ids

      (@attempt = OpenTelemetrySpan.attempt_pair(@attempt, ids))[1]
    end

    # The span a context carrying this one is attached with in the calling
    # thread (ContextDetachGuard#attach): itself in the thread it was
    # attached in; in another (a step's handler carried the context into a
    # future's), the attempt current in that thread now, as the API's
    # non-recording span, or, between attempts, the span below it.
    def carried
      return self if @owner.equal?(Thread.current)

      ids = OpenTelemetrySpan.current_attempt(nil, @owner)
      ids ? ::OpenTelemetry::Trace.non_recording_span(OpenTelemetrySpan.span_context(ids)) : @below
    end

    def inspect
      "#<TaskerTraceNative thread span over #{@below.inspect}>"
    end
  end
end
