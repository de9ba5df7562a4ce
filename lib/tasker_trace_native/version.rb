# frozen_string_literal: true

module TaskerTraceNative
  VERSION = "0.1.0"
end
