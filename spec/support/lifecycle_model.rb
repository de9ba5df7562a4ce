# frozen_string_literal: true

# A pure-Ruby model of the lifecycle tracer, written from the issue's table
# and the rules in src/lifecycle/mod.rs (not from the Rust code), for the
# differential spec. It keeps shapes only: names, ids, statuses, attributes,
# span events and links; times and durations are left aside, and so is the
# TTL (the differential runs with a TTL far beyond its streams).
class LifecycleModel
  Span = Struct.new(:attrs, :status, :message, :closed, keyword_init: true)
  Attempt = Struct.new(:order, :step, :span, :closed_by, keyword_init: true)
  Entry = Struct.new(:order, :target, :name, :attrs, keyword_init: true)

  # One run: its root, attempts in start order, span events in arrival order.
  class Run
    attr_accessor :task, :root, :end_state, :attempts, :events, :next_order, :link, :name

    def initialize(task, attrs, link)
      @task = task
      @root = Span.new(attrs: attrs, status: "UNSET", message: nil, closed: false)
      @end_state = "open"
      @attempts = []
      @events = []
      @next_order = 0
      @link = link
      @name = "tasker.task.execution"
    end

    def entries
      1 + attempts.size + events.size
    end

    def latest_attempt(step)
      attempts.rindex { |a| a.step == step }
    end

    def open_attempt(step)
      i = latest_attempt(step)
      i && !attempts[i].span.closed ? i : nil
    end

    def take_order
      @next_order += 1
      @next_order - 1
    end

    # The shape compared with the native tracer's lifecycle_runs.
    def shape
      events_of = ->(target) { events.select { |e| e.target == target }.map { |e| [e.name, e.attrs] } }
      {
        task_id: task, end: end_state, linked: !link.nil?, name: name,
        root: { status: root.status, message: root.message, attrs: root.attrs, events: events_of.call(:root) },
        attempts: attempts.map do |a|
          { step_id: a.step, status: a.span.status, message: a.span.message, attrs: a.span.attrs,
            events: events_of.call(a.order), open: !a.span.closed && end_state == "open" }
        end
      }
    end
  end

  STATS = %i[events_recorded events_ignored events_orphaned events_late events_dropped
             evicted_runs dropped_finished_runs dropped_spans].freeze

  attr_reader :stats

  def initialize(max_open_runs:, max_spans_per_run:, max_finished_runs:)
    @max_open = max_open_runs
    @max_spans = max_spans_per_run
    @max_finished = max_finished_runs
    @open = {} # task => Run, least recently active first
    @finished = [] # runs waiting for export, least recently active first
    @history = {} # task => { run:, waiting: }, least recently finished first
    @stats = STATS.to_h { |k| [k, 0] }
  end

  # Canonical ids: Integers, and Strings of a plain decimal integer, are one id.
  def self.id(value)
    case value
    when nil, false then nil
    when Integer then value
    when Symbol then id(value.to_s)
    when String
      value.match?(/\A(?:0|[1-9]\d*)\z/) && value.to_i < 2**63 ? value.to_i : value
    else value.to_s
    end
  end

  # The attributes an event carries: known payload keys renamed as the
  # model says, the allowlisted ones as they are, nil values absent.
  def self.attributes(payload, allowlist)
    attrs = {}
    # execution_duration is not read: the tracer measures it.
    known = %w[task_name step_name attempt_number retry_limit error_message exception_class error_class
               total_steps completed_steps failed_steps]
    (known + allowlist).each do |key|
      next unless payload.key?(key.to_sym)

      value = payload[key.to_sym]
      next if value.nil?

      attrs[key] = value.is_a?(Symbol) ? value.to_s : value
    end
    attrs
  end

  def record(name, payload, allowlist: [])
    outcome = route(name, payload, allowlist)
    key = { ignored: :events_ignored, orphaned: :events_orphaned, late: :events_late,
            dropped: :events_dropped }.fetch(outcome, :events_recorded)
    @stats[key] += 1
    outcome
  end

  # The finished runs, removed (an export with drain: true).
  def drain
    runs = @finished
    @finished = []
    runs.each { |r| forget_waiting(r) }
    runs
  end

  def waiting
    @finished.dup
  end

  def open_runs
    @open.values
  end

  private

  # An event's own attributes, ready to be stored: an `error_class` beside
  # an `exception_class` shadows it, and is stored as `exception_class`.
  def prepared(attrs)
    attrs = attrs.dup
    attrs.delete("exception_class") if attrs.key?("error_class")
    rename(attrs)
  end

  def rename(attrs)
    attrs.each_with_object({}) do |(k, v), out|
      case k
      when "error_message" then out["error"] = v
      when "error_class" then out["exception_class"] = v
      else out[k] = v
      end
    end
  end

  # attempt_number keeps the highest; an
  # exception_class never replaces one stored, an error_class always does;
  # any other key takes the newer value.
  def merge(into, attrs)
    attrs = attrs.dup
    attrs.delete("exception_class") if attrs.key?("error_class")
    attrs.each do |k, v|
      case k
      when "attempt_number"
        old = into[k]
        into[k] = v if !old.is_a?(Numeric) || !v.is_a?(Numeric) || v > old
      when "exception_class" then into[k] = v unless into.key?(k)
      when "error_class" then into["exception_class"] = v
      when "error_message" then into["error"] = v
      else into[k] = v
      end
    end
  end

  # Names that come before a run opens: span events in an open run, else
  # ignored (never attached to a finished run).
  PREAMBLE = %w[task.before_transition step.initialize_requested observability.task.enqueue
                step.retry_requested].freeze

  def route(name, payload, allowlist)
    task = self.class.id(payload[:task_id])
    return failed_creation(self.class.attributes(payload, allowlist)) if task.nil? && name == "task.failed"
    return :ignored if task.nil?

    ev = { name: name, task: task, step: self.class.id(payload[:step_id]),
           attrs: self.class.attributes(payload, allowlist) }
    if (run = @open.delete(task))
      @open[task] = run # most recently active
      outcome, ended = apply(run, ev, live: true)
      finish(@open.delete(task)) if ended
      return outcome
    end
    in_progress = %w[in_progress].include?(payload[:to_state].to_s) && payload.key?(:to_state)
    case name
    when "task.start_requested" then in_progress ? open_run(task, ev) : :ignored
    when *PREAMBLE then :ignored
    else
      past = @history[task]
      return :ignored if name == "task.initialize_requested" && past&.fetch(:waiting).nil?
      return :orphaned if past.nil?
      return :late if past[:waiting].nil?

      run = past[:waiting]
      outcome, = apply(run, ev, live: false)
      unless outcome == :late
        @finished.delete(run)
        @finished << run
      end
      outcome
    end
  end

  def open_run(task, ev)
    while @open.size >= @max_open
      @open.shift
      @stats[:evicted_runs] += 1
    end
    past = @history[task]
    link = nil
    if past
      past[:waiting] = nil
      link = past[:run]
    end
    attrs = prepared(ev[:attrs]).merge("task_id" => task)
    @open[task] = Run.new(task, attrs, link)
    :opened
  end

  # task.failed without a task id: one finished span, tasker.task.initialize.
  def failed_creation(attrs)
    run = Run.new(nil, prepared(attrs), nil)
    run.name = "tasker.task.initialize"
    run.root.closed = true
    run.root.status, run.root.message = status_for("task.failed", run.root)
    run.end_state = "failed"
    finish(run)
    :closed
  end

  def finish(run)
    unless run.task.nil?
      @history.delete(run.task)
      @history[run.task] = { run: run, waiting: run }
      @history.shift while @history.size > @max_open + @max_finished
    end
    @finished << run
    while @finished.size > @max_finished
      dropped = @finished.shift
      forget_waiting(dropped)
      @stats[:dropped_finished_runs] += 1
    end
  end

  def forget_waiting(run)
    past = run.task.nil? ? nil : @history[run.task]
    past[:waiting] = nil if past && past[:waiting].equal?(run)
  end

  # Room for one more span or span event under max_spans_per_run: the
  # oldest span event or closed attempt (with its events) goes first; open
  # attempts and the root stay, else the new entry is refused.
  def room?(run)
    return true if run.entries < @max_spans

    open = run.attempts.count { |a| !a.span.closed }
    if 1 + open >= @max_spans
      @stats[:dropped_spans] += 1
      return false
    end
    while run.entries >= @max_spans
      oldest_event = run.events.first
      closed = run.attempts.find { |a| a.span.closed }
      if closed && (oldest_event.nil? || closed.order < oldest_event.order)
        run.attempts.delete(closed)
        gone = run.events.count { |e| e.target == closed.order }
        run.events.reject! { |e| e.target == closed.order }
        @stats[:dropped_spans] += 1 + gone
      else
        run.events.shift
        @stats[:dropped_spans] += 1
      end
    end
    true
  end

  def push_event(run, target, name, attrs)
    return false unless room?(run)

    run.events << Entry.new(order: run.take_order, target: target, name: name, attrs: prepared(attrs))
    true
  end

  def event_on_root(run, ev, with_step:)
    attrs = ev[:attrs].dup
    attrs["step_id"] = ev[:step] if with_step && !ev[:step].nil?
    push_event(run, :root, ev[:name], attrs) ? :added : :dropped
  end

  def orphan_on_root(run, ev)
    event_on_root(run, ev, with_step: true)
    :orphaned
  end

  def status_for(name, span)
    case name
    when "task.completed", "task.resolved_manually", "step.completed", "step.resolved_manually" then ["OK", nil]
    when "task.failed", "step.failed"
      error = span.attrs["error"]
      ["ERROR", error.is_a?(String) ? error : nil]
    when "task.cancelled", "step.cancelled" then %w[ERROR cancelled]
    else ["UNSET", nil]
    end
  end

  def apply(run, ev, live:)
    name = ev[:name]
    case name
    when "task.start_requested"
      merge(run.root.attrs, ev[:attrs])
      [:merged, false]
    when "task.initialize_requested"
      unless live
        return [:late, false] unless run.end_state == "pending"

        # The finalizer's copy brings the counts.
        merge(run.root.attrs, ev[:attrs])
        return [:merged, false]
      end

      run.root.closed = true
      run.end_state = "pending"
      merge(run.root.attrs, ev[:attrs])
      push_event(run, :root, "task.pending", {})
      [:closed, true]
    when "task.completed", "task.failed", "task.cancelled", "task.resolved_manually"
      close_run(run, ev, live)
    when "step.execution_requested", "step.before_handle"
      return [orphan_on_root(run, ev), false] if ev[:step].nil?

      i = run.open_attempt(ev[:step])
      if i && name == "step.execution_requested"
        merge(run.attempts[i].span.attrs, ev[:attrs])
        [:merged, false]
      elsif i
        [push_event(run, run.attempts[i].order, name, ev[:attrs]) ? :added : :dropped, false]
      elsif live
        [open_attempt(run, ev), false]
      else
        [:late, false]
      end
    when "step.completed", "step.failed", "step.cancelled", "step.resolved_manually"
      [close_attempt(run, ev), false]
    when "observability.step.backoff"
      i = ev[:step].nil? ? nil : run.open_attempt(ev[:step])
      fits = i ? push_event(run, run.attempts[i].order, name, ev[:attrs]) : event_on_root(run, ev, with_step: true) == :added
      [fits ? :added : :dropped, false]
    else
      [event_on_root(run, ev, with_step: true), false]
    end
  end

  def open_attempt(run, ev)
    return :dropped unless room?(run)

    attrs = prepared(ev[:attrs]).merge("task_id" => run.task, "step_id" => ev[:step])
    attempt = Attempt.new(order: run.take_order, step: ev[:step], closed_by: nil,
                          span: Span.new(attrs: attrs, status: "UNSET", message: nil, closed: false))
    run.attempts << attempt
    push_event(run, attempt.order, ev[:name], {}) if ev[:name] == "step.before_handle"
    :opened
  end

  def close_run(run, ev, live)
    name = ev[:name]
    merge(run.root.attrs, ev[:attrs])
    state = { "task.completed" => "completed", "task.failed" => "failed", "task.cancelled" => "cancelled",
              "task.resolved_manually" => "resolved_manually" }.fetch(name)
    marked = %w[cancelled resolved_manually].include?(state)
    if live
      run.root.closed = true
      run.root.status, run.root.message = status_for(name, run.root)
      run.end_state = state
      push_event(run, :root, name, {}) if marked
      return [:closed, true]
    end
    if run.end_state == "failed"
      error = run.root.attrs["error"]
      run.root.message = error if error.is_a?(String)
    end
    push_event(run, :root, name, {}) if marked && run.end_state != state
    [:merged, false]
  end

  def close_attempt(run, ev)
    i = ev[:step].nil? ? nil : run.latest_attempt(ev[:step])
    return orphan_on_root(run, ev) if i.nil?

    name = ev[:name]
    attempt = run.attempts[i]
    marked = %w[step.cancelled step.resolved_manually].include?(name)
    merge(attempt.span.attrs, ev[:attrs])
    if attempt.span.closed
      if attempt.closed_by == "step.failed"
        error = attempt.span.attrs["error"]
        attempt.span.message = error if error.is_a?(String)
      end
      mark = marked && attempt.closed_by != name
      outcome = :merged
    else
      attempt.span.closed = true
      attempt.span.status, attempt.span.message = status_for(name, attempt.span)
      attempt.span.attrs["execution_duration"] = :measured
      attempt.closed_by = name
      mark = marked
      outcome = :closed
    end
    if mark && outcome == :closed
      push_event(run, attempt.order, name, {})
    elsif mark
      # After the attempt ended: on the task span, naming the step.
      push_event(run, :root, name, { "step_id" => ev[:step] })
    end
    outcome
  end
end
