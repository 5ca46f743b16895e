// A task trace: (track, label, start, end) for every task, with global sequence numbers.
//
// Tracks are streams ("compute", "d2h") or host workers. Sequence numbers come from one
// atomic counter shared by every begin and end, so they order events across threads exactly:
// "the copy of bucket i started before the compute of bucket i+1 ended" is a comparison of
// integers, with no clock involved (tests of overlap use these, never the timestamps).
// Timestamps (steady clock, ns since the trace was created) are for people and Chrome traces.
//
// Thread-safe. Disabled traces cost one relaxed atomic load per task.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace zoro::device {

struct TraceRecord {
  std::string track;
  std::string label;
  std::uint64_t seq_begin = 0;
  std::uint64_t seq_end = 0;
  std::int64_t begin_ns = 0;
  std::int64_t end_ns = 0;
};

class Trace {
 public:
  Trace();
  void set_enabled(bool enabled) { enabled_.store(enabled, std::memory_order_relaxed); }
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }

  // An open interval; pass it to end(). A Span from a disabled trace is inert.
  struct Span {
    std::uint64_t seq_begin = 0;
    std::int64_t begin_ns = 0;
    bool active = false;
  };
  Span begin();
  void end(const Span& span, std::string track, std::string label);

  // Records completed so far, in order of their end.
  std::vector<TraceRecord> snapshot() const;
  void clear();

  // Writes the records as a Chrome trace (JSON, viewable in Perfetto) atomically to `path`.
  void write_chrome_trace(const std::string& path) const;

 private:
  std::int64_t now_ns() const;
  std::atomic<bool> enabled_{false};
  std::atomic<std::uint64_t> seq_{0};
  std::int64_t origin_ns_;
  mutable std::mutex mutex_;
  std::vector<TraceRecord> records_;
};

// Finds the first record with this track and label; throws InvalidArgument naming them when
// absent. For tests and reports.
const TraceRecord& find_record(const std::vector<TraceRecord>& records, const std::string& track,
                               const std::string& label);

}  // namespace zoro::device
