// Trace: sequence numbers order events across threads; Chrome traces are written whole.
#include "runtime/device/trace.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/file_util.h"
#include "tests/device/device_test_util.h"

namespace zoro::testing {
namespace {

using zoro::device::Trace;
using zoro::device::TraceRecord;

TEST(TraceTest, DisabledTraceRecordsNothing) {
  Trace trace;
  EXPECT_FALSE(trace.enabled());
  const Trace::Span span = trace.begin();
  EXPECT_FALSE(span.active);
  trace.end(span, "track", "label");
  EXPECT_TRUE(trace.snapshot().empty());
}

TEST(TraceTest, SequenceNumbersOrderBeginsAndEnds) {
  Trace trace;
  trace.set_enabled(true);
  const Trace::Span outer = trace.begin();
  const Trace::Span inner = trace.begin();
  trace.end(inner, "t", "inner");
  trace.end(outer, "t", "outer");
  const Trace::Span after = trace.begin();
  trace.end(after, "u", "after");
  const auto records = trace.snapshot();
  ASSERT_EQ(records.size(), 3u);
  // In order of their end.
  EXPECT_EQ(records[0].label, "inner");
  EXPECT_EQ(records[1].label, "outer");
  EXPECT_EQ(records[2].label, "after");
  const TraceRecord& r_outer = zoro::device::find_record(records, "t", "outer");
  const TraceRecord& r_inner = zoro::device::find_record(records, "t", "inner");
  const TraceRecord& r_after = zoro::device::find_record(records, "u", "after");
  EXPECT_LT(r_outer.seq_begin, r_inner.seq_begin);
  EXPECT_LT(r_inner.seq_end, r_outer.seq_end);
  EXPECT_LT(r_outer.seq_end, r_after.seq_begin);
  EXPECT_THROW((void)zoro::device::find_record(records, "t", "missing"), zoro::InvalidArgument);
  trace.clear();
  EXPECT_TRUE(trace.snapshot().empty());
}

TEST(TraceTest, SequenceNumbersAreUniqueAcrossThreads) {
  Trace trace;
  trace.set_enabled(true);
  constexpr int kThreads = 4;
  constexpr int kSpans = 250;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&trace, t] {
      for (int i = 0; i < kSpans; ++i) {
        const Trace::Span span = trace.begin();
        trace.end(span, "thread" + std::to_string(t), std::to_string(i));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const auto records = trace.snapshot();
  ASSERT_EQ(records.size(), static_cast<std::size_t>(kThreads * kSpans));
  std::vector<std::uint64_t> seqs;
  for (const auto& r : records) {
    EXPECT_LT(r.seq_begin, r.seq_end);
    seqs.push_back(r.seq_begin);
    seqs.push_back(r.seq_end);
  }
  std::sort(seqs.begin(), seqs.end());
  EXPECT_EQ(std::adjacent_find(seqs.begin(), seqs.end()), seqs.end()) << "a repeated seq";
  EXPECT_EQ(seqs.back(), seqs.size() - 1) << "dense from 0";
}

TEST(TraceTest, WritesAChromeTrace) {
  Trace trace;
  trace.set_enabled(true);
  for (const char* label : {"copy 4096 B", "adam \"step\" 1", "kernel"}) {
    trace.end(trace.begin(), "compute", label);
  }
  trace.end(trace.begin(), "d2h", "copy back");
  const auto dir =
      std::filesystem::temp_directory_path() / ("zoro_trace_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "trace.json").string();
  trace.write_chrome_trace(path);
  const std::string json = zoro::read_file(path);
  std::filesystem::remove_all(dir);

  ASSERT_FALSE(json.empty());
  EXPECT_EQ(json.front(), '{');
  EXPECT_EQ(json[json.find_last_not_of('\n')], '}');
  EXPECT_CONTAINS(json, "\"traceEvents\"");
  EXPECT_CONTAINS(json, "\"name\":\"copy 4096 B\"");
  EXPECT_CONTAINS(json, "adam \\\"step\\\" 1");   // quotes escaped
  EXPECT_CONTAINS(json, "\"name\":\"compute\"");  // the track names its thread
  EXPECT_CONTAINS(json, "\"name\":\"d2h\"");
  EXPECT_CONTAINS(json, "\"seq_begin\"");
  // Balanced brackets outside strings: a cheap stand-in for a JSON parser.
  int braces = 0;
  int brackets = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    braces += c == '{' ? 1 : c == '}' ? -1 : 0;
    brackets += c == '[' ? 1 : c == ']' ? -1 : 0;
    ASSERT_GE(braces, 0);
    ASSERT_GE(brackets, 0);
  }
  EXPECT_FALSE(in_string);
  EXPECT_EQ(braces, 0);
  EXPECT_EQ(brackets, 0);
  const auto events = static_cast<std::size_t>(std::count(json.begin(), json.end(), '\n'));
  EXPECT_EQ(events, 8u)
      << "one line each: the opening, 6 events (4 spans, 2 thread names), the closing";
}

TEST(TraceTest, WritingIntoAMissingDirectoryIsAnIoError) {
  Trace trace;
  EXPECT_THROW(trace.write_chrome_trace("/nonexistent-zoro-dir/trace.json"), zoro::IoError);
}

}  // namespace
}  // namespace zoro::testing
