#include "bench/common/report.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include "runtime/base/check.h"
#include "runtime/base/file_util.h"

namespace zoro::bench {

void Table::add_row(std::vector<std::string> cells) {
  ZORO_CHECK(cells.size() == columns_.size(),
             "table row has " << cells.size() << " cells for " << columns_.size() << " columns");
  rows_.push_back(std::move(cells));
}

std::string Table::render() const {
  std::vector<std::size_t> width(columns_.size());
  for (std::size_t c = 0; c < columns_.size(); ++c) width[c] = columns_[c].size();
  for (const auto& row : rows_) {
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  auto numeric = [](const std::string& s) {
    return !s.empty() &&
           (std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-' || s[0] == '.');
  };
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& cells, bool header) {
    for (std::size_t c = 0; c < cells.size(); ++c) {
      const std::string pad(width[c] - cells[c].size(), ' ');
      out << (c ? "  " : "");
      if (!header && numeric(cells[c])) {
        out << pad << cells[c];
      } else {
        out << cells[c] << pad;
      }
    }
    out << '\n';
  };
  line(columns_, true);
  std::size_t total = 0;
  for (auto w : width) total += w + 2;
  out << std::string(total > 2 ? total - 2 : 0, '-') << '\n';
  for (const auto& row : rows_) line(row, false);
  return out.str();
}

std::string fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

double median(std::vector<double> values) {
  ZORO_CHECK(!values.empty(), "median of no values");
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

nlohmann::json run_context() {
  nlohmann::json ctx;
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  ctx["hostname"] = host;
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  ctx["date"] = date;
  std::string cpu = "unknown";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string l; std::getline(cpuinfo, l);) {
    if (l.rfind("model name", 0) == 0) {
      cpu = l.substr(l.find(':') + 2);
      break;
    }
  }
  ctx["cpu"] = cpu;
  ctx["hardware_threads"] = std::thread::hardware_concurrency();
  const char* commit = std::getenv("ZORO_GIT_COMMIT");
  ctx["git_commit"] = commit ? commit : "unknown";
  return ctx;
}

void write_json(const std::string& path, const nlohmann::json& doc) {
  if (path.empty()) return;
  write_file_atomically(path, doc.dump(2) + "\n");
}

}  // namespace zoro::bench
