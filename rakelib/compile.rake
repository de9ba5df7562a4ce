# frozen_string_literal: true

require "fileutils"
require "rbconfig"

# Builds the binding crate and puts the library where lib/ loads it from in a
# checkout: lib/tasker_trace_native/tasker_trace_native.so.
#   rake compile                 # release build (what benchmarks measure)
#   CARGO_PROFILE=dev rake compile
desc "Compile the native extension into lib/"
task :compile do
  root = File.expand_path("..", __dir__)
  profile = ENV.fetch("CARGO_PROFILE", "release")
  target_dir = ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target"))
  env = { "RUBY" => RbConfig.ruby }
  sh env, "cargo", "build", "--quiet", "--manifest-path", File.join(root, "Cargo.toml"),
     "-p", "tasker_trace_native", "--profile", profile, "--target-dir", target_dir
  out_dir = profile == "dev" ? "debug" : profile
  built = File.join(target_dir, out_dir, "libtasker_trace_native.#{RbConfig::CONFIG['SOEXT']}")
  dest = File.join(root, "lib", "tasker_trace_native", "tasker_trace_native.#{RbConfig::CONFIG['DLEXT']}")
  FileUtils.mkdir_p(File.dirname(dest))
  # Copy to a temporary name and rename, so a running process never maps a
  # half-written file.
  FileUtils.cp(built, "#{dest}.tmp")
  File.rename("#{dest}.tmp", dest)
end
