# frozen_string_literal: true

module TaskerTraceNative
  # Connected traces: while a run is open, its root is the current
  # OpenTelemetry span in the thread (fiber) that published its opening
  # event; while a step attempt is open, the span current in its thread (the
  # run's root, or the thread's span: OpenTelemetryThreadSpan) answers with
  # the attempt's ids. So spans other instrumentation creates meanwhile
  # (Net::HTTP, Faraday, PG, ...) become their children, and a run opened
  # under a current span (the job's) becomes that span's child. See
  # docs/connected-traces.md.
  #
  # Used only when the OpenTelemetry API is loaded (`::OpenTelemetry::Trace`)
  # and the `opentelemetry_context` setting is not false: checked when the
  # tracer subscribes and when settings change (`refresh!`), never per event.
  # Otherwise Lifecycle::LISTENER (the one listener every subscription uses)
  # records plainly and nothing here runs.
  #
  # Each fiber keeps the contexts it attached, newest last, with the span each
  # belongs to and its run's root: a run's root, and at most one thread span
  # (attached once, kept while the path is in use; its entry's handle and
  # root are THREAD). A root's context is detached
  # - when its run ends in this fiber (the closing event);
  # - at this fiber's next listener call, when its run ended in another
  #   thread or was dropped;
  # - at this fiber's next opening event, when an exception unwound an app's
  #   block past it (the app's detach took it);
  # and never from another thread. Detaching keeps the API's order: with the
  # API's stack at hand, ContextDetachGuard (prepended to the API's Context)
  # lets an app's block that ends take the contexts of ours above it, and a
  # context of ours that ends under an app's waits until the app's is
  # detached; without it, the app's are put back above (counted as
  # `context_restores` in lifecycle_stats).
  module ContextListener
    # The fiber-local key of this fiber's entries (Thread#[] is fiber-local,
    # like OpenTelemetry's own Context storage).
    KEY = :__tasker_trace_native_contexts__

    # What Native.listen answers when runs ended in other threads since
    # this one was last told (and the event changed nothing of its own).
    # It answers false when the root current in the thread was entered
    # again (its next opening event: see `verify`).
    # Its other answers, and Native.record_lifecycle_event_connected's, are
    # what the event did, made so that the common ones allocate nothing:
    # - a run's root entered: a frozen [trace_id, span_id, sampled, handle,
    #   root_handle], ids as binary Strings, and `true` sixth when runs
    #   were dropped since the thread was last told (it lets go of them
    #   first);
    # - a run ended (with its attempts): minus its root's handle, or in a
    #   one-element Array when runs were dropped since the thread was last
    #   told (it lets go of them first);
    # - `:thread_span` (THREAD): a step attempt was entered in a thread
    #   where nothing of the gem's answers for it: the fiber attaches its
    #   thread span (OpenTelemetryThreadSpan), once.
    # A handle is a Fixnum that stands for one span id. (An attempt's entry
    # and end are never answered: the spans ask for the current attempt.)
    SETTLE = 0

    # The answer that asks for a thread span, and the handle (and root) of
    # a thread span's entry.
    THREAD = :thread_span

    # Spans entered and not known to have ended, process-wide; the oldest go
    # first past this many (their contexts are then detached as stale).
    MAX_OPEN_SPANS = 20_000

    # One context this fiber attached: the API's token (nil once an app's
    # block that ended took it off the stack: see `taken_above`), the
    # Context, the fiber's Context stack just before it was attached (a
    # copy; nil without access to the stack), the span's handle and its
    # run's root's handle.
    Entry = Struct.new(:token, :context, :under, :handle, :root)

    # What a fiber holds: its entries (newest last), the number of span ends
    # it has checked them against (`settle` runs only when spans ended
    # since, or when its newest context is no longer where it was put), the
    # fiber and its thread, and the entries whose span ended while an app's
    # context was above theirs (each detached once it is on top: see
    # `drop_uncovered`).
    Held = Struct.new(:entries, :seen, :fiber, :covered, :thread)

    @open = {}
    @ends = 0
    @enabled = false
    @engaged = false
    @has_stack = false
    # Every fiber's Held, while the fiber and its thread live (those that
    # ended are let go of when a fiber first holds a context, and by the
    # releasing path's check), and what that check last saw (see
    # `plain_once_released!`). Not a WeakMap: on Ruby 3.1 its keys are not
    # safe across GC.compact. Read as a snapshot (`keys`), so that other
    # threads may add to it meanwhile.
    @holders = {}.compare_by_identity
    @detached = 0
    @dropped_seen = 0
    @checked_at = -1
    @releasing_calls = 0
    @restoring = false

    class << self
      # Whether the context path is in use: the OpenTelemetry API is loaded and
      # `opentelemetry_context` is not false. Recomputed here only (when the
      # tracer subscribes and when settings change).
      def refresh!
        @has_stack = api_loaded? && ::OpenTelemetry::Context.respond_to?(:stack, true)
        @enabled = api_loaded? && Native.settings.fetch(:opentelemetry_context) != false
        if @enabled
          @span_class = OpenTelemetrySpan.for_api(::OpenTelemetry::Trace::Span)
          @thread_span_class = OpenTelemetrySpan.for_api(::OpenTelemetry::Trace::Span, OpenTelemetryThreadSpan)
        end
        @guarded = guard!(::OpenTelemetry::Context) if @enabled && @has_stack
        @engaged ||= @enabled
        Native.set_context_path(@engaged, @enabled)
        # With the guard, a run's root entered again is checked only after
        # the guard saw an app's block take a context of ours in its thread
        # (`taken_above`); without it, every time (without the stack there
        # is nothing to check).
        Native.set_detach_guard(@guarded == true || !@has_stack)
        @enabled
      end

      # Whether events go through here: once the context path was in use in
      # this process, so that a fiber still holding contexts releases them
      # at its next event after the path is switched off; until no fiber
      # holds one (then the plain path again).
      def engaged?
        @engaged
      end

      def enabled?
        @enabled
      end

      def api_loaded?
        defined?(::OpenTelemetry::Trace) && defined?(::OpenTelemetry::Context) ? true : false
      end

      # What Native.listen answered for `event` (with the context path in
      # use): true, record it here (it may open a run: see on_event); SETTLE,
      # spans ended elsewhere since this thread was last told; or the change
      # the recorded event made (see SETTLE).
      def answer(event, answer)
        return on_event(event) if answer == true
        return verify(event) if answer == false
        return thread_span(event) if answer.equal?(THREAD)

        change(event, answer)
        plain_once_released!(event) unless @enabled
        nil
      end

      # One published event that may open a run (Native.listen answered
      # true: it is the state machine's `task.start_requested`, into
      # in_progress, read natively; or the extension failed before reading
      # it). The run it opens is the child of the current span, read after
      # this fiber let go of what is stale (a run that ended elsewhere or
      # was dropped, a context an app's block unwound past), so that a new
      # run never joins an ended one. The payload is not read here: its
      # Hash's default proc, or a subclass's `[]`, could raise or change it.
      def on_event(event)
        held = Thread.current[KEY]
        return record(event.id, event.payload, true) unless @enabled && (held.nil? || held.entries.empty?)

        # The common opening: this fiber holds nothing of the gem's (as
        # `record` and `enter` would do it, in fewer calls).
        name = event.id
        answer = Native.record_lifecycle_event_connected(name, event.payload, current_parent, nil)
        return true unless answer
        return change(name, answer) || true unless answer.is_a?(Array) && answer.size == 5

        open_root(name, answer)
        true
      end

      # One event through the context path (`opens`: it may open a run, and
      # the current span is its parent). The recording itself behaves as
      # Native.record_lifecycle_event does; what concerns the context never
      # raises (a failure is logged and the event is still recorded).
      def record(name, payload, opens = false)
        held = opens ? settled_in_place(name) : settled(name)
        return Native.record_lifecycle_event(name, payload) unless @enabled

        parent = opens ? current_parent : nil
        top = held && held.entries.last
        answer = Native.record_lifecycle_event_connected(name, payload, parent, top && top.handle)
        change(name, answer) if answer
        true
      end

      # The current span's [trace_id, span_id, sampled], or nil when it is
      # not valid.
      def current_parent
        return nil unless @enabled

        context = ::OpenTelemetry::Trace.current_span.context
        context.valid? ? [context.trace_id, context.span_id, context.trace_flags.sampled?] : nil
      rescue StandardError
        nil
      end

      # How many contexts this fiber holds (for specs and debugging).
      def held
        Thread.current[KEY]&.entries&.size || 0
      end

      # For ContextDetachGuard, before an app's detach with `token`: when
      # every context above the one it is for is this fiber's (an exception
      # unwound the app's block past ours, or the block ended while ours was
      # on top), those are marked off the stack and their number returned
      # (the guard detaches them first, newest first); else 0, and the
      # API's detach goes as it would. `held`: this fiber's (the guard read
      # it).
      def taken_above(held, token)
        return 0 if (held.entries.empty? && held.covered.empty?) || !@guarded
        return 0 unless token.is_a?(Integer) && token >= 1

        stack = context_stack
        return 0 if stack.nil? || token >= stack.size

        taken = (token...stack.size).map do |i|
          entry = ours_at(held, stack[i])
          return 0 unless entry

          entry
        end
        taken.each { |entry| off_stack(held, entry) }
        context_taken
        taken.size
      rescue StandardError
        0
      end

      # For ContextDetachGuard: the fiber's stack was cleared
      # (`Context.clear`) while it held contexts of ours: none of them is on
      # it any longer. A run's root is attached again at its next entry
      # (`verify`), the thread span at the thread's next attempt (as when
      # an app's block took it). `held`: this fiber's (the guard read it).
      def cleared(held)
        return if held.entries.empty? && held.covered.empty?

        context_taken unless held.entries.empty?
        held.covered.clear
        held.entries.each { |entry| entry.token = nil }
        return unless held.entries.any? { |e| e.handle.equal?(THREAD) }

        held.entries.delete_if { |e| e.handle.equal?(THREAD) }
        @detached += 1
        Native.thread_span_held(false)
      rescue StandardError
        nil
      end

      # For ContextDetachGuard, after any detach: a context of ours whose
      # span ended while an app's context was above it is detached once it
      # is on top (the next one, if any, by this detach's own guard).
      # `held`: this fiber's.
      def drop_uncovered(held)
        return if held.covered.empty? || @restoring

        stack = context_stack
        at = stack && held.covered.index { |e| e.context.equal?(stack.last) }
        return unless at

        held.covered.delete_at(at)
        ::OpenTelemetry::Context.detach(stack.size)
      rescue StandardError
        nil
      end

      # For ContextDetachGuard#attach: `context`, or, when its current span
      # is one of the gem's attached in another thread, a context with that
      # span pinned (see OpenTelemetrySpan#carried). Never raises.
      def carried(context)
        return context unless @enabled && context.is_a?(::OpenTelemetry::Context)

        span = ::OpenTelemetry::Trace.current_span(context)
        return context unless span.is_a?(OpenTelemetrySpan) || span.is_a?(OpenTelemetryThreadSpan)

        pinned = span.carried
        pinned.equal?(span) ? context : ::OpenTelemetry::Trace.context_with_span(pinned, parent_context: context)
      rescue StandardError
        context
      end

      # Detaches every context this fiber holds.
      def release!
        held = Thread.current[KEY]
        leave(held.entries) { true } if held
        nil
      end

      private

      # Prepends ContextDetachGuard to `context_class` (the API's Context)
      # once: whether it is there.
      def guard!(context_class)
        guard = context_class.singleton_class
        guard.prepend(ContextDetachGuard) unless guard.include?(ContextDetachGuard)
        # The attach past the guard's, for the gem's own contexts (see
        # own_attach); none when something else wraps it above the guard.
        attach = guard.instance_method(:attach)
        @api_attach = attach.owner == ContextDetachGuard ? attach.super_method : nil
        true
      rescue StandardError
        false
      end

      # An app's block took contexts of ours in this thread (or cleared
      # them): the run's root current here is checked at its next entry
      # (`verify`). Never raises.
      def context_taken
        Native.context_taken
      rescue StandardError
        nil
      end

      # The entry of this fiber's whose context is `context`: attached and
      # held, or ended and covered.
      def ours_at(held, context)
        held.entries.find { |e| e.token && e.context.equal?(context) } ||
          held.covered.find { |e| e.context.equal?(context) }
      end

      # An entry whose context the guard is about to detach: a held one
      # stays held, off the stack, until it is settled or attached again
      # (`reenter`); a covered one is done.
      def off_stack(held, entry)
        entry.token = nil
        if entry.handle.equal?(THREAD)
          # Its next attempt attaches one again (see `thread_span`).
          held.entries.delete_if { |e| e.equal?(entry) }
          Native.thread_span_held(false)
        end
        at = held.covered.index { |e| e.equal?(entry) }
        held.covered.delete_at(at) if at
        @detached += 1
      end

      # Switched off after it was in use (releasing): once no living fiber
      # holds a context, nothing is left to release, and events take the
      # plain path again (step events wait and are read together). A dead
      # fiber's contexts went with it. Checked after a fiber detached
      # something, and every 256th call otherwise (a fiber may have died).
      def plain_once_released!(event)
        @releasing_calls += 1
        return unless @engaged && (@detached != @checked_at || (@releasing_calls % 256).zero?)

        @checked_at = @detached
        return unless let_go_of_ended_holders.all? { |held| held.entries.empty? }

        @engaged = false
        Native.set_context_path(false, false)
      rescue StandardError => e
        context_error(event, e)
      end

      # This fiber's entries (registered among the holders).
      def hold
        let_go_of_ended_holders
        held = Held.new([], @ends, Fiber.current, [], Thread.current)
        @holders[held] = true
        Thread.current[KEY] = held
      end

      # Forgets the holders whose fiber or thread ended (their contexts went
      # with them); the living ones.
      def let_go_of_ended_holders
        @holders.keys.select do |held|
          next true if held.thread.alive? && held.fiber.alive?

          @holders.delete(held)
          false
        end
      end

      # This fiber's entries, settled first when spans ended since it last
      # looked, or when the context path is off (everything it holds goes).
      # `event` (here and below) is the event or its name, read only to log
      # a failure.
      def settled(event)
        held = Thread.current[KEY]
        settle(event, held) if held && (held.seen != @ends || !@enabled) && !held.entries.empty?
        held
      end

      # This fiber's entries, settled as `settled` does, and also when its
      # newest context is no longer on top of the fiber's stack (an app's
      # block was unwound past it, or an app attached a context above it).
      def settled_in_place(event)
        held = Thread.current[KEY]
        return held if held.nil? || held.entries.empty?

        forget_dropped(event)
        stack = context_stack
        settle(event, held) if held.seen != @ends || !@enabled || stack.nil? ||
                               !stack.last.equal?(held.entries.last.context)
        held
      end

      # Detaches this fiber's stale entries: their span or run ended, or their
      # context is no longer in the fiber's stack (see `detach`).
      def settle(event, held)
        held.seen = @ends
        if @enabled
          stack = context_stack
          leave(held.entries) do |e|
            !e.handle.equal?(THREAD) && (!@open.key?(e.handle) || !@open.key?(e.root) || gone?(stack, e))
          end
        else
          leave(held.entries) { true }
        end
      rescue StandardError => e
        context_error(event, e)
      end

      # What a recorded event did (see SETTLE), done in this fiber.
      def change(event, answer)
        if answer.is_a?(Array)
          return enter(event, answer) if answer.size > 1

          forget_dropped(event)
          answer = answer.first
        end
        if answer > 0
          ended(event, answer, false)
        elsif answer == SETTLE
          forget_dropped(event)
          settled(event)
        else
          ended(event, -answer, true)
        end
      rescue StandardError => e
        context_error(event, e)
      end

      # Runs the tracer dropped unfinished (expired past `lifecycle_ttl`, or
      # evicted past `lifecycle_max_open_runs`) since this was last asked:
      # their spans ended, and every fiber lets go of their contexts at its
      # next settling. Asked when an event is answered "settle" (the tracer
      # answers it to every thread after a run is dropped, or marks the
      # thread's next span entered with it) and before a run's opening
      # event reads its parent.
      def forget_dropped(event)
        dropped = Native.dropped_span_handles(@dropped_seen)
        return unless dropped

        @dropped_seen = dropped[0]
        i = 1
        while i < dropped.size
          @ends += 1 if @open.delete(dropped[i])
          i += 1
        end
      rescue StandardError => e
        context_error(event, e)
      end

      # A span ended (an attempt, or a run and with it its attempts): every
      # fiber checks its entries against it at its next call; this one at
      # once (and, when it was up to date, stays so).
      def ended(event, handle, run)
        held = Thread.current[KEY]
        return if run && held && ended_on_top(held, handle)

        held = settled(event)
        up_to_date = held && held.seen == @ends
        @ends += 1 if @open.delete(handle)
        return unless held

        leave(held.entries) { |e| (run ? e.root : e.handle) == handle }
        held.seen = @ends if up_to_date
      end

      # A run ended whose root is this fiber's only entry, on top of the
      # fiber's stack where it was put, with nothing to settle: its context
      # is detached at once (what `leave` and `detach` do, in few calls: the
      # common end of a run). Whether it was.
      def ended_on_top(held, handle)
        entries = held.entries
        return false unless entries.size == 1 && held.seen == @ends && held.covered.empty? && @enabled

        entry = entries[0]
        token = entry.token
        return false unless entry.handle == handle && token

        stack = context_stack
        return false unless stack && stack.size == token && stack[-1].equal?(entry.context)

        entries.clear
        @detached += 1
        @ends += 1 if @open.delete(handle)
        held.seen = @ends
        ::OpenTelemetry::Context.detach(token)
        true
      end

      def enter(event, change)
        forget_dropped(event) if change.size > 5
        held = Thread.current[KEY]
        return open_root(event, change) if held.nil? || held.entries.empty?

        handle = change[3]
        root = change[4]
        entries = held.entries
        top = entries.last
        stack = context_stack
        # Entered again while this thread was not up to date (told
        # everything): checked as `verify` checks it.
        return reenter(event, held, top, stack) if top.handle == handle

        # Settled already unless a span ended since or an app's block was
        # unwound past the newest entry (its context is no longer on top).
        settle(event, held) if held.seen != @ends || stack.nil? || !stack.last.equal?(top.context)
        return if entries.any? { |e| e.handle == handle }

        # Another attempt of this run was current here: its closing event
        # never came to this fiber, and attempts in one fiber do not nest.
        leave(entries) { |e| e.root == root && e.handle != root } if handle != root
        attach(entries, @span_class.new(change), handle, root, stack)
      end

      # The span `entered` (what Native answered: see SETTLE) made current
      # in a fiber that held nothing of the gem's (unless the payload's
      # conversion published in it meanwhile: then as `enter` does it).
      # `name`: the event or its name, read only to log a failure.
      def open_root(name, entered)
        held = Thread.current[KEY]
        return change(name, entered) unless held.nil? || held.entries.empty?

        held ||= hold
        held.seen = @ends
        attach(held.entries, @span_class.new(entered), entered[3], entered[4], context_stack)
      rescue StandardError => e
        context_error(name, e)
      end

      # A step attempt was entered in this thread and nothing of the gem's
      # answers for it here (Native.listen answered THREAD): unless this
      # fiber's current span is the attempt's run's root (its context was
      # carried into this thread: it answers for its run's attempts), the
      # fiber attaches
      # a thread span above its current context, once: it stays while the
      # context path is in use, and answers for every attempt this thread
      # runs (OpenTelemetryThreadSpan). An app's block that takes it (the
      # guard) has the next attempt attach one again.
      def thread_span(event)
        held = settled(event)
        forget_dropped(event)
        return unless @enabled

        stack = context_stack
        top = held && held.entries.last
        if top&.handle.equal?(THREAD) && top.token && (stack.nil? || stack.last.equal?(top.context))
          # The thread's view was forgotten; its span is still on top.
          Native.thread_span_held(true)
          return
        end
        below = ::OpenTelemetry::Context.current
        current = ::OpenTelemetry::Trace.current_span(below)
        return if current.is_a?(@span_class) && current.answers_here?

        held ||= hold
        context = ::OpenTelemetry::Trace.context_with_span(@thread_span_class.new(current), parent_context: below)
        under = stack&.dup
        token = own_attach(context)
        held.entries << Entry.new(token, context, under, THREAD, THREAD)
        Native.thread_span_held(true)
      rescue StandardError => e
        context_error(event, e)
      end

      # The run's root current in this thread was entered again (the
      # initializer's `task.start_requested`, after the state machine's):
      # when an app's block took its context since (an exception unwound
      # the block the state machine's copy was published in, or the block
      # ended while it was on top), what the block left is taken out and
      # the root's span attached again, so the run's calls nest under it.
      def verify(event)
        held = Thread.current[KEY]
        top = held && held.entries.last
        reenter(event, held, top, context_stack) if top
      end

      # The span of `top` (this fiber's newest entry) entered again: its
      # context is settled and attached again when it is no longer on top.
      def reenter(event, held, top, stack)
        return if stack.nil? || (held.seen == @ends && stack.last.equal?(top.context))

        span = ::OpenTelemetry::Trace.current_span(top.context)
        settle(event, held)
        return if held.entries.any? { |e| e.handle == top.handle } || !@open.key?(top.handle)

        attach(held.entries, span, top.handle, top.root, stack)
      rescue StandardError => e
        context_error(event, e)
      end

      # Attaches one of the gem's contexts, made in this thread: the API's
      # attach past ContextDetachGuard's, which would find nothing to pin
      # (a few cold calls less at a run's opening); the guarded attach when
      # something else wraps the API's above the guard.
      def own_attach(context)
        api = @api_attach
        api ? api.bind_call(::OpenTelemetry::Context, context) : ::OpenTelemetry::Context.attach(context)
      end

      # Attaches a context with `span` current above the fiber's current
      # one, as an entry of the span `handle` of the run `root`.
      def attach(entries, span, handle, root, stack)
        below = ::OpenTelemetry::Context.current
        context = ::OpenTelemetry::Trace.context_with_span(span, parent_context: below)
        # What was under it matters only where the guard is not there to
        # take the gem's contexts with an app's block (see `left_behind`).
        under = stack&.dup unless @guarded
        token = own_attach(context)
        entries << Entry.new(token, context, under, handle, root)
        @open[root] = true
        @open[handle] = true
        while @open.size > MAX_OPEN_SPANS
          @open.shift
          @ends += 1
        end
      end

      # Detaches the entries (newest first) the block selects, and this
      # fiber's thread span when it was attached above one of them (a root
      # goes with what is above it; the thread's next attempt attaches a
      # thread span again).
      def leave(entries, &select)
        t = entries.rindex { |e| e.handle.equal?(THREAD) }
        thread_too = t && (0...t).any? { |j| select.call(entries[j]) }
        i = entries.size - 1
        while i >= 0
          entry = entries[i]
          if (thread_too && i == t) || yield(entry)
            entries.delete_at(i)
            @detached += 1
            Native.thread_span_held(false) if entry.handle.equal?(THREAD)
            detach(entry, entries)
          end
          i -= 1
        end
      end

      def gone?(stack, entry)
        return true unless entry.token
        return false unless stack
        return false if stack[entry.token - 1].equal?(entry.context)

        stack.none? { |c| c.equal?(entry.context) }
      end

      # Detaches one entry's context in the order the API requires
      # (`entries`: the fiber's other entries).
      def detach(entry, entries)
        return unless entry.token # an app's block took it (see taken_above)

        stack = context_stack
        return detach_current(entry) unless stack

        at = entry.token - 1
        at = stack.rindex { |c| c.equal?(entry.context) } unless stack[at].equal?(entry.context)
        return cover(entry, stack) if at && at < stack.size - 1 && @guarded

        at ||= left_behind(stack, entry, entries)
        remove_at(stack, at) if at
      end

      # With the guard: a context of ours under an app's (a run that ended
      # inside the state machine's transaction block, whose span is the
      # app's current one) stays until the app's is detached, and goes then
      # (`drop_uncovered`), so that the app's own detach stays matched.
      # Covered entries whose context left the stack otherwise
      # (`Context.clear`) are forgotten.
      def cover(entry, stack)
        covered = Thread.current[KEY].covered
        covered.select! { |e| stack.any? { |c| c.equal?(e.context) } }
        covered << entry
      end

      # Where the context is that an app's detach was for, when that detach
      # took ours instead (an app's block that began before ours ended while
      # ours was on top: an exception, or an unbalanced detach): each block
      # that ended so popped the context above its own, so one context is
      # left behind, the topmost of those that were below ours and still
      # are, that is not ours. nil when there is none (Context.clear).
      # What was below ours and has left the stack since (one of ours taken
      # out of the middle, an app's context detached) is not counted.
      def left_behind(stack, entry, entries)
        under = entry.under
        return nil unless under

        under = under.select { |c| stack.any? { |s| s.equal?(c) } }
        kept = 0
        kept += 1 while kept < under.size && kept < stack.size && stack[kept].equal?(under[kept])
        (kept - 1).downto(0) do |i|
          return i unless entries.any? { |e| e.context.equal?(stack[i]) }
        end
        nil
      end

      # Without access to the stack: only a context that is current can go.
      def detach_current(entry)
        ::OpenTelemetry::Context.detach(entry.token) if ::OpenTelemetry::Context.current.equal?(entry.context)
      end

      # Removes the context at `index`: what the app attached above it is
      # detached and attached again, in order (counted).
      def remove_at(stack, index)
        return ::OpenTelemetry::Context.detach(stack.size) if index == stack.size - 1

        above = stack[(index + 1)..] || []
        # What is above goes back as it was: the guard drops nothing of ours
        # it uncovers meanwhile (see drop_uncovered).
        @restoring = true
        above.size.times { ::OpenTelemetry::Context.detach(stack.size) }
        ::OpenTelemetry::Context.detach(stack.size)
        return if above.empty?

        above.each { |c| ::OpenTelemetry::Context.attach(c) }
        Native.count_context_restore
      ensure
        @restoring = false
      end

      # The fiber's Context stack, read only (the API's private `stack`,
      # present in every 1.x release); nil when it is not there.
      def context_stack
        @has_stack ? ::OpenTelemetry::Context.send(:stack) : nil
      end

      def context_error(event, error)
        name = event.respond_to?(:payload) ? event.id : event
        TaskerTraceNative.log_lifecycle_error(name, "OpenTelemetry context: #{error.class}: #{error.message}")
      rescue StandardError
        nil
      end
    end
  end
end
