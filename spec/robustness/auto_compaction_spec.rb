# frozen_string_literal: true

require "open3"
require_relative "robustness_helper"

# With GC.auto_compact on, Ruby moves objects during major GCs while events
# stream in and exports are built. The extension keeps no Ruby object, so
# nothing it holds can move under it: every export is whole and equal to what
# was sent. Each run is a fresh process (auto-compaction stays on for its whole
# life) with a deadline, so a crash or a hang fails the example.
RSpec.describe "Robustness: GC.auto_compact" do
  let(:script) do
    <<~'RUBY'
    require "tasker_trace_native"
    GC.auto_compact = true
    backend = Tasker::Telemetry::TraceBackend.instance
    expected = {}
    120.times do |round|
      40.times do |i|
        id = (round * 40) + i
        payload = { task_id: id, name: "t#{id}", tags: %w[a b c].map { |t| "#{t}#{id}" },
                    nested: { k: [id, id.to_s, :"sym#{id % 7}"] } }
        backend.handle_event("task.started", payload)
        backend.handle_event("step.before_handle", { task_id: id, step: :one })
        backend.handle_event("task.completed", { task_id: id })
        expected["task_#{id}"] = payload
      end
      Array.new(2_000) { |j| "junk#{j}" * 3 } # garbage for the compactor to move around
      GC.start(full_mark: true, immediate_sweep: true) if (round % 10).zero?
      next unless (round % 15).zero?

      traces = backend.export[:traces]
      raise "export lost traces" unless traces.size == expected.size
      expected.each do |key, payload|
        raise "#{key} changed: #{traces[key][:payload].inspect}" unless traces[key][:payload] == payload
      end
    end
    puts "compactions=#{GC.stat(:compact_count)}"
    RUBY
  end

  it "keeps every export whole across automatic compactions, run after run", timeout: 300 do
    lib = File.expand_path("../../lib", __dir__)
    3.times do
      out, err, status = Open3.capture3(RbConfig.ruby, "-I", lib, "-e", script)
      expect(status).to be_success, "exit #{status.inspect}\n#{err}"
      expect(out[/compactions=(\d+)/, 1].to_i).to be_positive
    end
  end
end
