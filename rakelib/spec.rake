# frozen_string_literal: true

desc "Run the RSpec suite"
task :spec do
  sh "rspec"
end
