# frozen_string_literal: true

require "openssl"
require "tmpdir"

# A CA made at test time, the certificates it signs for 127.0.0.1 (server)
# or a client, and PEM files of them in a temporary directory.
class OtlpTestCa
  attr_reader :cert, :key, :dir

  def initialize(name = "tasker_trace_native test CA")
    @dir = Dir.mktmpdir("otlp-ca")
    @key = OpenSSL::PKey::EC.generate("prime256v1")
    @cert = build(name, @key, issuer: nil) do |ext|
      [ext.create_extension("basicConstraints", "CA:TRUE", true),
       ext.create_extension("keyUsage", "keyCertSign, cRLSign, digitalSignature", true)]
    end
  end

  # A certificate for 127.0.0.1 and its key: `:server` or `:client`.
  def issue(purpose)
    key = OpenSSL::PKey::EC.generate("prime256v1")
    usage = purpose == :server ? "serverAuth" : "clientAuth"
    cert = build("127.0.0.1", key, issuer: self) do |ext|
      [ext.create_extension("basicConstraints", "CA:FALSE", true),
       ext.create_extension("keyUsage", "digitalSignature", true),
       ext.create_extension("extendedKeyUsage", usage, false),
       ext.create_extension("subjectAltName", "IP:127.0.0.1", false)]
    end
    [cert, key]
  end

  # Writes `pem` to a file here and returns its path.
  def write(name, pem)
    path = File.join(dir, name)
    File.write(path, pem)
    path
  end

  def ca_file
    @ca_file ||= write("ca.pem", cert.to_pem)
  end

  # A server context presenting a certificate this CA signed; with
  # `client_ca:`, clients must present one that CA signed.
  def server_context(client_ca: nil)
    cert, key = issue(:server)
    ctx = OpenSSL::SSL::SSLContext.new
    ctx.cert = cert
    ctx.key = key
    ctx.min_version = OpenSSL::SSL::TLS1_2_VERSION
    if client_ca
      store = OpenSSL::X509::Store.new
      store.add_cert(client_ca.cert)
      ctx.cert_store = store
      ctx.verify_mode = OpenSSL::SSL::VERIFY_PEER | OpenSSL::SSL::VERIFY_FAIL_IF_NO_PEER_CERT
    end
    ctx
  end

  def remove
    FileUtils.rm_rf(dir)
  end

  private

  def build(common_name, key, issuer:)
    cert = OpenSSL::X509::Certificate.new
    cert.version = 2
    cert.serial = OpenSSL::BN.rand(64)
    cert.subject = OpenSSL::X509::Name.new([["CN", common_name]])
    cert.issuer = issuer ? issuer.cert.subject : cert.subject
    cert.public_key = key
    cert.not_before = Time.now - 60
    cert.not_after = Time.now + 3600
    ext = OpenSSL::X509::ExtensionFactory.new
    ext.subject_certificate = cert
    ext.issuer_certificate = issuer ? issuer.cert : cert
    yield(ext).each { |e| cert.add_extension(e) }
    cert.add_extension(ext.create_extension("subjectKeyIdentifier", "hash", false))
    cert.add_extension(ext.create_extension("authorityKeyIdentifier", "keyid:always", false)) if issuer
    cert.sign(issuer ? issuer.key : key, OpenSSL::Digest.new("SHA256"))
    cert
  end
end
