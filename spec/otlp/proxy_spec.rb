# frozen_string_literal: true

require "spec_helper"
require "socket"
require_relative "support/helpers"

# The proxy variables are read as curl, Go and Net::HTTP read them: each
# scheme its own (then all_proxy), no_proxy entries trimmed, loopback
# always direct. Each example pushes from a fresh Ruby with exactly the
# proxy variables it names; a stand-in proxy on 127.0.0.1 refuses every
# CONNECT and records it.
RSpec.describe "OTLP pushes and proxy variables" do
  include OtlpSpecHelpers

  PROXY_VARIABLES = %w[http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY].freeze

  around do |example|
    @proxy = TCPServer.new("127.0.0.1", 0)
    @connects = Queue.new
    server = Thread.new do
      loop do
        socket = @proxy.accept
        begin
          @connects << socket.gets.to_s.strip
          # The whole request before the answer: closing with headers unread
          # can reset the connection before the client reads the 403.
          nil until ["\r\n", "\n", nil].include?(socket.gets)
          socket.write("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        rescue IOError, SystemCallError
          nil # this connection only; the proxy goes on
        ensure
          socket.close
        end
      end
    rescue IOError, SystemCallError
      nil
    end
    example.run
  ensure
    @proxy.close
    server.join(2) || server.kill
  end

  def proxy_url
    "http://127.0.0.1:#{@proxy.addr[1]}"
  end

  def connects
    Array.new(@connects.size) { @connects.pop }
  end

  # Pushes one finished trace from a fresh Ruby with `env`; what it sent
  # and its error.
  def push_from_child(env, endpoint)
    cleared = PROXY_VARIABLES.to_h { |name| [name, nil] }
    script = <<~RUBY
      b = Tasker::Telemetry::TraceBackend.instance
      b.handle_event("task.started", task_id: 1)
      b.handle_event("task.completed", task_id: 1)
      r = b.push_otlp(endpoint: ARGV[0], timeout: 3)
      puts "sent=\#{r[:sent]} error=\#{r[:error]}"
    RUBY
    out, err, ok = fresh_ruby(cleared.merge(env), script, endpoint)
    raise "child failed: #{err}" unless ok

    out
  end

  it "sends to a plain-http collector directly when only HTTPS_PROXY is set" do
    with_collector({ status: 200 }) do |collector|
      out = push_from_child({ "HTTPS_PROXY" => proxy_url }, collector.base_url)
      expect(out).to include("sent=1 error=\n")
      expect(collector.requests.size).to eq(1)
    end
    expect(connects).to be_empty
  end

  it "never sends a loopback collector through a proxy" do
    with_collector({ status: 200 }) do |collector|
      out = push_from_child({ "http_proxy" => proxy_url, "ALL_PROXY" => proxy_url }, collector.base_url)
      expect(out).to include("sent=1 error=\n")
    end
    expect(connects).to be_empty
  end

  it "sends through the scheme's proxy, and past it to a host no_proxy names (entries trimmed)" do
    out = push_from_child({ "http_proxy" => proxy_url }, "http://collector.invalid:4318")
    expect(out).to include("sent=0").and include("403")
    expect(connects).to include("CONNECT collector.invalid:4318 HTTP/1.1")

    push_from_child({ "HTTP_PROXY" => proxy_url, "NO_PROXY" => "other.invalid, collector.invalid" },
                    "http://collector.invalid:4318")
    expect(connects).to be_empty
  end
end
