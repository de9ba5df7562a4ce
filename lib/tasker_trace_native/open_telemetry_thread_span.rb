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
  # (`for_api`), as OpenTelemetrySpan's are.
  module OpenTelemetryThreadSpan
    class << self
      def for_api(api_span)
        return @span_class if @span_class&.superclass.equal?(api_span)

        methods = self
        @span_class = Class.new(api_span) { include methods }
      end
    end

    # `below`: the span current when it was attached.
    def initialize(below) # rubocop:disable Lint/MissingSuper
      @below = below
    end

    def context
      ids = OpenTelemetrySpan.current_attempt(nil)
      return @below.context unless ids

      last = @attempt
      return last[1] if last && last[0] == ids[3]

      context = OpenTelemetrySpan.span_context(ids)
      @attempt = [ids[3], context].freeze
      context
    end

    def inspect
      "#<TaskerTraceNative thread span over #{@below.inspect}>"
    end
  end
end
