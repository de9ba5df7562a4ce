# frozen_string_literal: true

# Connected traces, run INSIDE the real Tasker engine's dummy app (its blog
# example helpers, PostgreSQL, the OpenTelemetry SDK it loads). Not part of
# the gem's own suite (the file name does not end in _spec.rb): it needs
# Tasker, Rails, a database and the SDK. Pass it as an extra spec file to an
# rspec run from the engine's root.
#
# An order-processing task runs inside a span of its own (what a job's
# instrumentation does), with a span for every ActiveRecord transaction
# (Statesman moves the task into in_progress inside one, so the run opens
# under it and the transaction's block then ends past the run's root) and a
# span for every SQL statement. The example checks where each landed.
require File.join(Dir.pwd, "spec/blog/support/blog_spec_helper")

# Spans around ActiveRecord transactions, while probing.
module ConnectedProbeTransactions
  class << self
    # Whether the probe's spans are made (in every thread: steps may run in
    # threads of their own).
    attr_accessor :on
  end

  def transaction(*args, **options, &block)
    return super unless ConnectedProbeTransactions.on

    OpenTelemetry.tracer_provider.tracer("probe").in_span("AR_TXN") { super }
  end
end

RSpec.describe "tasker_trace_native on the engine: connected traces", type: :blog_example do
  self.use_transactional_tests = false

  before(:all) do
    load_blog_code_safely("post_01_ecommerce_reliability")
    @exporter = OpenTelemetry::SDK::Trace::Export::InMemorySpanExporter.new
    OpenTelemetry.tracer_provider.add_span_processor(
      OpenTelemetry::SDK::Trace::Export::SimpleSpanProcessor.new(@exporter)
    )
    ActiveRecord::Base.singleton_class.prepend(ConnectedProbeTransactions)
    tracer = OpenTelemetry.tracer_provider.tracer("probe")
    @sql = ActiveSupport::Notifications.subscribe("sql.active_record") do |*|
      tracer.start_span("SQL").finish if ConnectedProbeTransactions.on
    end
  end

  after(:all) { ActiveSupport::Notifications.unsubscribe(@sql) }

  before do
    MockPaymentService.reset! if MockPaymentService.respond_to?(:reset!)
    MockInventoryService.reset! if MockInventoryService.respond_to?(:reset!)
  end

  def hex(bytes)
    bytes.unpack1("H*")
  end

  def errors_logged
    logged = []
    allow(TaskerTraceNative).to receive(:log_lifecycle_error).and_wrap_original do |original, *args|
      logged << args
      original.call(*args)
    end
    logged
  end

  it "puts the run under the job, and each step's SQL under its attempt" do
    expect(TaskerTraceNative::ContextListener.enabled?).to be(true)
    logged = errors_logged
    context = sample_ecommerce_context.deep_merge(payment_info: { card_last_four: "7#{rand(100..999)}" })
    task = create_test_task(name: "order_processing", context: context)
    @exporter.reset
    job = nil
    begin
      ConnectedProbeTransactions.on = true
      OpenTelemetry.tracer_provider.tracer("probe").in_span("job") do |span|
        job = span
        execute_workflow(task)
      end
    ensure
      ConnectedProbeTransactions.on = false
    end
    expect(Tasker::Task.find(task.task_id).status).to eq("complete")
    # Nothing of the gem's is left attached.
    expect(OpenTelemetry::Trace.current_span).to eq(OpenTelemetry::Trace::Span::INVALID)
    expect(OpenTelemetry::Context.send(:stack)).to be_empty

    runs = TaskerTraceNative.lifecycle_runs(include_open: true).select { |r| r[:task_id] == task.task_id.to_i }
    expect(runs.size).to eq(1)
    run = runs.first
    expect(run[:end]).to eq("completed")
    job_trace = hex(job.context.trace_id)
    expect(run[:trace_id]).to eq(job_trace)

    probe = @exporter.finished_spans.select { |s| hex(s.trace_id) == job_trace }
    by_id = probe.to_h { |s| [hex(s.span_id), s] }
    root = run[:spans].first
    attempts = run[:spans].drop(1).map { |s| s[:span_id] }
    parent = by_id.fetch(root[:parent_span_id])
    expect(%w[job AR_TXN]).to include(parent.name)

    ours = run[:spans].map { |s| s[:span_id] }
    sql = probe.select { |s| s.name == "SQL" }
    parents = sql.map { |s| hex(s.parent_span_id) }
    # Every statement has a parent that exists: the job, a transaction, the
    # run's root or one of its attempts.
    expect(parents - by_id.keys - ours).to eq([])
    under_root = parents.count(root[:span_id])
    under_steps = parents.count { |p| attempts.include?(p) }
    puts "CONNECTED_PROBE root parent #{parent.name}; #{sql.size} statements: " \
         "#{under_root} under the root, #{under_steps} under attempts, " \
         "#{parents.count { |p| by_id[p]&.name == 'AR_TXN' }} under transactions; errors logged #{logged.size}"
    expect(under_steps).to be > 0
    expect(under_root).to be > 0
    expect(logged).to eq([])
  end
end
