# frozen_string_literal: true

# A stand-in for the OpenTelemetry Ruby API (opentelemetry-api 1.x), with
# the shape the connected-trace path relies on, written from the API's
# documented behaviour:
#
# - Context: immutable entries; `current`, `attach` (push onto a fiber-local
#   stack, the token is the stack's size), `detach(token)` (pops the top;
#   a token that does not match is reported through `handle_error` and the
#   top is popped anyway), `with_current`, `with_value`, `clear`, a private
#   `stack`;
# - Trace: `current_span` (Span::INVALID when none), `context_with_span`,
#   `with_span`, `non_recording_span`, SpanContext (binary ids, `valid?`,
#   trace_flags, remote), TraceFlags (`from_byte`, `sampled?`, DEFAULT,
#   SAMPLED).
#
# It lives under OpenTelemetryStandIn and is installed as ::OpenTelemetry only
# while a spec wants it (`install!` / `uninstall!`), so the rest of the suite
# runs without the API, as an app without it does.
module OpenTelemetryStandIn
  module OpenTelemetry
    Error = Class.new(StandardError)

    @errors = []

    class << self
      # What `handle_error` was given (the real API logs it).
      attr_reader :errors

      def handle_error(exception: nil, message: nil)
        @errors << (exception || message)
      end
    end

    class Context
      # A key for a Context's entries.
      class Key
        attr_reader :name

        def initialize(name)
          @name = name
        end
      end

      DetachError = Class.new(OpenTelemetry::Error)
      STACK_KEY = :__opentelemetry_stand_in_context_storage__

      class << self
        def create_key(name)
          Key.new(name)
        end

        def current
          stack.last || ROOT
        end

        def attach(context)
          s = stack
          s.push(context)
          s.size
        end

        def detach(token)
          s = stack
          matched = (token == s.size)
          OpenTelemetry.handle_error(exception: DetachError.new("calls to detach should match corresponding calls to attach.")) unless matched
          s.pop
          matched
        end

        def with_current(context)
          token = attach(context)
          yield context
        ensure
          detach(token)
        end

        def with_value(key, value)
          context = current.set_value(key, value)
          token = attach(context)
          yield context, value
        ensure
          detach(token)
        end

        def value(key)
          current.value(key)
        end

        def clear
          Thread.current[STACK_KEY] = []
        end

        def empty
          new({})
        end

        private

        # Thread#[] is fiber-local, as the API's storage is.
        def stack
          Thread.current[STACK_KEY] ||= []
        end
      end

      def initialize(entries)
        @entries = entries.freeze
      end

      def value(key)
        @entries[key]
      end
      alias [] value

      def set_value(key, value)
        Context.new(@entries.merge(key => value))
      end

      ROOT = empty.freeze
    end

    module Trace
      extend self

      CURRENT_SPAN_KEY = Context.create_key("current-span")
      INVALID_TRACE_ID = ("\0" * 16).b
      INVALID_SPAN_ID = ("\0" * 8).b

      class TraceFlags
        class << self
          private :new

          def from_byte(flags)
            flags = 0 unless flags & ~0xFF == 0
            new(flags)
          end
        end

        def initialize(flags)
          @flags = flags
        end

        def sampled?
          (@flags & 1) != 0
        end

        DEFAULT = from_byte(0)
        SAMPLED = from_byte(1)
      end

      class SpanContext
        attr_reader :trace_id, :span_id, :trace_flags, :tracestate

        def initialize(trace_id: Trace.generate_trace_id, span_id: Trace.generate_span_id,
                       trace_flags: TraceFlags::DEFAULT, tracestate: nil, remote: false)
          @trace_id = trace_id
          @span_id = span_id
          @trace_flags = trace_flags
          @tracestate = tracestate
          @remote = remote
        end

        def hex_trace_id
          @trace_id.unpack1("H*")
        end

        def hex_span_id
          @span_id.unpack1("H*")
        end

        def valid?
          @trace_id != INVALID_TRACE_ID && @span_id != INVALID_SPAN_ID
        end

        def remote?
          @remote
        end

        INVALID = new(trace_id: INVALID_TRACE_ID, span_id: INVALID_SPAN_ID)
      end

      # A non-recording span: only its context.
      class Span
        attr_reader :context

        def initialize(span_context: SpanContext::INVALID)
          @context = span_context
        end

        def recording?
          false
        end

        INVALID = new
      end

      def generate_trace_id
        Random.bytes(16)
      end

      def generate_span_id
        Random.bytes(8)
      end

      def current_span(context = nil)
        context ||= Context.current
        context.value(CURRENT_SPAN_KEY) || Span::INVALID
      end

      def context_with_span(span, parent_context: Context.current)
        parent_context.set_value(CURRENT_SPAN_KEY, span)
      end

      def with_span(span)
        Context.with_value(CURRENT_SPAN_KEY, span) { |c, s| yield s, c }
      end

      def non_recording_span(span_context)
        Span.new(span_context: span_context)
      end
    end
  end

  module_function

  def install!
    Object.const_set(:OpenTelemetry, OpenTelemetry) unless defined?(::OpenTelemetry)
    OpenTelemetry.errors.clear
    TaskerTraceNative::ContextListener.refresh! if defined?(TaskerTraceNative::ContextListener)
  end

  def uninstall!
    Object.send(:remove_const, :OpenTelemetry) if defined?(::OpenTelemetry) && ::OpenTelemetry.equal?(OpenTelemetry)
    TaskerTraceNative::ContextListener.refresh! if defined?(TaskerTraceNative::ContextListener)
  end

  # The fiber's Context stack (a copy), for assertions.
  def stack
    OpenTelemetry::Context.send(:stack).dup
  end

  # A span of the app's (the job's, the web request's): a SpanContext with
  # fresh ids.
  def app_span(sampled: true)
    flags = sampled ? OpenTelemetry::Trace::TraceFlags::SAMPLED : OpenTelemetry::Trace::TraceFlags::DEFAULT
    OpenTelemetry::Trace.non_recording_span(OpenTelemetry::Trace::SpanContext.new(trace_flags: flags))
  end

  # The current span's id as hex (what an HTTP client span's parent would be).
  def current_span_hex
    OpenTelemetry::Trace.current_span.context.hex_span_id
  end
end

# The stand-in loaded for each example (connected traces in use), and taken
# away after it with every context released: `otel` is the stand-in's
# OpenTelemetry module. (bin/demo loads this file without RSpec.)
if defined?(RSpec)
  RSpec.shared_context "with the OpenTelemetry API stand-in" do
    let(:otel) { OpenTelemetryStandIn::OpenTelemetry }

    before { OpenTelemetryStandIn.install! }

    after do
      TaskerTraceNative::ContextListener.release!
      otel::Context.clear
      OpenTelemetryStandIn.uninstall!
    end
  end
end
