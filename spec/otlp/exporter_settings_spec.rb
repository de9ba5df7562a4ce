# frozen_string_literal: true

require "spec_helper"
require_relative "support/helpers"

RSpec.describe "OTLP exporter settings (otlp_*)" do
  include OtlpSpecHelpers

  def otlp_config
    TaskerTraceNative.config.to_h.slice(*OtlpSpecHelpers::OTLP_SETTINGS)
  end

  let(:ca) { OtlpTestCa.new }

  after { ca.remove }

  it "are settings like the others, listed in Configuration::SETTINGS (and so in the Railtie)" do
    expect(OtlpSpecHelpers::OTLP_SETTINGS).to eq(
      %i[otlp_endpoint otlp_headers otlp_protocol otlp_compression otlp_timeout otlp_certificate
         otlp_client_certificate otlp_client_key]
    )
  end

  it "default to http/protobuf, gzip and 10 s, with no endpoint (the environment's) and no TLS files" do
    expect(otlp_config).to eq(otlp_endpoint: nil, otlp_headers: {}, otlp_protocol: "http/protobuf",
                              otlp_compression: "gzip", otlp_timeout: 10, otlp_certificate: nil,
                              otlp_client_certificate: nil, otlp_client_key: nil)
  end

  it "take their values and show them in config" do
    client_cert, client_key = ca.issue(:client)
    cert_file = ca.write("client.pem", client_cert.to_pem)
    key_file = ca.write("client-key.pem", client_key.to_pem)
    configure_otlp(endpoint: "https://otlp.example:4318", headers: { authorization: :"Bearer t", "x-a" => "1" },
                   protocol: :"http/json", compression: :none, timeout: Rational(1, 4),
                   certificate: ca.ca_file, client_certificate: cert_file, client_key: key_file)
    expect(otlp_config).to eq(otlp_endpoint: "https://otlp.example:4318",
                              otlp_headers: { "authorization" => "Bearer t", "x-a" => "1" },
                              otlp_protocol: "http/json", otlp_compression: "none", otlp_timeout: 0.25,
                              otlp_certificate: ca.ca_file, otlp_client_certificate: cert_file,
                              otlp_client_key: key_file)
    configure_otlp(protocol: " HTTP/Protobuf ", compression: "GZIP", timeout: 2.5, headers: {})
    expect(otlp_config).to include(otlp_protocol: "http/protobuf", otlp_compression: "gzip", otlp_timeout: 2.5,
                                   otlp_headers: {})
    configure_otlp(timeout: 86_400, endpoint: nil, certificate: nil, client_certificate: nil, client_key: nil)
    expect(otlp_config).to include(otlp_timeout: 86_400, otlp_endpoint: nil, otlp_certificate: nil,
                                   otlp_client_key: nil)
  end

  it "take huge values where they have no limit: a 1 MB endpoint, 10,000 headers" do
    endpoint = "http://collector:4318/#{'a' * 1_000_000}"
    headers = (1..10_000).to_h { |i| ["x-h#{i}", "v" * 50] }
    configure_otlp(endpoint: endpoint, headers: headers)
    expect(otlp_config).to include(otlp_endpoint: endpoint, otlp_headers: headers)
  end

  not_pem = "not a certificate\n"
  {
    otlp_endpoint: [5, :sym, "", "  ", "ftp://collector:4318", "http://", "collector:4318", "http://a b",
                    "\xFF".b, ["http://x"]],
    otlp_headers: [nil, "k=v", [%w[a b]], { "bad name" => "v" }, { "x" => 1 }, { "x" => "a\r\nb" }, { "" => "v" },
                   { "x" => nil }, { "x-tenant" => "acme\x01" }, { "x-tenant" => "acme\x7F" }],
    otlp_protocol: [nil, 5, "", "http", "grpc", :grpc, "x" * 100_000, "HTTP/2"],
    otlp_compression: [nil, 5, "", "brotli", "deflate", true],
    otlp_timeout: [nil, 0, -1, "10", Float::NAN, Float::INFINITY, -Float::INFINITY, 10**30, 86_401, 1e-12,
                   Object.new],
    otlp_certificate: [5, :sym, "", "/nonexistent/ca.pem", "bad\0path", "/#{'a' * 100_000}", :not_pem],
    otlp_client_certificate: [5, "", "/nonexistent/client.pem", :not_pem],
    otlp_client_key: [5, "", "/nonexistent/key.pem", :not_pem]
  }.each do |setting, bad_values|
    bad_values.each do |bad|
      it "refuses #{setting} = #{bad.inspect[0, 40]} with an ArgumentError naming the setting; nothing changes" do
        bad = ca.write("not.pem", not_pem) if bad == :not_pem
        before = TaskerTraceNative.config.to_h
        error = nil
        expect do
          TaskerTraceNative.configure do |c|
            c.max_traces = 7
            c.public_send(:"#{setting}=", bad)
          end
        end.to raise_error(ArgumentError, /\A#{setting} must be /) { |e| error = e }
        expect(error.message.size).to be < 600
        expect(TaskerTraceNative.config.to_h).to eq(before)
      end
    end
  end

  it "refuses grpc, saying to send with http/protobuf to port 4318" do
    expect { configure_otlp(protocol: "grpc") }
      .to raise_error(ArgumentError, /\Aotlp_protocol must be .*grpc.*4318.*http\/protobuf/)
  end

  it "say what is wrong with a TLS file, naming it" do
    file = ca.write("key-only.pem", OpenSSL::PKey::EC.generate("prime256v1").to_pem)
    expect { configure_otlp(certificate: file) }
      .to raise_error(ArgumentError, /\Aotlp_certificate must be .*#{Regexp.escape(file)}.*no PEM certificate/)
    expect { configure_otlp(client_key: ca.ca_file) }
      .to raise_error(ArgumentError, /\Aotlp_client_key must be .*#{Regexp.escape(ca.ca_file)}/)
    expect { configure_otlp(certificate: "/nonexistent/ca.pem") }
      .to raise_error(ArgumentError, %r{cannot read /nonexistent/ca\.pem})
  end

  it "need the client certificate and its key together, and matching; nothing changes otherwise" do
    client_cert, client_key = ca.issue(:client)
    cert_file = ca.write("client.pem", client_cert.to_pem)
    key_file = ca.write("client-key.pem", client_key.private_to_pem)
    other_key = ca.write("other-key.pem", OpenSSL::PKey::EC.generate("prime256v1").private_to_pem)
    before = TaskerTraceNative.config.to_h
    expect { configure_otlp(client_certificate: cert_file) }
      .to raise_error(ArgumentError, /\Aotlp_client_key must be set with otlp_client_certificate/)
    expect { configure_otlp(client_key: key_file) }
      .to raise_error(ArgumentError, /\Aotlp_client_certificate must be set with otlp_client_key/)
    expect { configure_otlp(client_certificate: cert_file, client_key: other_key) }
      .to raise_error(ArgumentError, /\Aotlp_client_key must be the key of otlp_client_certificate/)
    expect(TaskerTraceNative.config.to_h).to eq(before)
    configure_otlp(client_certificate: cert_file, client_key: key_file)
    expect(otlp_config).to include(otlp_client_certificate: cert_file, otlp_client_key: key_file)
  end

  it "keep header values (credentials) out of inspect" do
    configure_otlp(headers: { "authorization" => "Bearer secret-token" })
    shown = TaskerTraceNative.config.inspect
    expect(shown).to match(/otlp_headers={"authorization" ?=> ?"\[FILTERED\]"}/)
    expect(shown).not_to include("secret-token")
    expect(TaskerTraceNative.config.otlp_headers).to eq("authorization" => "Bearer secret-token")
  end

  it "refuse a header value the HTTP client would refuse, naming the byte, not the value" do
    expect { configure_otlp(headers: { "x-tenant" => "acme\x7F" }) }
      .to raise_error(ArgumentError,
                      /\Aotlp_headers must be .*: the value of header "x-tenant" contains the control character 0x7F/)
    # Tab, printable ASCII and non-ASCII text are taken (and sent).
    configure_otlp(headers: { "x-tenant" => "caf\u00e9\tone" })
    expect(otlp_config[:otlp_headers]).to eq("x-tenant" => "caf\u00e9\tone")
  end

  it "check each assignment at once, inside the block" do
    TaskerTraceNative.configure do |c|
      expect { c.otlp_timeout = 0 }.to raise_error(ArgumentError, /\Aotlp_timeout must be/)
      c.otlp_timeout = 3
    end
    expect(otlp_config[:otlp_timeout]).to eq(3)
  end

  it "check otlp_headers again when applied (a Hash changed in place); nothing changes" do
    before = TaskerTraceNative.config.to_h
    expect do
      TaskerTraceNative.configure do |c|
        headers = { "x-ok" => "1" }
        c.otlp_headers = headers
        headers["bad name"] = "v"
      end
    end.to raise_error(ArgumentError, /\Aotlp_headers must be/)
    expect(TaskerTraceNative.config.to_h).to eq(before)
  end

  it "name refused headers, never their values, in otlp_headers' and push_otlp's errors" do
    backend = Tasker::Telemetry::TraceBackend.instance
    [{ "authorization" => "Bearer s3cret\x01" }, { "authorization" => ["Bearer s3cret"] },
     "authorization=Bearer s3cret", { "x-ok" => "1", "bad name" => "s3cret" }].each do |headers|
      expect { TaskerTraceNative.configure { |c| c.otlp_headers = headers } }
        .to raise_error(ArgumentError, /\Aotlp_headers must be/) { |e| expect(e.message).not_to include("s3cret") }
      expect { backend.push_otlp(endpoint: "http://127.0.0.1:9", headers: headers) }
        .to raise_error(ArgumentError, /\Aheaders must be/) { |e| expect(e.message).not_to include("s3cret") }
    end
    expect { TaskerTraceNative.configure { |c| c.otlp_headers = { "authorization" => ["Bearer s3cret"] } } }
      .to raise_error(ArgumentError, /"authorization" => an instance of Array/)
  end

  it "keep a TLS file set earlier when other settings change, even if the file is gone since" do
    configure_otlp(certificate: ca.ca_file)
    File.delete(ca.ca_file)
    configure_otlp(timeout: 4)
    expect(otlp_config).to include(otlp_certificate: ca.ca_file, otlp_timeout: 4)
  end
end
