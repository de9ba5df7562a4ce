# frozen_string_literal: true

module TaskerTraceNative
  module Bench
    # The results as a Markdown table: reference, native, the ratio, and the
    # issue's target for the case where it sets one.
    class Report
      # case => [label, unit, target]; target [:faster, x] means reference /
      # native must be at least x.
      ROWS = [
        [:lifecycle, "lifecycle mix (start, 2 spans, finish)", :time, [:ratio, 20]],
        [:start, "start", :time, nil],
        [:span, "span", :time, nil],
        [:finish, "finish", :time, [:ratio, 50]],
        [:generic, "generic", :time, [:ratio, 15]],
        [:stats, "stats", :time, [:ratio, 10]],
        [:export, "export, %<traces>s traces (reference: its shallow `export`)", :time, nil],
        [:export_copy, "export, %<traces>s traces, independent copy (reference: `export.deep_dup`)", :time,
         [:ratio, 4]],
        [:export_json, "export to JSON, %<traces>s traces (%<json>s)", :time, nil],
        [:rss_per_trace, "retained RSS per trace, %<memory>s traces", :bytes, [:ratio, 3]],
        [:gc_pause, "full GC pause, %<memory>s traces retained", :time, [:ratio, 5]]
      ].freeze

      def initialize(results, settings)
        @r = results
        @s = settings
      end

      def table
        lines = []
        lines << "| case | reference | native | reference / native | target | |"
        lines << "| --- | ---: | ---: | ---: | --- | --- |"
        ROWS.each do |key, label, unit, target|
          ref = @r.dig(key, "reference")
          nat = @r.dig(key, "native")
          ratio = ref.to_f / nat
          lines << row(format(label, label_values), fmt(ref, unit), fmt(nat, unit), "#{ratio_text(ratio)}×",
                       target && "≥ #{target[1]}×", target && verdict(ratio >= target[1]))
        end
        noop = @r.dig(:noop, "native")
        lines << row("no-op native call, same arguments (the floor)", "", fmt(noop, :time), "", "", "")
        per_event = @r.dig(:lifecycle, "native") / 4.0
        multiple = per_event / noop.to_f
        lines << row("native handle_event per event (lifecycle mix) ÷ no-op", "", "#{ratio_text(multiple)}×", "",
                     "≤ 8×", verdict(multiple <= 8))
        lines.join("\n")
      end

      # The lifecycle tracer's rows: per event and per task run.
      def lifecycle_table
        per_run = @r.dig(:lifecycle_events_per_run, "native")
        event = @r.dig(:lifecycle_event, "native")
        via = @r.dig(:lifecycle_publisher_event, "native")
        floor = @r.dig(:lifecycle_publisher_floor, "native")
        [
          "| lifecycle tracer (#{per_run} events a task run of 3 steps, in the app's thread) | per event | " \
          "per task run | target |",
          "| --- | ---: | ---: | --- |",
          row("`record_lifecycle_event` (what the subscription calls)", fmt(event, :time),
              fmt(event * per_run, :time), "< 1 µs an event #{verdict(event < 1_000)}".strip),
          row("through the stand-in publisher (`publish`, its own work included)", fmt(via, :time),
              fmt(via * per_run, :time), ""),
          row("the stand-in publisher with a no-op listener (its own work alone)", fmt(floor, :time),
              fmt(floor * per_run, :time), ""),
          *recorded_rows
        ].join("\n")
      end

      # A run recorded from the real engine (order_complete, the calls the
      # default subscription receives), through the listener, hot and cold.
      def recorded_rows
        calls = @r.dig(:recorded_calls_per_run, "native")
        %w[hot cold].map do |label|
          what = label == "hot" ? "back to back" : "a cache-evicting sweep before each event"
          row("recorded engine run (#{calls} listener calls), #{what}; p90 #{fmt(@r.dig(:"recorded_#{label}_p90", 'native'), :time)}",
              fmt(@r.dig(:"recorded_#{label}_event", "native"), :time),
              fmt(@r.dig(:"recorded_#{label}_run", "native"), :time), "")
        end
      end

      def notes
        noop = @r.dig(:noop, "native")
        kinds = %i[start span finish generic].map do |k|
          "#{k} #{ratio_text(@r.dig(k, 'native') / noop)}×"
        end
        [
          "Times are medians (benchmark-ips batches of about 100 ms; exports and GC pauses: " \
          "#{@s.export_runs} and #{@s.gc_runs} runs). Each native handle_event as a multiple of the no-op: " \
          "#{kinds.join(', ')}. The harness itself costs #{fmt(@r.dig(:harness, 'native'), :time)} an operation " \
          "(an empty block), included in every per-event figure.",
          "Full GC with an empty store (baseline): reference #{fmt(@r.dig(:gc_baseline, 'reference'), :time)}, " \
          "native #{fmt(@r.dig(:gc_baseline, 'native'), :time)}.",
          @s.quick ? "Quick mode: small numbers and short runs, a smoke test; no target is judged." : nil
        ].compact.join("\n")
      end

      # The background exporter: the app thread's cost per task lifecycle with
      # it off and on, and the GVL time its export takes from Ruby.
      def exporter_table
        e = @r[:exporter]
        ratio = e[:on_ns] / e[:off_ns]
        [
          "| background exporter | off | on | on / off | target | |",
          "| --- | ---: | ---: | ---: | --- | --- |",
          row("app thread per task lifecycle (4 events), receiver on 127.0.0.1", fmt(e[:off_ns], :time),
              fmt(e[:on_ns], :time), "#{format('%.2f', ratio)}×", "≤ 1.1×", verdict(ratio <= 1.1)),
          row("… of which the thread was on a CPU", fmt(e[:off_cpu_ns], :time), fmt(e[:on_cpu_ns], :time),
              "#{format('%.2f', e[:on_cpu_ns] / e[:off_cpu_ns])}×", "", ""),
          row("… and waiting for a CPU", fmt(e[:off_runq_ns], :time), fmt(e[:on_runq_ns], :time), "", "", ""),
          row("GVL time taken per 10,000 exported traces", "", format("%.1f ms", e[:gvl_ms_per_10k]), "", "≈ 0", ""),
          "",
          "Medians of #{e[:rounds]} alternating rounds of #{count(e[:lifecycles])} lifecycles; with the exporter on " \
          "(its defaults: a wake every 512 events) #{count(e[:exported_while_timed])} traces went out in " \
          "#{count(e[:requests])} requests (#{format('%.1f', e[:bytes] / 1e6)} MB, protobuf + gzip). GVL: while " \
          "#{count(e[:gvl_traces])} traces were exported (#{format('%.0f', e[:export_ms_per_10k])} ms per 10,000, " \
          "wall time of the exporter thread at nice 19), a CPU-bound Ruby thread kept " \
          "#{format('%.1f', e[:ruby_rate_ratio] * 100)}% of its rate; the GVL figure is the time it was blocked " \
          "(neither on a CPU nor waiting for one, from its schedstat), scaled to 10,000 traces."
        ].join("\n")
      end

      def failing_exporter_table
        e = @r[:failing_exporter]
        ratio = e[:on_ns] / e[:off_ns]
        [
          "| background exporter, collector answering 500 | off | on | on / off | target | |",
          "| --- | ---: | ---: | ---: | --- | --- |",
          row("app thread per lifecycle event", fmt(e[:off_ns], :time), fmt(e[:on_ns], :time),
              "#{format('%.2f', ratio)}×", "≤ 1.1×", verdict(ratio <= 1.1)),
          row("app-thread waits for the tracer's lock, exporter on", "", count(e[:app_waits_on]), "", "0", ""),
          "",
          "Medians of #{e[:rounds]} alternating rounds of #{count(e[:runs])} runs " \
          "(#{e[:events_per_run]} events each), the exporter waking every 50 ms or 512 events, " \
          "`lifecycle_max_finished_runs` 500; " \
          "#{count(e[:failed_exports])} failed exports in #{count(e[:requests])} requests, backing off " \
          "between them (the exporter holds what failed in its own queue)."
        ].join("\n")
      end

      private

      def label_values
        { traces: count(@s.export_traces), memory: count(@s.memory_traces),
          json: "reference: JSON.generate(export); native: #{@r.dig(:export_json_kind, 'native')}" }
      end

      def count(n)
        n.to_s.reverse.scan(/\d{1,3}/).join(",").reverse
      end

      def row(*cells)
        "| #{cells.map(&:to_s).join(' | ')} |"
      end

      def verdict(met)
        return "" if @s.quick

        met ? "met" : "**not met**"
      end

      def ratio_text(x)
        x >= 100 ? x.round.to_s : format("%.1f", x)
      end

      def fmt(value, unit)
        return "–" if value.nil?

        case unit
        when :bytes then "#{value.round} B"
        when :time
          if value < 1e3 then "#{value.round} ns"
          elsif value < 1e6 then format("%.2f µs", value / 1e3)
          elsif value < 1e9 then format("%.1f ms", value / 1e6)
          else format("%.2f s", value / 1e9)
          end
        end
      end
    end
  end
end
