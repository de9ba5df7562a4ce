# frozen_string_literal: true

require "json"
require "openssl"
require "socket"
require "zlib"

# A scripted OTLP/HTTP collector on 127.0.0.1, in a thread of this process:
# answers each request with the next reply (the last one repeats) and records
# what it got. At most 50 connections, one request each unless `keep_alive:`
# (then up to 20 requests a connection). With `tls:` (an
# OpenSSL::SSL::SSLContext) it speaks https; failed handshakes are counted
# (and the connection drained before it is closed, unless `abrupt:`).
class OtlpSpecCollector
  Request = Struct.new(:method, :path, :headers, :raw_body, :connection, :at, keyword_init: true) do
    # The body as sent, decompressed when it came gzipped.
    def body
      headers["content-encoding"] == "gzip" ? Zlib.gunzip(raw_body) : raw_body
    end

    def json
      JSON.parse(body)
    end

    def span_count
      json.fetch("resourceSpans").sum { |rs| rs.fetch("scopeSpans").sum { |ss| ss.fetch("spans").size } }
    end
  end

  attr_reader :handshake_errors

  def initialize(*replies, keep_alive: false, tls: nil, abrupt: false)
    @replies = replies.empty? ? [{ status: 200 }] : replies
    @keep_alive = keep_alive
    @tls = tls
    @abrupt = abrupt
    @server = TCPServer.new("127.0.0.1", 0)
    @requests = []
    @connections = 0
    @handshake_errors = []
    @open = []
    @lock = Mutex.new
    @thread = Thread.new { serve }
  end

  def port
    @server.addr[1]
  end

  def base_url
    "#{@tls ? 'https' : 'http'}://127.0.0.1:#{port}"
  end

  def requests
    @lock.synchronize { @requests.dup }
  end

  def connections
    @lock.synchronize { @connections }
  end

  def close
    @server.close
    # A kept-alive connection would wait for the next request: end it.
    @lock.synchronize { @open.each(&:close) }
    @thread.join(2) || @thread.kill
  rescue IOError, SystemCallError
    @thread.kill
  end

  private

  # Connections one after the other; kept-alive ones each in a thread of
  # their own (a client may open a second while the first stays open).
  def serve
    handlers = []
    while @connections < 50
      socket = @server.accept
      connection = @lock.synchronize { @connections += 1 }
      socket = secure(socket) if @tls
      next unless socket

      @lock.synchronize { @open << socket }
      if @keep_alive
        handlers << Thread.new { handle_connection(socket, connection) }
      else
        handle_connection(socket, connection)
      end
    end
  rescue IOError, SystemCallError
    nil
  ensure
    handlers&.each { |t| t.join(1) || t.kill }
  end

  def secure(socket)
    ssl = OpenSSL::SSL::SSLSocket.new(socket, @tls)
    ssl.sync_close = true
    ssl.accept
    ssl
  rescue OpenSSL::SSL::SSLError, IOError, SystemCallError => e
    @lock.synchronize { @handshake_errors << e.message }
    @abrupt ? socket.close : drain_and_close(socket)
    nil
  end

  # After a failed handshake OpenSSL has sent its alert: read what the
  # client still sends until it closes, so that closing here does not reset
  # the connection before the client has read the alert.
  def drain_and_close(socket)
    socket.shutdown(Socket::SHUT_WR)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 2
    while IO.select([socket], nil, nil, [deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC), 0].max)
      break if socket.read_nonblock(4096, exception: false).nil?
    end
  rescue IOError, SystemCallError, SocketError
    nil
  ensure
    socket.close
  end

  def handle_connection(socket, connection)
    (@keep_alive ? 20 : 1).times do
      break unless handle(socket, connection)
    end
  rescue IOError, SystemCallError, OpenSSL::SSL::SSLError
    nil
  ensure
    socket.close
  end

  def handle(socket, connection)
    line = socket.gets
    return false unless line

    method, path = line.split
    headers = {}
    while (line = socket.gets) && line != "\r\n"
      name, value = line.split(":", 2)
      headers[name.downcase] = value.strip
    end
    body = socket.read(headers.fetch("content-length", "0").to_i)
    reply = @lock.synchronize do
      @requests << Request.new(method: method, path: path, headers: headers, raw_body: body, connection: connection,
                               at: Process.clock_gettime(Process::CLOCK_MONOTONIC))
      @replies[[@requests.size - 1, @replies.size - 1].min]
    end
    sleep(reply[:delay]) if reply[:delay]
    text = reply.fetch(:body, "{}")
    extra = reply.fetch(:headers, {}).map { |k, v| "#{k}: #{v}\r\n" }.join
    content_type = reply.fetch(:content_type, "application/json")
    closing = @keep_alive ? "" : "Connection: close\r\n"
    socket.write("HTTP/1.1 #{reply[:status]} X\r\nContent-Type: #{content_type}\r\n" \
                 "Content-Length: #{text.bytesize}\r\n#{closing}#{extra}\r\n#{text}")
    true
  end
end
