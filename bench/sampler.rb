# frozen_string_literal: true

require "benchmark/ips"

module TaskerTraceNative
  module Bench
    # Runs cases through benchmark-ips and keeps, for each, the time per
    # operation of every measured batch (benchmark-ips sizes a batch to take
    # about 100 ms), so the report can give medians.
    #
    # A case is an operation `op.call(i)` (i counts up from 0) and an optional
    # untimed `setup`, run before the first warmup batch, before the first
    # measured batch, and again whenever `setup_every` operations have run
    # since the last one (to keep stores that grow at a steady size).
    class Sampler
      Case = Struct.new(:label, :op, :setup, :setup_every, :samples, :measuring, :since_setup, :index,
                        keyword_init: true)

      # benchmark-ips reports its phases to a suite object; this one notes when
      # a case's measured phase starts, so warmup batches are not sampled.
      class PhaseHooks
        def initialize(cases)
          @cases = cases
        end

        def warming(_label, _seconds); end

        def warmup_stats(_time_us, _cycles); end

        def running(label, _seconds)
          c = @cases.fetch(label)
          c.measuring = true
          c.since_setup = nil # measured batches start from a fresh setup
        end

        def add_report(_report, _caller); end
      end

      def initialize(time:, warmup:)
        @time = time
        @warmup = warmup
      end

      # Measures one case in a benchmark-ips job of its own (cases may share a
      # backend, and benchmark-ips warms every case of a job before measuring
      # any). Returns the median time per operation in nanoseconds.
      def measure(label, setup: nil, setup_every: nil, &op)
        c = Case.new(label: label, op: op, setup: setup, setup_every: setup_every,
                     samples: [], measuring: false, since_setup: nil, index: 0)
        Benchmark.ips(quiet: true) do |x|
          x.config(time: @time, warmup: @warmup, suite: PhaseHooks.new(label => c))
          x.report(label) { |times| batch(c, times) }
        end
        raise "#{label}: no measured batch" if c.samples.empty?

        Bench.median(c.samples)
      end

      private

      def batch(c, times)
        if c.setup && (c.since_setup.nil? || (c.setup_every && c.since_setup + times > c.setup_every))
          c.setup.call
          c.since_setup = 0
        end
        op = c.op
        i = c.index
        finish = i + times
        started = Bench.monotonic_ns
        while i < finish
          op.call(i)
          i += 1
        end
        elapsed = Bench.monotonic_ns - started
        c.index = finish
        c.since_setup = (c.since_setup || 0) + times
        c.samples << elapsed.to_f / times if c.measuring
      end
    end
  end
end
