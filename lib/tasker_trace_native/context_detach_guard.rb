# frozen_string_literal: true

module TaskerTraceNative
  # Prepended to the OpenTelemetry API's `Context` (its singleton class)
  # once the context path is in use (see ContextListener.refresh!), so that
  # a block of the app's that ends while one of the gem's contexts is above
  # its own (an exception unwinding a job past an open run, a transaction
  # block around a step's opening event) takes the gem's contexts with it
  # instead of leaving its own behind.
  #
  # Without it, the API's `detach` pops the top context whatever the token,
  # and reports the unbalanced call: the app's block's context stays
  # current, and the same thread's next spans (the next job's, when its
  # parent is extracted from the current context) join the trace of the job
  # that failed until the thread's next lifecycle event repairs it.
  #
  # With it, when the contexts above the token's are all ones this fiber's
  # listener attached, those are detached first (matched calls, newest
  # first), and then the app's own, as the app meant. And a context of the
  # gem's whose span ended while an app's context was above it (a run that
  # ended inside the state machine's transaction block) is detached as soon
  # as the app's is. Any other detach is the API's own, unchanged: one
  # fiber-local read decides.
  module ContextDetachGuard
    # A context whose current span is one of the gem's, attached in another
    # thread than the one that span was attached in (a step's handler
    # carried it into a future's thread, as the concurrent-ruby
    # instrumentation does), is attached with that span pinned to what it
    # answers there now (see OpenTelemetrySpan#carried): the work done
    # there is the step's child, as with the SDK's own spans. Any other
    # context is attached as given.
    def attach(context)
      super(ContextListener.carried(context))
    end

    def detach(token)
      held = Thread.current[ContextListener::KEY]
      # A fiber that holds nothing of the gem's (never did, or let go of
      # it): nothing to take, nothing to drop after.
      return super if held.nil? || (held.entries.empty? && held.covered.empty?)
      # The app's balanced detach of the top context (its spans' common
      # end): nothing of the gem's above it to take, nothing covered to
      # drop after.
      return super if held.covered.empty? && token == stack.size

      i = ContextListener.taken_above(held, token)
      while i.positive?
        super(token + i)
        i -= 1
      end
      matched = super
      ContextListener.drop_uncovered(held)
      matched
    end

    # The fiber's stack emptied at once: the run root current here, if
    # any, is attached again at its next entry.
    def clear
      held = Thread.current[ContextListener::KEY]
      ContextListener.cleared(held) if held
      super
    end
  end
end
