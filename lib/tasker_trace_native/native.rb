# frozen_string_literal: true

# Loads the compiled extension. It sits in one of three places:
# - lib/tasker_trace_native/tasker_trace_native.so: `rake compile` in a
#   checkout, and gems installed by newer RubyGems
# - lib/tasker_trace_native.so: gems installed by older RubyGems (3.3)
begin
  require "tasker_trace_native/tasker_trace_native"
rescue LoadError => nested_layout_error
  begin
    require "tasker_trace_native.so"
  rescue LoadError
    raise LoadError, "tasker_trace_native: the compiled extension was not found " \
                     "(run `rake compile` in a checkout): #{nested_layout_error.message}"
  end
end
