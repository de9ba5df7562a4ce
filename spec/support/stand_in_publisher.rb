# frozen_string_literal: true

# A stand-in for Tasker's event publisher (`Tasker::Events::Publisher`,
# which includes dry-events' `Dry::Events::Publisher[:tasker]`; dry-events is
# not packaged here), with the shape the lifecycle tracer relies on:
#
# - events are registered by name; `__bus__.events` is the registry (a Hash
#   of name => event), as on a dry-events publisher instance;
# - `subscribe(name) { |event| ... }` adds a listener, and raises for a name
#   that was not registered;
# - `publish(name, payload)` merges `timestamp: Time.now` under the payload
#   and runs the listeners synchronously, in the publishing thread, each
#   with an event: `event.id` (the name), `event.payload` (Symbol keys),
#   `event[:key]` (a fetch: raises for a missing key).
#
# Used by the specs, bin/demo and bin/bench.
class StandInPublisher
  # Tasker's event names (its constants), as a publisher registers them at boot.
  TASKER_EVENTS = %w[
    task.initialize_requested task.start_requested task.completed task.failed
    task.cancelled task.resolved_manually
    step.execution_requested step.before_handle step.completed step.failed
    step.retry_requested step.cancelled step.resolved_manually
    observability.task.enqueue observability.task.finalize observability.step.backoff
    workflow.viable_steps_discovered workflow.steps_execution_started workflow.steps_execution_completed
    workflow.task_finalization_started workflow.task_finalization_completed
    workflow.task_reenqueue_started workflow.task_reenqueue_requested
    workflow.task_reenqueue_failed workflow.task_reenqueue_delayed
  ].freeze

  # An app's own event, registered beside Tasker's: not a lifecycle event.
  CUSTOM_EVENTS = %w[order.fulfilled].freeze

  class UnregisteredEventError < StandardError; end

  # dry-events' Event: an id and a payload.
  class Event
    attr_reader :id, :payload

    def initialize(id, payload)
      @id = id
      @payload = payload
    end

    def [](key)
      @payload.fetch(key)
    end

    def to_h
      @payload
    end
  end

  # dry-events' Bus: the registered events and the listeners.
  class Bus
    attr_reader :events, :listeners

    def initialize(names)
      @events = names.to_h { |n| [n, Event.new(n, {})] }
      @listeners = Hash.new { |h, k| h[k] = [] }
    end
  end

  def initialize(names = TASKER_EVENTS + CUSTOM_EVENTS)
    @bus = Bus.new(names)
    @lock = Mutex.new
  end

  def __bus__
    @bus
  end

  def register_event(name)
    @lock.synchronize { @bus.events[name] = Event.new(name, {}) }
    self
  end

  def subscribe(event_id, &block)
    raise ArgumentError, "subscribe needs a block" unless block
    raise UnregisteredEventError, "unknown event #{event_id.inspect}" unless @bus.events.key?(event_id)

    @lock.synchronize { @bus.listeners[event_id] = @bus.listeners[event_id] + [block] }
    self
  end

  def listener_count(event_id = nil)
    return @bus.listeners.fetch(event_id, []).size if event_id

    @bus.listeners.values.sum(&:size)
  end

  def publish(event_id, payload = {})
    raise UnregisteredEventError, "unknown event #{event_id.inspect}" unless @bus.events.key?(event_id)

    listeners = @bus.listeners.fetch(event_id, [])
    unless listeners.empty?
      event = Event.new(event_id, { timestamp: Time.now }.merge(payload))
      listeners.each { |listener| listener.call(event) }
    end
    self
  end
end
