# frozen_string_literal: true

module TaskerTraceNative
  # The span a run's root context carries (see ContextListener): a
  # non-recording OpenTelemetry span, made from what Native.listen answered
  # when the run was entered.
  #
  # It is an instance of a subclass of the loaded API's own
  # `OpenTelemetry::Trace::Span` (`for_api`), so it is everything that class
  # is (`recording?` false, the no-op setters). Its SpanContext (`context`,
  # the API's public reader) is made when first asked for. While a step
  # attempt of its run is current in the asking thread (a step run in the
  # job's own thread, or in a future's thread the root's context was
  # carried into), it answers that attempt's SpanContext: no context is
  # attached per attempt (see OpenTelemetryThreadSpan for the threads the
  # root is not current in).
  module OpenTelemetrySpan
    class << self
      # The subclass of `api_span` (the API's Span class) with the methods
      # of `methods` (this module, or OpenTelemetryThreadSpan), made once
      # per API class.
      def for_api(api_span, methods = self)
        @span_classes ||= {}
        made = @span_classes[methods]
        return made if made&.superclass.equal?(api_span)

        @span_classes[methods] = Class.new(api_span) { include methods }
      end

      # Native.current_attempt(root), or nil when it fails: the app's code
      # asking for a span's ids (its HTTP client, its SQL) never sees the
      # gem raise. Reading the events that wait may run a payload value's
      # `to_s`; an exception that must propagate (an interrupt) still does.
      # With `owner` (a Thread): the attempt current there instead.
      def current_attempt(root, owner = nil)
        owner ? Native.current_attempt(root, owner) : Native.current_attempt(root)
      rescue StandardError => e
        TaskerTraceNative.log_lifecycle_error("current_attempt", "OpenTelemetry context: #{e.class}: #{e.message}")
        nil
      end

      # The attempt `ids` ([trace_id, span_id, sampled, handle]) as a
      # frozen [handle, SpanContext]: `last` when it is that attempt's
      # already. A span keeps the pair in one reference, so that threads
      # asking at once never see a mixed one.
      def attempt_pair(last, ids)
        return last if last && last[0] == ids[3]

        [ids[3], span_context(ids)].freeze
      end

      # The SpanContext of `ids` ([trace_id, span_id, sampled, ...], binary
      # ids).
      def span_context(ids)
        trace_id, span_id, sampled = ids
        flags = sampled ? ::OpenTelemetry::Trace::TraceFlags::SAMPLED : ::OpenTelemetry::Trace::TraceFlags::DEFAULT
        ::OpenTelemetry::Trace::SpanContext.new(trace_id: trace_id, span_id: span_id, trace_flags: flags)
      end
    end

    # `entered` is the frozen [trace_id, span_id, sampled, handle,
    # root_handle] Native.listen answers (binary ids). The API's own
    # initializer is not called: it would make the SpanContext now. Made in
    # the thread that attaches it (its owner).
    def initialize(entered) # rubocop:disable Lint/MissingSuper
      @entered = entered
      @owner = Thread.current
    end

    # The span's OpenTelemetry::Trace::SpanContext, made at the first call;
    # or, while an attempt of its run is current in the calling thread,
    # that attempt's.
    def context
      ids = OpenTelemetrySpan.current_attempt(@entered[1])
      return (@attempt = OpenTelemetrySpan.attempt_pair(@attempt, ids))[1] if ids

      @context ||= OpenTelemetrySpan.span_context(@entered)
    end

    # Whether it answers for the attempt current in the calling thread: one
    # of its run's is (ContextListener then attaches nothing for it).
    def answers_here?
      OpenTelemetrySpan.current_attempt(@entered[1]) ? true : false
    end

    # The span a context carrying this one is attached with in the calling
    # thread (ContextDetachGuard#attach): itself in its owner; in another
    # thread (a step's handler carried the context into a future's), the
    # attempt of its run current in its owner now, as the API's
    # non-recording span, or itself when none is (a run's root carried into
    # the thread that runs its step answers for that step there).
    def carried
      return self if @owner.equal?(Thread.current)

      ids = OpenTelemetrySpan.current_attempt(@entered[1], @owner)
      ids ? ::OpenTelemetry::Trace.non_recording_span(OpenTelemetrySpan.span_context(ids)) : self
    end

    def inspect
      "#<TaskerTraceNative span #{@entered[1].unpack1('H*')} of trace #{@entered[0].unpack1('H*')}>"
    end
  end
end
