# frozen_string_literal: true

require "socket"

module TaskerTraceNative
  module Bench
    # An OTLP/HTTP receiver on 127.0.0.1 for the exporter benchmark, in a
    # thread of the suite's process (the measured process is another one, so
    # the receiver never holds its GVL). It reads each request, answers 200
    # (or `status`) and counts; it never decodes. At most 256 connections. Its threads run
    # at nice +10, as a collector would run on other cores: what the
    # benchmark measures is the app's cost, not the collector's CPU.
    class Receiver
      MAX_CONNECTIONS = 256

      def initialize(status: 200)
        @status = status
        @server = TCPServer.new("127.0.0.1", 0)
        @lock = Mutex.new
        @requests = 0
        @bytes = 0
        @connections = []
        @acceptor = Thread.new { accept_loop }
      end

      def url
        "http://127.0.0.1:#{@server.addr[1]}/v1/traces"
      end

      def requests
        @lock.synchronize { @requests }
      end

      def bytes
        @lock.synchronize { @bytes }
      end

      def close
        @server.close
        @acceptor.join(2) || @acceptor.kill
        @connections.each { |t| t.join(0.5) || t.kill }
      end

      private

      def accept_loop
        background
        loop do
          socket = @server.accept
          if @connections.size >= MAX_CONNECTIONS
            socket.close
            next
          end
          @connections << Thread.new(socket) { |s| serve(s) }
        end
      rescue IOError, SystemCallError
        nil
      end

      # Lowers this thread's CPU priority (Linux: nice is per thread).
      def background
        Process.setpriority(Process::PRIO_PROCESS, Thread.current.native_thread_id, 10)
      rescue NoMethodError, SystemCallError
        nil
      end

      def serve(socket)
        background
        while socket.gets
          length = 0
          while (line = socket.gets) && line != "\r\n"
            name, value = line.split(":", 2)
            length = value.to_i if name.casecmp?("content-length")
          end
          socket.read(length)
          @lock.synchronize do
            @requests += 1
            @bytes += length
          end
          socket.write("HTTP/1.1 #{@status} X\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
        end
      rescue IOError, SystemCallError
        nil
      ensure
        socket.close
      end
    end
  end
end
