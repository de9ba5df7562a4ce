# frozen_string_literal: true

require "spec_helper"
require "json"
require_relative "support/helpers"

# Settings as a Rails team expects them: the environment read when it is
# used (not at require), one voice for warnings, durations in every form,
# messages that name what is wrong. The environment matters here, so most
# examples run in a fresh Ruby that has required the gem with exactly the
# OTEL_* variables given (see OtlpSpecHelpers#fresh_ruby).
RSpec.describe "Settings and the environment" do
  include OtlpSpecHelpers

  PREFIX = "tasker_trace_native: "

  # Runs `script` in a fresh Ruby; its last stdout line is JSON. Returns the
  # parsed JSON and the stderr lines.
  def fresh_json(env, script, *args)
    out, err, ok = fresh_ruby(env, "require 'json'; #{script}", *args)
    raise "child failed:\n#{out}\n#{err}" unless ok

    [JSON.parse(out.lines.last, symbolize_names: true), err.lines.map(&:chomp)]
  end

  # The resource attribute `key` of a JSON request body.
  def resource_attribute(request, key)
    attrs = request.json.fetch("resourceSpans").first.fetch("resource").fetch("attributes")
    attrs.find { |a| a["key"] == key }&.dig("value", "stringValue")
  end

  describe "when the environment is read" do
    it "honours variables set after require and before the first event and push" do
      with_collector({ status: 200 }) do |c|
        script = <<~RUBY
          ENV["OTEL_SERVICE_NAME"] = "orders"
          ENV["OTEL_EXPORTER_OTLP_ENDPOINT"] = ARGV[0]
          ENV["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/json"
          b = Tasker::Telemetry::TraceBackend.instance
          b.handle_event("task.started", { task_id: 1 })
          b.handle_event("task.completed", { task_id: 1 })
          r = b.push_otlp
          puts JSON.generate(sent: r[:sent], error: r[:error], service: TaskerTraceNative.config.service_name)
        RUBY
        result, = fresh_json({}, script, c.base_url)
        expect(result).to eq(sent: 1, error: nil, service: "orders")
        expect(c.requests.size).to eq(1)
        expect(c.requests.first.path).to eq("/v1/traces")
        expect(resource_attribute(c.requests.first, "service.name")).to eq("orders")
      end
    end

    it "honours variables set after require at the first export_otlp" do
      script = <<~RUBY
        ENV["OTEL_SERVICE_NAME"] = "billing"
        body = Tasker::Telemetry::TraceBackend.instance.export_otlp(protocol: "http/json")
        puts JSON.generate(service: JSON.parse(body).dig("resourceSpans", 0, "resource", "attributes", 0, "value"))
      RUBY
      result, = fresh_json({}, script)
      expect(result).to eq(service: { stringValue: "billing" })
    end

    it "shows the environment as it is now in config until the first use" do
      script = <<~RUBY
        before = TaskerTraceNative.config.service_name
        ENV["OTEL_SERVICE_NAME"] = "later"
        puts JSON.generate(before: before, after: TaskerTraceNative.config.service_name,
                           enabled: TaskerTraceNative.exporter_stats[:enabled])
      RUBY
      result, = fresh_json({ "OTEL_SERVICE_NAME" => "first", "OTEL_TRACES_EXPORTER" => "otlp" }, script)
      expect(result).to eq(before: "first", after: "later", enabled: true)
    end

    it "keeps what it read until the next configure, which reads it again; Ruby settings win" do
      script = <<~RUBY
        TaskerTraceNative.configure { |c| c.max_traces = 10 }
        ENV["OTEL_SERVICE_NAME"] = "changed"
        ENV["OTEL_EXPORTER_OTLP_TIMEOUT"] = "2500"
        read = TaskerTraceNative.config
        kept = [read.service_name, read.otlp_timeout]
        TaskerTraceNative.configure { |c| c.otlp_protocol = "http/json" }
        again = TaskerTraceNative.config
        reread = [again.service_name, again.otlp_timeout]
        TaskerTraceNative.configure { |c| c.service_name = "from_ruby" }
        ENV["OTEL_SERVICE_NAME"] = "changed again"
        ENV["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        TaskerTraceNative.configure { }
        last = TaskerTraceNative.config
        puts JSON.generate(kept: kept, reread: reread,
                           last: [last.service_name, last.otlp_protocol, last.max_traces])
      RUBY
      result, = fresh_json({ "OTEL_SERVICE_NAME" => "at_start" }, script)
      expect(result).to eq(kept: ["at_start", 10], reread: ["changed", 2.5],
                           last: ["from_ruby", "http/json", 10])
    end

    it "reads the environment again at the Railtie's setup, even without settings" do
      script = <<~RUBY
        TaskerTraceNative.configure { }
        ENV["OTEL_SERVICE_NAME"] = "from_dotenv"
        app = Struct.new(:config).new(Struct.new(:tasker_trace_native).new({}))
        require "rails/railtie"
        require "tasker_trace_native/railtie"
        TaskerTraceNative::Railtie.apply_settings(app)
        puts JSON.generate(service: TaskerTraceNative.config.service_name)
      RUBY
      result, = fresh_json({}, script)
      expect(result).to eq(service: "from_dotenv")
    end

    it "does not stop an explicit push_otlp with OTEL_SDK_DISABLED=true (only the background exporter)" do
      with_collector({ status: 200 }) do |c|
        script = <<~RUBY
          b = Tasker::Telemetry::TraceBackend.instance
          b.handle_event("task.started", { task_id: 1 })
          b.handle_event("task.completed", { task_id: 1 })
          r = b.push_otlp(endpoint: ARGV[0], protocol: "http/json")
          puts JSON.generate(sent: r[:sent], enabled: TaskerTraceNative.exporter_stats[:enabled])
        RUBY
        env = { "OTEL_SDK_DISABLED" => "true", "OTEL_TRACES_EXPORTER" => "otlp" }
        result, = fresh_json(env, script, c.base_url)
        expect(result).to eq(sent: 1, enabled: false)
        expect(c.requests.size).to eq(1)
      end
    end
  end

  describe "one voice for warnings" do
    SAY_TWICE = "TaskerTraceNative.configure { }; TaskerTraceNative.configure { }; " \
                "puts JSON.generate(warnings: TaskerTraceNative.exporter_stats[:warnings])"

    def warned(env)
      result, stderr = fresh_json(env, SAY_TWICE)
      [result[:warnings], stderr]
    end

    {
      "OTEL_EXPORTER_OTLP_TIMEOUT" => "10",
      "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT" => "99"
    }.each do |variable, value|
      it "warns once that #{variable}=#{value} is milliseconds, and keeps it" do
        message = "#{variable}=#{value} is #{value} ms (the variable is in milliseconds; " \
                  "the OpenTelemetry Ruby SDK reads seconds)"
        warnings, stderr = warned(variable => value)
        expect(stderr).to eq(["#{PREFIX}#{message}"])
        expect(warnings).to eq([message])
        result, = fresh_json({ variable => value }, "puts JSON.generate(t: TaskerTraceNative.config.otlp_timeout)")
        expect(result[:t]).to eq(value.to_i / 1000.0)
      end
    end

    it "says nothing about a timeout of 100 ms or more" do
      expect(warned("OTEL_EXPORTER_OTLP_TIMEOUT" => "100")).to eq([[], []])
    end

    {
      { "OTEL_TRACES_EXPORTER" => "jaeger" } =>
        'OTEL_TRACES_EXPORTER ignored: "jaeger" is not an exporter this gem has (otlp, console or none)',
      { "OTEL_SDK_DISABLED" => "yes" } => 'OTEL_SDK_DISABLED ignored: "yes" is not true or false',
      { "OTEL_BSP_SCHEDULE_DELAY" => "soon" } =>
        'OTEL_BSP_SCHEDULE_DELAY ignored: "soon" is not a whole number of milliseconds',
      { "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => "0" } =>
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE ignored: 0 is not an Integer from 1 to 1000000",
      { "OTEL_BSP_EXPORT_TIMEOUT" => "-5" } =>
        'OTEL_BSP_EXPORT_TIMEOUT ignored: "-5" is not a whole number of milliseconds',
      { "OTEL_BSP_MAX_QUEUE_SIZE" => "lots" } => 'OTEL_BSP_MAX_QUEUE_SIZE ignored: "lots" is not a whole number',
      { "OTEL_SPAN_EVENT_COUNT_LIMIT" => "-1" } =>
        'OTEL_SPAN_EVENT_COUNT_LIMIT ignored: "-1" is not a whole number from 0 to 1000000000'
    }.each do |env, message|
      it "warns once on stderr and in exporter_stats about #{env.keys.first}=#{env.values.first}" do
        warnings, stderr = warned(env)
        expect(stderr).to eq(["#{PREFIX}#{message}"])
        expect(warnings).to eq([message])
      end
    end

    it "says it to Rails.logger when Rails is loaded, and nothing on stderr" do
      script = <<~RUBY
        require "logger"
        module Rails
          def self.logger
            @logger ||= Logger.new($stdout, formatter: ->(severity, _, _, msg) { "\#{severity} \#{msg}\\n" })
          end
        end
        b = Tasker::Telemetry::TraceBackend.instance
        b.handle_event("task.started", { task_id: 1 })
        b.handle_event("task.started", { task_id: 2 })
        puts JSON.generate(warnings: TaskerTraceNative.exporter_stats[:warnings])
      RUBY
      out, err, ok = fresh_ruby({ "OTEL_TRACES_EXPORTER" => "zipkin" }, "require 'json'; #{script}")
      expect(ok).to be(true), err
      message = 'OTEL_TRACES_EXPORTER ignored: "zipkin" is not an exporter this gem has (otlp, console or none)'
      expect(out.lines.map(&:chomp)).to eq(["WARN #{PREFIX}#{message}", JSON.generate(warnings: [message])])
      expect(err).to eq("")
    end

    it "takes Ruby's own warnings about settings through the same function, once each" do
      script = <<~RUBY
        2.times { TaskerTraceNative::Warnings.warn("a setting is odd") }
        puts JSON.generate(warnings: TaskerTraceNative.exporter_stats[:warnings])
      RUBY
      result, stderr = fresh_json({}, script)
      expect(stderr).to eq(["#{PREFIX}a setting is odd"])
      expect(result[:warnings]).to eq(["a setting is odd"])
    end
  end

  describe "durations" do
    it "takes Integer, Float, Rational and ActiveSupport::Duration for every setting and argument in seconds" do
      script = <<~RUBY
        require "active_support"
        require "active_support/core_ext/integer/time"
        require "active_support/core_ext/numeric/time"
        TaskerTraceNative.configure do |c|
          c.export_schedule_delay = 5.seconds
          c.export_timeout = 1.5.seconds
          c.otlp_timeout = 2.seconds
          c.lifecycle_ttl = 1.hour
        end
        c = TaskerTraceNative.config
        b = Tasker::Telemetry::TraceBackend.instance
        push = b.push_otlp(endpoint: "http://127.0.0.1:1", timeout: 1.second)
        flush = TaskerTraceNative.flush(timeout: 1.second)
        shutdown = TaskerTraceNative.shutdown(timeout: 1.second)
        TaskerTraceNative.configure { |s| s.otlp_timeout = 3r / 2; s.export_timeout = 2 }
        puts JSON.generate(values: [c.export_schedule_delay, c.export_timeout, c.otlp_timeout, c.lifecycle_ttl],
                           more: [TaskerTraceNative.config.otlp_timeout, TaskerTraceNative.config.export_timeout],
                           push: push[:sent], flush: flush[:error], shutdown: shutdown[:error])
      RUBY
      result, = fresh_json({}, script)
      expect(result).to eq(values: [5.0, 1.5, 2, 3600], more: [1.5, 2.0], push: 0, flush: nil, shutdown: nil)
    end

    it "refuses the same things the same way everywhere, naming the setting or argument" do
      script = <<~RUBY
        require "active_support"
        require "active_support/core_ext/integer/time"
        errors = []
        [[:otlp_timeout, "5"], [:export_timeout, 0.0001], [:export_schedule_delay, 2.days],
         [:lifecycle_ttl, -1.second]].each do |name, value|
          TaskerTraceNative.configure { |c| c.public_send(:"\#{name}=", value) }
        rescue ArgumentError => e
          errors << e.message
        end
        begin
          TaskerTraceNative.flush(timeout: 0.seconds)
        rescue ArgumentError => e
          errors << e.message
        end
        puts JSON.generate(errors: errors)
      RUBY
      result, = fresh_json({}, script)
      expect(result[:errors]).to eq([
                                      'otlp_timeout must be a positive number of seconds, at most 86400 (got "5")',
                                      "export_timeout must be a number of seconds from 0.001 to 86400 (got 0.0001)",
                                      "export_schedule_delay must be a number of seconds from 0.001 to 86400 " \
                                      "(got 2 days)",
                                      "lifecycle_ttl must be a positive number of seconds (got -1 seconds)",
                                      "timeout must be a positive number of seconds, at most 86400 (got 0 seconds)"
                                    ])
    end
  end

  describe "messages" do
    it "names an endpoint without a scheme or a host, never a path the user did not write" do
      {
        "collector:4318" => "collector:4318 has no scheme (write http://collector:4318 or https://collector:4318)",
        "http://" => "http:// has no host",
        "ftp://collector" => "ftp://collector has the scheme ftp://; only http:// and https:// are supported",
        "http://[::1" => "http://[::1 has an IPv6 host without its closing ]",
        "http://127.0.0.1:99999" => 'http://127.0.0.1:99999 has the port "99999", not a port number (1 to 65535)'
      }.each do |endpoint, why|
        expect { TaskerTraceNative.configure { |c| c.otlp_endpoint = endpoint } }
          .to raise_error(ArgumentError, "otlp_endpoint must be an http:// or https:// URL String, or nil " \
                                         "(got #{endpoint.inspect}): #{why}")
      end
      # Nothing is said before the first use (a .env file may still fix it).
      _, stderr = fresh_json({ "OTEL_EXPORTER_OTLP_ENDPOINT" => "collector:4318" },
                             "TaskerTraceNative.config; puts JSON.generate(ok: true)")
      expect(stderr).to eq([])
      _, stderr = fresh_json({ "OTEL_EXPORTER_OTLP_ENDPOINT" => "collector:4318" },
                             "TaskerTraceNative.flush; puts JSON.generate(ok: true)")
      expect(stderr).to eq(["#{PREFIX}OTEL_EXPORTER_OTLP_ENDPOINT ignored: collector:4318 has no scheme " \
                            "(write http://collector:4318 or https://collector:4318)"])
    end

    it "refuses an X.509 v1 client certificate as such, not by blaming the key" do
      ca = OtlpTestCa.new
      key = OpenSSL::PKey::EC.generate("prime256v1")
      cert = OpenSSL::X509::Certificate.new
      cert.version = 0 # v1: what `openssl x509 -req` makes without -extfile
      cert.serial = 7
      cert.subject = OpenSSL::X509::Name.new([["CN", "client"]])
      cert.issuer = ca.cert.subject
      cert.public_key = key
      cert.not_before = Time.now - 60
      cert.not_after = Time.now + 3600
      cert.sign(ca.key, OpenSSL::Digest.new("SHA256"))
      cert_path = ca.write("v1.pem", cert.to_pem)
      key_path = ca.write("v1-key.pem", key.private_to_pem)
      why = "client certificate file #{cert_path}: X.509 v1 certificates are not supported; issue a v3 certificate"
      expect { TaskerTraceNative.configure { |c| c.otlp_client_certificate = cert_path } }
        .to raise_error(ArgumentError, "otlp_client_certificate must be the path of a PEM file of a client " \
                                       "certificate (chain), or nil (got #{cert_path.inspect[0, 80]}): #{why}")
      env = { "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" => cert_path, "OTEL_EXPORTER_OTLP_CLIENT_KEY" => key_path }
      _, stderr = fresh_json(env, "TaskerTraceNative.configure { }; puts JSON.generate(ok: true)")
      expect(stderr).to eq(["#{PREFIX}OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE ignored: #{why}",
                            "#{PREFIX}OTEL_EXPORTER_OTLP_CLIENT_KEY ignored: client key #{key_path} given " \
                            "without a client certificate (no client certificate is sent)"])
    ensure
      ca&.remove
    end

    it "takes only String, Symbol, Integer, Float, true, false and one-kind Arrays as resource attributes" do
      expected = "resource_attributes must be a Hash of String or Symbol keys to Strings, Symbols, Integers, " \
                 "Floats, true, false or Arrays of one of these kinds"
      {
        { "deployed_at" => Time.utc(2026, 1, 1) } => 'the value of "deployed_at" is a Time',
        { owner: Object.new } => 'the value of "owner" is an Object',
        { "zones" => ["a", 1] } => 'the value of "zones" is an Array mixing kinds of values',
        { "nested" => [{ a: 1 }] } => 'the value of "nested" is an Array holding a Hash {:a=>1}',
        { "none" => nil } => 'the value of "none" is nil',
        { 5 => "x" } => "the key 5 is not a non-empty String or Symbol"
      }.each do |attributes, why|
        expect { TaskerTraceNative.configure { |c| c.resource_attributes = attributes } }
          .to raise_error(ArgumentError, "#{expected} (got #{attributes.inspect[0, 80]}): #{why}")
      end
      good = { "team" => "a", region: :eu, "replicas" => 3, "load" => 0.5, "canary" => false,
               "zones" => %w[a b], "ports" => [80, 443] }
      TaskerTraceNative.configure { |c| c.resource_attributes = good }
      expect(TaskerTraceNative.config.resource_attributes)
        .to eq("team" => "a", "region" => :eu, "replicas" => 3, "load" => 0.5, "canary" => false,
               "zones" => %w[a b], "ports" => [80, 443])
    ensure
      TaskerTraceNative.configure { |c| c.resource_attributes = {} }
    end
  end
end
