# frozen_string_literal: true

require "spec_helper"
require_relative "../rails/subprocess_helper"

# Every ```ruby block of README.md and docs/*.md runs as written, with only
# the gem loaded, in a fresh process. A block that needs more carries an HTML
# comment on the line before its fence, `<!-- needs: rails -->` (or tasker,
# collector, bundler), and is skipped here; what it names must show in the
# block. Shell and text blocks are not run.
module CodeBlocks
  ROOT = File.expand_path("../..", __dir__)
  NEEDS = {
    # A marker must be backed by what the block uses.
    "rails" => /Rails|config\.tasker_trace_native/,
    "tasker" => /Tasker::Events|trace_lifecycle!/,
    "collector" => /push_otlp|flush|shutdown|exporter_stats|otlp_endpoint/,
    "bundler" => /^\s*gem ["']/
  }.freeze

  Block = Struct.new(:file, :line, :lang, :needs, :code, keyword_init: true) do
    def where
      "#{file}:#{line}"
    end
  end

  # Every fenced block of a Markdown file, with its language and the marker
  # on the line before its fence (if any).
  def self.blocks(path)
    lines = File.readlines(path, chomp: true)
    found = []
    i = 0
    while i < lines.size
      fence = lines[i][/\A\s*(`{3,})(\w*)/, 1]
      unless fence
        i += 1
        next
      end
      lang = lines[i][/\A\s*`{3,}(\w*)/, 1]
      indent = lines[i][/\A\s*/]
      previous = i.positive? ? lines[i - 1] : ""
      needs = previous[/<!--\s*needs:\s*([\w-]+)\s*-->/, 1]
      close = (i + 1...lines.size).find { |j| lines[j].strip == fence }
      raise "#{path}:#{i + 1}: unclosed code block" unless close

      code = lines[i + 1...close].map { |l| l.delete_prefix(indent) }.join("\n")
      found << Block.new(file: path.delete_prefix("#{ROOT}/"), line: i + 1, lang: lang, needs: needs, code: code)
      i = close + 1
    end
    found
  end

  def self.files
    [File.join(ROOT, "README.md"), *Dir[File.join(ROOT, "docs", "*.md")].sort]
  end

  def self.ruby_blocks
    files.flat_map { |f| blocks(f) }.select { |b| b.lang == "ruby" }
  end
end

RSpec.describe "Code blocks in README.md and docs/" do
  include SubprocessHelper

  blocks = CodeBlocks.ruby_blocks

  it "finds the documentation's Ruby blocks" do
    expect(CodeBlocks.files).to include(File.join(CodeBlocks::ROOT, "README.md"))
    expect(blocks.size).to be >= 10
    expect(blocks.count { |b| b.needs.nil? }).to be >= 5
  end

  it "marks only with a known need that the block actually has" do
    marked = blocks.reject { |b| b.needs.nil? }
    problems = marked.filter_map do |b|
      pattern = CodeBlocks::NEEDS[b.needs]
      if pattern.nil?
        "#{b.where}: unknown need #{b.needs.inspect} (known: #{CodeBlocks::NEEDS.keys.join(', ')})"
      elsif !b.code.match?(pattern)
        "#{b.where}: marked #{b.needs} but uses nothing of it"
      end
    end
    expect(problems).to eq([])
  end

  it "parses every Ruby block, marked or not" do
    broken = blocks.filter_map do |b|
      RubyVM::InstructionSequence.compile(b.code, b.where)
      nil
    rescue SyntaxError => e
      "#{b.where}: #{e.message.lines.first}"
    end
    expect(broken).to eq([])
  end

  # The blocks that need nothing but the gem, each in a process of its own.
  # The exporter is off and no OTEL_* variable leaks in from the environment.
  otel = ENV.keys.grep(/\AOTEL_/).to_h { |k| [k, nil] }
  blocks.select { |b| b.needs.nil? }.each do |block|
    it "runs #{block.where} as written", timeout: 120 do
      argv = [RbConfig.ruby, "-I", SubprocessHelper::LIB, "-r", "tasker_trace_native", "-e", block.code]
      result = run_command(argv, env: otel.merge("TASKER_TRACE_NATIVE_TEST_HOOKS" => nil), timeout: 120)
      expect(result.status.success?).to be(true), "#{block.where}\n#{block.code}\n#{result.describe}"
    end
  end
end
