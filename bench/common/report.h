// Benchmark output: an aligned table for people and a JSON document for machines, plus the
// statistics every benchmark needs (medians over repetitions) and the run's context (host,
// CPU, commit, date) so that a recorded figure says where it came from.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace zoro::bench {

class Table {
 public:
  explicit Table(std::vector<std::string> columns) : columns_(std::move(columns)) {}
  void add_row(std::vector<std::string> cells);
  // Columns padded to their widest cell; numbers right-aligned.
  std::string render() const;

 private:
  std::vector<std::string> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// printf-style formatting of one cell ("%.2f").
std::string fmt(const char* format, double value);

double median(std::vector<double> values);

// {"date", "hostname", "cpu", "cores", "git_commit" (ZORO_GIT_COMMIT env or "unknown"), ...}
nlohmann::json run_context();

// Writes the document atomically when `path` is non-empty.
void write_json(const std::string& path, const nlohmann::json& doc);

}  // namespace zoro::bench
