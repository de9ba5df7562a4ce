# frozen_string_literal: true

require "spec_helper"

# The README's "Differences" section lists the same deliberate differences
# from Tasker's pure-Ruby TraceBackend as docs/drop-in-backend.md, by the
# bold title of each bullet, in the same order: the (better) rules of the
# TraceBackend contract.
module DifferencesSection
  ROOT = File.expand_path("../..", __dir__)

  # The bold titles of the bullets in the section whose heading matches.
  def self.titles(file, heading)
    text = File.read(File.join(ROOT, file))
    section = text[/^## #{heading}[^\n]*\n(.*?)(?=^## |\z)/m, 1]
    raise "#{file}: no section matching ## #{heading}" unless section

    # The docs go on with what stays as the original has it: not a difference.
    section = section.split(/^What stays/).first
    section.scan(/^- \*\*(.+?)\*\*/).flatten.map { |t| t.delete("`").delete_suffix(".").downcase }
  end
end

RSpec.describe "The README's Differences section" do
  let(:readme) { DifferencesSection.titles("README.md", "Differences") }
  let(:docs) { DifferencesSection.titles("docs/drop-in-backend.md", "Differences") }

  it "lists the deliberate differences of docs/drop-in-backend.md, in order" do
    expect(docs.size).to be >= 7
    expect(readme).to eq(docs)
  end

  it "names each (better) rule of the TraceBackend contract" do
    expected = ["event names", "durations", "generic keys never collide", "payloads are copied on arrival",
                "traces returns a copy", "more in stats", "bounded"]
    expect(readme).to eq(expected)
  end
end
