# frozen_string_literal: true

require "spec_helper"
require_relative "support/helpers"

# OpenTelemetry's variables are read at the first use and at each configure
# (see settings_spec.rb for when): each example starts a fresh Ruby with
# exactly the variables it names.
RSpec.describe "OTLP settings from OTEL_* variables" do
  include OtlpSpecHelpers

  # The otlp_* settings a fresh process starts with, and what it warned.
  def fresh_settings(env, extra = "")
    script = "#{extra}; c = TaskerTraceNative.config.to_h.slice(#{OtlpSpecHelpers::OTLP_SETTINGS.map(&:inspect).join(', ')}); " \
             "puts Marshal.dump(c).unpack1('H*')"
    out, err, ok = fresh_ruby(env, script)
    raise "child failed: #{err}" unless ok

    [Marshal.load([out.strip].pack("H*")), err.lines] # rubocop:disable Security/MarshalLoad
  end

  let(:ca) { OtlpTestCa.new }

  after { ca.remove }

  it "without any: http/protobuf, gzip, 10 s, no headers, no files, no warning" do
    settings, warnings = fresh_settings({})
    expect(settings).to eq(otlp_endpoint: nil, otlp_headers: {}, otlp_protocol: "http/protobuf",
                           otlp_compression: "gzip", otlp_timeout: 10, otlp_certificate: nil,
                           otlp_client_certificate: nil, otlp_client_key: nil)
    expect(warnings).to be_empty
  end

  it "takes each variable, the TRACES_ forms first; the timeout in milliseconds" do
    client_cert, client_key = ca.issue(:client)
    cert = ca.write("client.pem", client_cert.to_pem)
    key = ca.write("key.pem", client_key.to_pem)
    other_ca = ca.write("other-ca.pem", OtlpTestCa.new("other").cert.to_pem)
    settings, warnings = fresh_settings(
      "OTEL_EXPORTER_OTLP_PROTOCOL" => "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" => "http/json",
      "OTEL_EXPORTER_OTLP_COMPRESSION" => "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION" => "none",
      "OTEL_EXPORTER_OTLP_TIMEOUT" => "2500", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT" => "750",
      "OTEL_EXPORTER_OTLP_HEADERS" => "a=1,b=x%20y", "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => "B=3",
      "OTEL_EXPORTER_OTLP_CERTIFICATE" => other_ca, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE" => ca.ca_file,
      "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" => cert, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY" => key
    )
    expect(warnings).to be_empty
    expect(settings).to eq(otlp_endpoint: nil, otlp_headers: { "a" => "1", "B" => "3" }, otlp_protocol: "http/json",
                           otlp_compression: "none", otlp_timeout: 0.75, otlp_certificate: ca.ca_file,
                           otlp_client_certificate: cert, otlp_client_key: key)
    expect(fresh_settings("OTEL_EXPORTER_OTLP_TIMEOUT" => "2500").first[:otlp_timeout]).to eq(2.5)
  end

  it "reads a timeout of 0 as no limit (a day)" do
    expect(fresh_settings("OTEL_EXPORTER_OTLP_TIMEOUT" => "0").first[:otlp_timeout]).to eq(86_400)
  end

  it "lets settings override the variables" do
    settings, = fresh_settings({ "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" => "http/json" },
                               "TaskerTraceNative.configure { |c| c.otlp_protocol = 'http/protobuf' }")
    expect(settings[:otlp_protocol]).to eq("http/protobuf")
  end

  {
    "OTEL_EXPORTER_OTLP_TIMEOUT" => ["5s", :otlp_timeout, 10, /whole number of milliseconds/],
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT" => ["-1", :otlp_timeout, 10, /whole number/],
    "OTEL_EXPORTER_OTLP_PROTOCOL" => ["grpc", :otlp_protocol, "http/protobuf", /4318.*http\/protobuf/],
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" => ["thrift", :otlp_protocol, "http/protobuf", /not a protocol/],
    "OTEL_EXPORTER_OTLP_COMPRESSION" => ["brotli", :otlp_compression, "gzip", /not a compression/],
    "OTEL_EXPORTER_OTLP_HEADERS" => ["no-equals-sign", :otlp_headers, {}, /has no '='/],
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => ["bad name=1", :otlp_headers, {}, /not a valid header name/],
    "OTEL_EXPORTER_OTLP_CERTIFICATE" => ["/nonexistent/ca.pem", :otlp_certificate, nil, %r{cannot read /nonexistent}],
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE" => ["/dev/zero", :otlp_certificate, nil, %r{/dev/zero: not a regular file}],
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY" => ["/nonexistent/k.pem", :otlp_client_key, nil, /cannot read/]
  }.each do |variable, (value, setting, default, why)|
    it "warns once about #{variable}=#{value.inspect}, naming it, and ignores it" do
      # The child changes settings and pushes twice: the warning stays one.
      pushes = "TaskerTraceNative.configure { |c| c.max_traces = 5 }; " \
               "2.times { Tasker::Telemetry::TraceBackend.instance.push_otlp(endpoint: 'http://127.0.0.1:1', timeout: 0.1) }"
      settings, warnings = fresh_settings({ variable => value }, pushes)
      expect(settings[setting]).to eq(default)
      expect(warnings.size).to eq(1), warnings.join
      expect(warnings.first).to match(/\Atasker_trace_native: #{variable} ignored: .*#{why}/)
    end
  end

  it "warns about a client certificate without its key and sends none" do
    client_cert, = ca.issue(:client)
    cert = ca.write("client.pem", client_cert.to_pem)
    settings, warnings = fresh_settings({ "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" => cert }, "TaskerTraceNative.configure { }")
    expect(settings).to include(otlp_client_certificate: nil, otlp_client_key: nil)
    expect(warnings.size).to eq(1)
    expect(warnings.first).to match(/OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE ignored: .*without a client key/)
  end

  it "warns about a malformed OTEL_RESOURCE_ATTRIBUTES (ignored whole, as before)" do
    _, warnings = fresh_settings({ "OTEL_RESOURCE_ATTRIBUTES" => "team=a,broken" }, "TaskerTraceNative.configure { }")
    expect(warnings.join).to match(/OTEL_RESOURCE_ATTRIBUTES ignored: entry "broken" has no '='/)
  end

  describe "the endpoint and headers, in a push" do
    def push_in_fresh_process(env)
      script = 'b = Tasker::Telemetry::TraceBackend.instance; b.handle_event("task.started", { task_id: 1 }); ' \
               'b.handle_event("task.completed", { task_id: 1 }); r = b.push_otlp(headers: { "X-Tenant" => "arg" }); ' \
               "puts [r[:sent], TaskerTraceNative.config.otlp_endpoint.inspect].join(' ')"
      out, err, ok = fresh_ruby(env, script)
      raise "child failed: #{err}" unless ok

      out.strip
    end

    it "appends /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT and sends OTEL_EXPORTER_OTLP_HEADERS" do
      with_collector({ status: 200 }) do |c|
        out = push_in_fresh_process("OTEL_EXPORTER_OTLP_ENDPOINT" => "#{c.base_url}/",
                                    "OTEL_EXPORTER_OTLP_HEADERS" => "api-key=secret%20one,x-tenant=env")
        expect(out).to eq("1 nil")
        request = c.requests.first
        expect(request.path).to eq("/v1/traces")
        expect(request.headers).to include("api-key" => "secret one", "x-tenant" => "arg",
                                           "content-type" => "application/x-protobuf")
      end
    end

    it "appends /v1/traces to the base URL's path, keeping its query and dropping a fragment" do
      with_collector({ status: 200 }) do |c|
        expect(push_in_fresh_process("OTEL_EXPORTER_OTLP_ENDPOINT" => "#{c.base_url}/?tenant=a")).to eq("1 nil")
        expect(push_in_fresh_process("OTEL_EXPORTER_OTLP_ENDPOINT" => "#{c.base_url}/base#frag")).to eq("1 nil")
        expect(c.requests.map(&:path)).to eq(["/v1/traces?tenant=a", "/base/v1/traces"])
      end
    end

    it "uses OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, over OTEL_EXPORTER_OTLP_ENDPOINT" do
      with_collector({ status: 200 }) do |c|
        out = push_in_fresh_process("OTEL_EXPORTER_OTLP_ENDPOINT" => "http://127.0.0.1:1",
                                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => "#{c.base_url}/custom/traces")
        expect(out).to eq("1 nil")
        expect(c.requests.first.path).to eq("/custom/traces")
      end
    end

    it "ignores a headers variable with a control character, with a warning, and still sends" do
      with_collector({ status: 200 }) do |c|
        env = { "OTEL_EXPORTER_OTLP_ENDPOINT" => c.base_url, "OTEL_EXPORTER_OTLP_HEADERS" => "x-key=acme%7F,x-a=1",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => "x-b=2" }
        settings, warnings = fresh_settings(env, "TaskerTraceNative.flush")
        expect(settings[:otlp_headers]).to eq("x-b" => "2")
        expect(warnings.join).to include('OTEL_EXPORTER_OTLP_HEADERS ignored: the value of header "x-key" ' \
                                         "contains the control character 0x7F")
        expect(warnings.join).not_to include("acme")
        expect(push_in_fresh_process(env.merge("OTEL_EXPORTER_OTLP_HEADERS" => "x-key=acme%01"))).to eq("1 nil")
        expect(c.requests.last.headers).to include("x-b" => "2")
        expect(c.requests.last.headers.keys).not_to include("x-key", "x-a")
      end
    end

    it "warns about an endpoint that is not an http(s) URL and uses the next one" do
      with_collector({ status: 200 }) do |c|
        env = { "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => "collector:4318", "OTEL_EXPORTER_OTLP_ENDPOINT" => c.base_url }
        _, warnings = fresh_settings(env, "TaskerTraceNative.flush")
        expect(warnings.join).to include("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ignored: collector:4318 has no scheme " \
                                         "(write http://collector:4318 or https://collector:4318)")
        expect(push_in_fresh_process(env)).to eq("1 nil")
      end
    end
  end
end
