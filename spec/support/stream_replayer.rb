# frozen_string_literal: true

require "json"
require "time"
require "bigdecimal"
require "date"

# Replays an event stream recorded from the real Tasker engine
# (spec/fixtures/streams, format in its README) through a StandInPublisher:
# one Ruby thread per recorded thread label, each event published in its own
# thread, strictly in `seq` order across threads (a conductor hands each
# event to its thread and waits until it has been published), so a replay is
# deterministic. Payloads get their Symbol keys, Times, BigDecimals and
# placeholders for records and other objects back.
module StreamReplayer
  DIR = File.expand_path("../fixtures/streams", __dir__)

  # One recorded event.
  Recorded = Struct.new(:seq, :t_ns, :thread, :name, :payload, keyword_init: true)

  # An ActiveRecord object, an exception or another object, as recorded.
  Placeholder = Struct.new(:class_name, :detail) do
    def to_s
      "#<#{class_name}#{" #{detail}" if detail}>"
    end
  end

  FLOATS = { "NaN" => Float::NAN, "Infinity" => Float::INFINITY, "-Infinity" => -Float::INFINITY }.freeze

  module_function

  def names
    Dir[File.join(DIR, "*.jsonl")].map { |f| File.basename(f, ".jsonl") }.sort
  end

  # The stream's events, in seq order.
  def load(name)
    File.readlines(File.join(DIR, "#{name}.jsonl")).map do |line|
      e = JSON.parse(line)
      Recorded.new(seq: e.fetch("seq"), t_ns: e.fetch("t_ns"), thread: e.fetch("thread"), name: e.fetch("name"),
                   payload: decode(e.fetch("payload")))
    end.sort_by(&:seq)
  end

  # The engine's record of the stream's task(s) (`tasks` of the .expected.json).
  def engine_tasks(name)
    JSON.parse(File.read(File.join(DIR, "#{name}.expected.json"))).fetch("tasks")
  end

  def decode(value)
    case value
    when Array then value.map { |v| decode(v) }
    when Hash then decode_object(value)
    else value
    end
  end

  def decode_object(obj)
    return obj["$sym"].to_sym if obj.key?("$sym")
    return Time.iso8601(obj["$time"]) if obj.key?("$time")
    return Date.iso8601(obj["$date"]) if obj.key?("$date")
    return BigDecimal(obj["$decimal"]) if obj.key?("$decimal")
    return FLOATS.fetch(obj["$float"]) if obj.key?("$float")
    return Placeholder.new(obj["$record"], "id: #{obj['id']}") if obj.key?("$record")
    return Placeholder.new(obj["$exception"], obj["message"]) if obj.key?("$exception")
    return Placeholder.new(obj["$object"], nil) if obj.key?("$object")
    return obj["$hash"].to_h { |k, v| [decode(k), decode(v)] } if obj.key?("$hash")

    strings = obj.delete("$string_keys")
    obj.to_h { |k, v| [strings ? k : k.to_sym, decode(v)] }
  end

  # A publisher that registers Tasker's names and the stream's, as the
  # engine's publisher has them registered.
  def publisher_for(events)
    StandInPublisher.new(StandInPublisher::TASKER_EVENTS | events.map(&:name).uniq)
  end

  # Publishes `events` through `publisher`, each in the thread of its label,
  # in seq order. `between` runs in the conductor before each event (a
  # cache-evicting sweep in the benchmark). Returns how many were published.
  def replay(events, publisher, between: nil)
    done = Queue.new
    inboxes = {}
    threads = events.map(&:thread).uniq.to_h do |label|
      inbox = inboxes[label] = Queue.new
      thread = Thread.new do
        while (event = inbox.pop)
          begin
            publisher.publish(event.name, event.payload)
            done << :ok
          rescue Exception => e # rubocop:disable Lint/RescueException -- handed to the conductor
            done << e
          end
        end
      end
      [label, thread]
    end
    events.each do |event|
      between&.call
      inboxes.fetch(event.thread) << event
      result = done.pop
      raise result if result.is_a?(Exception)
    end
    events.size
  ensure
    inboxes&.each_value(&:close)
    threads&.each_value(&:join)
  end
end
