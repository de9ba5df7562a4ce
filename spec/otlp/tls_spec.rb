# frozen_string_literal: true

require "spec_helper"
require_relative "support/helpers"

# push_otlp over https to a receiver on 127.0.0.1 (Ruby's OpenSSL) whose
# certificate a CA made at test time signed.
RSpec.describe "TraceBackend#push_otlp over https" do
  include OtlpSpecHelpers

  let(:backend) { Tasker::Telemetry::TraceBackend.instance }
  let(:ca) { OtlpTestCa.new }

  after { ca.remove }

  def with_https_collector(client_ca: nil, &block)
    with_collector({ status: 200 }, tls: ca.server_context(client_ca: client_ca), &block)
  end

  it "refuses a server its CA is not trusted for: a clear failure naming the endpoint, not retried" do
    finished(1)
    with_https_collector do |c|
      result = backend.push_otlp(endpoint: c.base_url, timeout: 5)
      expect(result).to include(sent: 0, status: nil)
      expect(result[:error]).to include("TLS certificate error with #{c.base_url}/v1/traces")
      expect(result[:error]).to include("not signed by a trusted CA", "otlp_certificate")
      sleep 0.3
      expect(c.connections).to eq(1)
      expect(c.requests).to be_empty
    end
    expect(backend.traces.keys).to eq(["task_1"])
  end

  it "delivers gzipped protobuf with otlp_certificate naming the CA" do
    (1..2).each { |i| finished(i) }
    configure_otlp(certificate: ca.ca_file)
    with_https_collector do |c|
      expect(backend.push_otlp(endpoint: c.base_url, headers: { "authorization" => "Bearer t" }))
        .to eq(sent: 2, status: 200, error: nil, rejected: 0)
      request = c.requests.first
      expect(request.headers).to include("content-type" => "application/x-protobuf", "content-encoding" => "gzip",
                                         "authorization" => "Bearer t")
      expect(request.body.bytesize).to be > request.raw_body.bytesize
      expect(request.body).to include("task_1", "task_2")
    end
    expect(backend.traces).to be_empty
  end

  it "delivers JSON too, which decodes to the spans" do
    finished(1)
    configure_otlp(certificate: ca.ca_file, protocol: "http/json")
    with_https_collector do |c|
      expect(backend.push_otlp(endpoint: c.base_url)).to include(sent: 1, status: 200)
      expect(c.requests.first.span_count).to eq(2)
    end
  end

  it "presents a client certificate (mTLS) when the server asks for one" do
    client_ca = OtlpTestCa.new("client CA")
    client_cert, client_key = client_ca.issue(:client)
    configure_otlp(certificate: ca.ca_file)
    finished(1)
    with_https_collector(client_ca: client_ca) do |c|
      refused = backend.push_otlp(endpoint: c.base_url, timeout: 5)
      expect(refused).to include(sent: 0)
      expect(refused[:error]).to include("TLS error with #{c.base_url}/v1/traces", "client certificate")
      configure_otlp(client_certificate: client_ca.write("client.pem", client_cert.to_pem),
                     client_key: client_ca.write("client-key.pem", client_key.private_to_pem))
      expect(backend.push_otlp(endpoint: c.base_url, timeout: 5)).to include(sent: 1, status: 200)
      expect(c.requests.size).to eq(1)
    end
  ensure
    client_ca&.remove
  end

  it "says a client certificate may be needed when the server just ends the connection" do
    client_ca = OtlpTestCa.new("client CA")
    configure_otlp(certificate: ca.ca_file)
    finished(1)
    with_collector({ status: 200 }, tls: ca.server_context(client_ca: client_ca), abrupt: true) do |c|
      result = backend.push_otlp(endpoint: c.base_url, timeout: 0.5)
      expect(result).to include(sent: 0)
      expect(result[:error]).to include(c.base_url, "client certificate")
    end
    expect(backend.traces.keys).to eq(["task_1"])
  ensure
    client_ca&.remove
  end

  it "trusts the system store, which SSL_CERT_FILE names, without otlp_certificate" do
    with_https_collector do |c|
      script = 'b = Tasker::Telemetry::TraceBackend.instance; b.handle_event("task.started", { task_id: 1 }); ' \
               'b.handle_event("task.completed", { task_id: 1 }); puts b.push_otlp(endpoint: ARGV[0], timeout: 5)'
      out, err, ok = fresh_ruby({ "SSL_CERT_FILE" => ca.ca_file }, script, c.base_url)
      expect(ok).to be(true), err
      expect(out).to include("sent: 1", "status: 200").or include(":sent=>1", ":status=>200")
      expect(c.requests.size).to eq(1)
    end
  end
end
