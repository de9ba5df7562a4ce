# frozen_string_literal: true

require "spec_helper"

RSpec.describe "TaskerTraceNative.lifecycle_waterfall" do
  include LifecycleHelper

  def finished_run
    publish("task.start_requested", to_state: "in_progress", task_id: 5, task_name: "ship_order")
    publish("step.before_handle", task_id: 5, step_id: 50, step_name: "label")
    publish("step.failed", task_id: 5, step_id: 50, step_name: "label", error_message: "printer offline")
    publish("task.failed", task_id: 5, task_name: "ship_order", error_message: "steps_in_error_state")
    only_run
  end

  it "draws a finished run: a header naming the task, a row per span, the error under the failed one" do
    run = finished_run
    text = TaskerTraceNative.lifecycle_waterfall(run[:trace_id])
    lines = text.lines.map(&:chomp)
    expect(lines.first).to include("ship_order", "5", run[:trace_id])
    expect(lines.grep(/label/).size).to be >= 1
    expect(text).to include("printer offline")
    expect(text).not_to include("\e[")
  end

  it "answers nil for a trace id it does not hold" do
    expect(TaskerTraceNative.lifecycle_waterfall("0" * 32)).to be_nil
  end

  it "refuses what is not 32 hexadecimal digits, with an ArgumentError naming trace_id" do
    [nil, 1, "", "zz", "x" * 100_000, [1], { a: 1 }, ("ab" * 16).to_sym].each do |bad|
      expect { TaskerTraceNative.lifecycle_waterfall(bad) }
        .to raise_error(ArgumentError, /trace_id must be a String of 32 hexadecimal digits/), bad.inspect[0, 40]
    end
  end
end
