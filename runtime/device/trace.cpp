#include "runtime/device/trace.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <unordered_map>

#include "runtime/base/check.h"
#include "runtime/base/file_util.h"

namespace zoro::device {

namespace {
std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string json_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}
}  // namespace

Trace::Trace() : origin_ns_(steady_ns()) {}

std::int64_t Trace::now_ns() const { return steady_ns() - origin_ns_; }

Trace::Span Trace::begin() {
  if (!enabled()) return {};
  Span span;
  span.seq_begin = seq_.fetch_add(1, std::memory_order_acq_rel);
  span.begin_ns = now_ns();
  span.active = true;
  return span;
}

void Trace::end(const Span& span, std::string track, std::string label) {
  if (!span.active) return;
  TraceRecord record;
  record.seq_end = seq_.fetch_add(1, std::memory_order_acq_rel);
  record.end_ns = now_ns();
  record.seq_begin = span.seq_begin;
  record.begin_ns = span.begin_ns;
  record.track = std::move(track);
  record.label = std::move(label);
  std::lock_guard lock(mutex_);
  records_.push_back(std::move(record));
}

std::vector<TraceRecord> Trace::snapshot() const {
  std::lock_guard lock(mutex_);
  return records_;
}

void Trace::clear() {
  std::lock_guard lock(mutex_);
  records_.clear();
}

void Trace::write_chrome_trace(const std::string& path) const {
  const auto records = snapshot();
  std::unordered_map<std::string, int> tids;
  std::string json = "{\"traceEvents\":[\n";
  bool first = true;
  for (const auto& r : records) {
    auto [it, inserted] = tids.emplace(r.track, static_cast<int>(tids.size()) + 1);
    if (inserted) {
      json += first ? "" : ",\n";
      first = false;
      json += "{\"ph\":\"M\",\"pid\":1,\"tid\":" + std::to_string(it->second) +
              ",\"name\":\"thread_name\",\"args\":{\"name\":\"" + json_escape(r.track) + "\"}}";
    }
    char times[96];
    std::snprintf(times, sizeof times, "\"ts\":%.3f,\"dur\":%.3f",
                  static_cast<double>(r.begin_ns) / 1e3,
                  static_cast<double>(r.end_ns - r.begin_ns) / 1e3);
    json += first ? "" : ",\n";
    first = false;
    json += "{\"ph\":\"X\",\"pid\":1,\"tid\":" + std::to_string(it->second) + ",\"name\":\"" +
            json_escape(r.label) + "\"," + times +
            ",\"args\":{\"seq_begin\":" + std::to_string(r.seq_begin) +
            ",\"seq_end\":" + std::to_string(r.seq_end) + "}}";
  }
  json += "\n]}\n";
  write_file_atomically(path, json);
}

const TraceRecord& find_record(const std::vector<TraceRecord>& records, const std::string& track,
                               const std::string& label) {
  for (const auto& r : records) {
    if (r.track == track && r.label == label) return r;
  }
  ZORO_THROW(InvalidArgument, "no trace record '" << label << "' on track '" << track << "' among "
                                                  << records.size() << " records");
}

}  // namespace zoro::device
