# frozen_string_literal: true

# The benchmark suite against the pure-Ruby reference backend (bin/bench), on
# a release build of the extension.
#   rake bench          # full run: the Markdown table with medians and targets
#   rake bench:quick    # every case on small numbers, in seconds
#   rake bench:core     # criterion benches of the Rust core (cargo bench)
desc "Benchmark the native backend against the pure-Ruby reference (full run)"
task bench: :compile do
  ruby File.expand_path("../bin/bench", __dir__)
end

namespace :bench do
  desc "Benchmark suite smoke run (seconds; fails only on errors)"
  task quick: :compile do
    ruby File.expand_path("../bin/bench", __dir__), "--quick"
  end

  desc "Criterion benches of the core's hot paths"
  task :core do
    sh "cargo", "bench", "--manifest-path", File.expand_path("../Cargo.toml", __dir__), "-p", "tasker_trace_core", "--benches"
  end
end
