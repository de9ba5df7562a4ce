# frozen_string_literal: true

require "etc"
require "optparse"
require "open3"
require "rbconfig"
require_relative "environment"
require_relative "sampler"
require_relative "report"
require_relative "lifecycle_cases"
require_relative "receiver"

module TaskerTraceNative
  module Bench
    # The whole suite: every case on the reference backend, then on the native
    # one, in this process; memory and GC figures in child processes.
    class Suite
      Settings = Struct.new(:quick, :time, :warmup, :keys, :export_traces, :export_runs,
                            :memory_traces, :gc_runs, :lifecycle_tasks, :exporter_rounds,
                            :exporter_lifecycles, :exporter_gvl_traces, :failing_rounds, :failing_runs,
                            keyword_init: true)

      FULL = Settings.new(quick: false, time: 3, warmup: 1, keys: 10_000, export_traces: 40_000,
                          export_runs: 7, memory_traces: 40_000, gc_runs: 7, lifecycle_tasks: 2_000,
                          exporter_rounds: 11, exporter_lifecycles: 20_000, exporter_gvl_traces: 40_000,
                          failing_rounds: 11, failing_runs: 20_000)
      # Seconds, for bin/test: every case runs, on small numbers; the figures
      # mean nothing and no target is judged.
      QUICK = Settings.new(quick: true, time: 0.05, warmup: 0.02, keys: 500, export_traces: 1_000,
                           export_runs: 1, memory_traces: 1_000, gc_runs: 1, lifecycle_tasks: 50,
                           exporter_rounds: 1, exporter_lifecycles: 500, exporter_gvl_traces: 1_000,
                           failing_rounds: 1, failing_runs: 200)

      def self.main(argv)
        settings = FULL
        OptionParser.new do |o|
          o.banner = "Usage: bin/bench [--quick]"
          o.on("--quick", "every case once on small numbers, in seconds (for bin/test)") { settings = QUICK }
        end.parse!(argv)
        new(settings).run
      end

      def initialize(settings)
        @s = settings
        @sampler = Sampler.new(time: settings.time, warmup: settings.warmup)
        @results = {}
      end

      def run
        started = Bench.monotonic_ns
        print_header
        payloads = Array.new(@s.keys) { |i| Bench.payload(i) }
        event_cases(payloads)
        stats_case(payloads)
        floor_cases(payloads)
        lifecycle_cases
        export_cases
        memory_cases
        exporter_cases
        failing_exporter_cases
        Bench.native_backend.reset!
        report = Report.new(@results, @s)
        puts report.table
        puts
        puts report.lifecycle_table
        puts
        puts report.notes
        puts
        puts report.exporter_table
        connected_cases
        puts
        puts report.failing_exporter_table
        printf("\nbin/bench: done in %.1f s\n", (Bench.monotonic_ns - started) / 1e9)
      end

      private

      def print_header
        mode = @s.quick ? "quick (smoke run: small numbers, figures not meaningful)" : "full"
        puts "tasker_trace_native benchmark, #{mode}"
        puts "#{RUBY_DESCRIPTION}; ActiveSupport #{ActiveSupport::VERSION::STRING}; " \
             "benchmark-ips #{Benchmark::IPS::VERSION}; #{Etc.nprocessors} CPUs"
        puts
      end

      def sides
        [["reference", Bench.reference_backend], ["native", Bench.native_backend]]
      end

      def record(name, side, value)
        (@results[name] ||= {})[side] = value
      end

      def fill(backend, payloads, event)
        payloads.each { |p| backend.handle_event(event, p) }
      end

      # handle_event per kind. Task ids cycle through `keys` traces, so stores
      # stay at a steady size: a start on a known key replaces that trace.
      def event_cases(payloads)
        k = payloads.size
        sides.each do |side, b|
          reset = -> { b.reset! }
          started = lambda do
            b.reset!
            fill(b, payloads, "task.started")
          end
          record(:lifecycle, side, @sampler.measure("#{side} lifecycle", setup: reset) do |i|
            p = payloads[i % k]
            b.handle_event("task.started", p)
            b.handle_event("step.before_handle", p)
            b.handle_event("step.after_handle", p)
            b.handle_event("task.completed", p)
          end)
          record(:start, side, @sampler.measure("#{side} start", setup: reset) do |i|
            b.handle_event("task.started", payloads[i % k])
          end)
          # Spans pile up on open traces: restart them every 20 spans a trace.
          record(:span, side, @sampler.measure("#{side} span", setup: started, setup_every: k * 20) do |i|
            b.handle_event("step.before_handle", payloads[i % k])
          end)
          record(:finish, side, @sampler.measure("#{side} finish", setup: started) do |i|
            b.handle_event("task.completed", payloads[i % k])
          end)
          # Each generic event is a new trace: start over every 50,000.
          record(:generic, side, @sampler.measure("#{side} generic", setup: reset, setup_every: 50_000) do |i|
            b.handle_event("workflow.viable_steps_discovered", payloads[i % k])
          end)
          b.reset!
        end
      end

      def stats_case(payloads)
        sides.each do |side, b|
          fill(b, payloads, "task.started")
          record(:stats, side, @sampler.measure("#{side} stats") { b.stats })
          b.reset!
        end
      end

      # The floor: a native method taking handle_event's arguments and doing
      # nothing; and the harness's own cost per operation, for scale.
      def floor_cases(payloads)
        k = payloads.size
        native = TaskerTraceNative::TestHooks
        record(:noop, "native", @sampler.measure("native noop") { |i| native.noop("task.started", payloads[i % k]) })
        record(:harness, "native", @sampler.measure("empty operation") { |i| payloads[i % k] })
      end

      # The lifecycle tracer, native only (Tasker's TelemetrySubscriber needs
      # the OpenTelemetry SDK, which is not installable here).
      def lifecycle_cases
        cases = LifecycleCases.new(@sampler, tasks: @s.lifecycle_tasks)
        cases.run.each { |key, ns| record(key, "native", ns) }
        record(:lifecycle_events_per_run, "native", cases.per_run)
        cases.recorded(reps: @s.quick ? 2 : 15).each { |key, ns| record(key, "native", ns) }
      end

      def timed_runs(runs)
        Array.new(runs) do
          t = Bench.monotonic_ns
          yield
          Bench.monotonic_ns - t
        end.then { |times| Bench.median(times) }
      end

      # Exports of a store holding `export_traces` finished traces (start, two
      # spans, finish; fresh payloads for every event).
      def export_cases
        n = @s.export_traces
        sides.each do |side, b|
          b.reset!
          n.times { |i| Bench.lifecycle(b, i) }
          count = b.export[:metadata][:trace_count]
          raise "#{side}: export holds #{count} traces, expected #{n}" unless count == n

          record(:export, side, timed_runs(@s.export_runs) { b.export })
          if side == "reference"
            # The reference's export shares the stored payloads and spans;
            # deep_dup makes it an independent copy like the native one.
            record(:export_copy, side, timed_runs(@s.export_runs) { b.export.deep_dup })
          else
            record(:export_copy, side, @results[:export][side])
          end
          json_kind, json = json_export(b, side)
          raise "#{side}: empty JSON export" if json.nil? || json.empty?

          record(:export_json, side, timed_runs(@s.export_runs) { json_export(b, side) })
          record(:export_json_kind, side, json_kind)
          b.reset!
          Bench.full_gc
        end
      end

      def json_export(backend, side)
        if side == "native" && backend.respond_to?(:export_otlp)
          out = backend.export_otlp
          ["export_otlp", out.is_a?(String) ? out : JSON.generate(out)]
        else
          ["JSON.generate(export)", JSON.generate(backend.export)]
        end
      end

      # Retained RSS and full-GC pause, each backend in a child process.
      def memory_cases
        probe = File.join(__dir__, "memory_probe.rb")
        %w[reference native].each do |side|
          out, err, status = Open3.capture3(RbConfig.ruby, probe, side, @s.memory_traces.to_s, @s.gc_runs.to_s)
          raise "memory probe (#{side}) failed: #{err}" unless status.success?

          figures = JSON.parse(out.lines.last, symbolize_names: true)
          record(:rss_per_trace, side, figures[:bytes_per_trace])
          record(:gc_pause, side, figures[:gc_pause_ms] * 1e6)
          record(:gc_baseline, side, figures[:baseline_gc_pause_ms] * 1e6)
        end
      end

      # The connected-trace path's extra cost per run and per step attempt
      # with the real OpenTelemetry API and SDK (bench/connected_probe.rb, in
      # a child), when OTEL_RUBY_SOURCE names their sources.
      def connected_cases
        source = ENV.fetch("OTEL_RUBY_SOURCE", nil)
        unless source && File.directory?(File.join(source, "api"))
          puts "\nConnected traces: skipped (set OTEL_RUBY_SOURCE to the OpenTelemetry Ruby sources)"
          return
        end
        probe = File.join(__dir__, "connected_probe.rb")
        out, err, status = Open3.capture3(RbConfig.ruby, probe, (@s.quick ? 100 : 8_000).to_s)
        raise "connected probe failed: #{err}" unless status.success?

        r = JSON.parse(out.lines.last, symbolize_names: true)
        puts "\nConnected traces (real OpenTelemetry API + SDK, medians, µs, #{r[:rounds]} interleaved rounds)"
        puts "| | per run (4 task events) | per step attempt (7 step events) |"
        puts "| --- | ---: | ---: |"
        %i[connected plain].each { |k| puts "| #{k} | #{r[k][:run]} | #{r[k][:attempt]} |" }
        puts "| extra for the context | #{r[:extra_us][:run]} | #{r[:extra_us][:attempt]} |"
      end

      # The background exporter's cost to the app thread, off and on, with a
      # receiver on 127.0.0.1 in this process and the probe in a child.
      def exporter_cases
        receiver = Receiver.new
        probe = File.join(__dir__, "exporter_probe.rb")
        env = { "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => receiver.url, "OTEL_TRACES_EXPORTER" => nil,
                "OTEL_SDK_DISABLED" => nil, "OTEL_BSP_SCHEDULE_DELAY" => nil, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => nil }
        args = [@s.exporter_rounds, @s.exporter_lifecycles, @s.exporter_gvl_traces].map(&:to_s)
        out, err, status = Open3.capture3(env, RbConfig.ruby, probe, *args)
        raise "exporter probe failed: #{err}" unless status.success?

        @results[:exporter] = JSON.parse(out.lines.last, symbolize_names: true)
                                  .merge(requests: receiver.requests, bytes: receiver.bytes)
      ensure
        receiver&.close
      end

      # The exporter's cost to the app thread per lifecycle event, off and
      # on, while its collector answers 500 to everything.
      def failing_exporter_cases
        receiver = Receiver.new(status: 500)
        probe = File.join(__dir__, "failing_exporter_probe.rb")
        env = { "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => receiver.url, "OTEL_TRACES_EXPORTER" => nil,
                "OTEL_SDK_DISABLED" => nil, "OTEL_BSP_SCHEDULE_DELAY" => nil, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => nil }
        args = [@s.failing_rounds, @s.failing_runs].map(&:to_s)
        out, err, status = Open3.capture3(env, RbConfig.ruby, probe, *args)
        raise "failing exporter probe failed: #{err}" unless status.success?

        @results[:failing_exporter] = JSON.parse(out.lines.last, symbolize_names: true)
                                          .merge(requests: receiver.requests)
      ensure
        receiver&.close
      end
    end
  end
end
