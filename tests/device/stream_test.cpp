// Streams and events, on every backend: ordering, cross-stream waits, event versions, host
// functions, stored errors, overlap (proven by ordering), timing events.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "runtime/base/error.h"
#include "tests/device/device_test_util.h"
#include "tests/support/backends.h"
#include "tests/support/random.h"

namespace zoro::testing {
namespace {

using zoro::device::Event;
using zoro::device::EventOptions;
using zoro::device::MemoryKind;
using zoro::device::Stream;
using zoro::device::StreamOptions;
using zoro::device::StreamPriority;

class StreamTest : public BackendTest {};

TEST_P(StreamTest, HostFunctionsRunInSubmissionOrder) {
  std::vector<int> order;  // written only by the stream's tasks, read after synchronize
  auto stream = device().create_stream();
  constexpr int kTasks = 200;
  for (int i = 0; i < kTasks; ++i) {
    stream->launch_host_fn("append " + std::to_string(i), [&order, i] { order.push_back(i); });
  }
  stream->synchronize();
  std::vector<int> expected(kTasks);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(order, expected);
  EXPECT_TRUE(stream->query());
}

TEST_P(StreamTest, CopiesAreOrderedBetweenHostFunctions) {
  constexpr std::size_t kBytes = 4096;
  auto in = device().allocate(MemoryKind::kPinnedHost, kBytes);
  auto out = device().allocate(MemoryKind::kPinnedHost, kBytes);
  auto dev = device().allocate(MemoryKind::kDevice, kBytes);
  std::vector<int> seen;  // what each round's reader found
  auto stream = device().create_stream();
  for (int round = 1; round <= 20; ++round) {
    // writer -> H2D -> D2H -> reader: the reader sees this round's value only if every step
    // ran after the one submitted before it.
    stream->launch_host_fn("write", [&in, round] { std::memset(in.data(), round, kBytes); });
    stream->copy_async(dev.data(), in.data(), kBytes);
    stream->copy_async(out.data(), dev.data(), kBytes);
    stream->launch_host_fn("read", [&out, &seen] {
      const auto* bytes = out.as<unsigned char>();
      const bool uniform =
          std::all_of(bytes, bytes + kBytes, [&](unsigned char b) { return b == bytes[0]; });
      seen.push_back(uniform ? bytes[0] : -1);
    });
  }
  stream->synchronize();
  std::vector<int> expected(20);
  std::iota(expected.begin(), expected.end(), 1);
  EXPECT_EQ(seen, expected);
}

TEST_P(StreamTest, HostFunctionRunsOnceAfterEarlierWork) {
  auto pinned = device().allocate(MemoryKind::kPinnedHost, 256);
  auto dev = device().allocate(MemoryKind::kDevice, 256);
  std::atomic<int> calls{0};
  unsigned char last_byte = 0;
  auto stream = device().create_stream();
  std::memset(pinned.data(), 0, 256);
  stream->memset_async(dev.data(), 0x5C, 256);
  stream->copy_async(pinned.data(), dev.data(), 256);
  stream->launch_host_fn("callback", [&] {
    last_byte = pinned.as<unsigned char>()[255];
    calls.fetch_add(1);
  });
  stream->synchronize();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(last_byte, 0x5C);
  stream->synchronize();
  EXPECT_EQ(calls.load(), 1);
}

TEST_P(StreamTest, WaitOrdersWorkAcrossStreams) {
  Gate gate;
  int produced = 0;   // written by a's task
  int observed = -1;  // written by b's task, after waiting for a's event
  auto dev = device().allocate(MemoryKind::kDevice, 1024);
  auto pinned = device().allocate(MemoryKind::kPinnedHost, 1024);
  std::memset(pinned.data(), 0, 1024);
  auto a = device().create_stream({"a"});
  auto b = device().create_stream({"b"});
  auto event = device().create_event();

  a->launch_host_fn("gated producer", [&] {
    gate.wait();
    produced = 42;
  });
  a->memset_async(dev.data(), 0x7E, 1024);  // a device-side effect, after the gate too
  event->record(*a);
  b->wait(*event);
  b->launch_host_fn("consumer", [&] { observed = produced; });
  b->copy_async(pinned.data(), dev.data(), 1024);

  // a is held by the gate, so b (which waits for a's event) cannot have finished either.
  EXPECT_FALSE(event->query());
  EXPECT_FALSE(b->query());
  gate.open();
  b->synchronize();
  EXPECT_EQ(observed, 42);
  const auto* bytes = pinned.as<unsigned char>();
  EXPECT_TRUE(std::all_of(bytes, bytes + 1024, [](unsigned char v) { return v == 0x7E; }));
  a->synchronize();
}

TEST_P(StreamTest, WaitCapturesTheVersionCurrentAtTheCall) {
  Gate first;
  Gate second;
  auto a = device().create_stream({"a"});
  auto b = device().create_stream({"b"});
  auto event = device().create_event();
  auto b_done = device().create_event();

  a->launch_host_fn("first", [&] { first.wait(); });
  event->record(*a);  // version 1: after "first"
  EXPECT_EQ(event->version(), 1u);
  b->wait(*event);  // captures version 1
  b_done->record(*b);
  a->launch_host_fn("second", [&] { second.wait(); });
  event->record(*a);  // version 2: after "second", which stays shut below
  EXPECT_EQ(event->version(), 2u);

  bool b_finished = false;
  {
    EventWaiter waiter(*b_done);
    first.open();
    // b waits for version 1 only, so it finishes while version 2 is still held by "second".
    b_finished = waiter.completes_within(kBound);
    EXPECT_FALSE(event->query()) << "version 2 cannot be complete: 'second' is still shut";
    EXPECT_FALSE(second.is_open());
    second.open();
  }
  EXPECT_TRUE(b_finished) << "b's wait, issued before the re-record, waited for version 2";
  a->synchronize();
  b->synchronize();
  EXPECT_TRUE(event->query());
}

TEST_P(StreamTest, EventStateFollowsTheLatestRecord) {
  Gate gate;
  auto slow = device().create_stream({"slow"});
  auto fast = device().create_stream({"fast"});
  auto event = device().create_event();
  EXPECT_TRUE(event->query()) << "an event never recorded is complete";
  event->synchronize();  // returns at once
  EXPECT_EQ(event->version(), 0u);

  slow->launch_host_fn("held", [&] { gate.wait(); });
  event->record(*slow);  // version 1, held
  EXPECT_FALSE(event->query());
  event->record(*fast);  // version 2, on an idle stream
  fast->synchronize();
  // query() asks about the latest version only, even though version 1 is still pending.
  EXPECT_TRUE(event->query());
  event->synchronize();
  gate.open();
  slow->synchronize();
  EXPECT_EQ(event->version(), 2u);
}

TEST_P(StreamTest, WaitOnANeverRecordedEventIsANoOp) {
  auto stream = device().create_stream();
  auto event = device().create_event();
  bool ran = false;
  stream->wait(*event);
  stream->launch_host_fn("after", [&] { ran = true; });
  stream->synchronize();
  EXPECT_TRUE(ran);
}

TEST_P(StreamTest, DestroyingAnEventDoesNotBreakPendingWaits) {
  Gate gate;
  bool ran = false;
  auto a = device().create_stream({"a"});
  auto b = device().create_stream({"b"});
  {
    auto event = device().create_event();
    a->launch_host_fn("held", [&] { gate.wait(); });
    event->record(*a);
    b->wait(*event);
    b->launch_host_fn("after", [&] { ran = true; });
  }
  gate.open();
  b->synchronize();
  a->synchronize();
  EXPECT_TRUE(ran);
}

TEST_P(StreamTest, DestroyingAStreamRunsItsPendingWork) {
  Gate gate;
  std::atomic<bool> ran{false};
  {
    auto stream = device().create_stream();
    stream->launch_host_fn("held", [&] { gate.wait(); });
    stream->launch_host_fn("last", [&] { ran = true; });
    gate.open();
  }  // the destructor waits for both
  EXPECT_TRUE(ran.load());
}

TEST_P(StreamTest, StreamsOverlap) {
  // Overlap by ordering, not clocks: while a's task is held shut, b's copies must complete.
  // They can only do so if b runs independently of a.
  ZORO_TRACE_SEED();
  constexpr std::size_t kBytes = 64 * 1024;
  Gate gate;
  auto rng = make_rng(1);
  const auto data = random_bytes(rng, kBytes);
  auto src = device().allocate(MemoryKind::kPinnedHost, kBytes);
  auto dst = device().allocate(MemoryKind::kPinnedHost, kBytes);
  auto dev = device().allocate(MemoryKind::kDevice, kBytes);
  std::memcpy(src.data(), data.data(), kBytes);
  std::memset(dst.data(), 0, kBytes);
  auto a = device().create_stream({"a"});
  auto b = device().create_stream({"b"});
  auto a_done = device().create_event();
  auto b_done = device().create_event();

  a->launch_host_fn("held", [&] { gate.wait(); });
  a_done->record(*a);
  b->copy_async(dev.data(), src.data(), kBytes);
  b->copy_async(dst.data(), dev.data(), kBytes);
  b_done->record(*b);

  bool b_finished = false;
  {
    EventWaiter waiter(*b_done);
    b_finished = waiter.completes_within(kBound);
    EXPECT_FALSE(a_done->query()) << "a's task is still held";
    EXPECT_FALSE(a->query());
    gate.open();
  }
  EXPECT_TRUE(b_finished) << "b made no progress while a was blocked: streams are serialised";
  a->synchronize();
  b->synchronize();
  EXPECT_EQ(std::memcmp(dst.data(), data.data(), kBytes), 0);
}

TEST_P(StreamTest, TaskErrorIsRethrownOnceByTheNextSynchronize) {
  const std::string message = "kernel failed on purpose " + std::to_string(make_rng(2)());
  bool later_ran = false;
  bool b_ran = false;
  auto a = device().create_stream({"a"});
  auto b = device().create_stream({"b"});
  auto event = device().create_event();

  a->launch_host_fn("failing", [&] { throw zoro::InvalidArgument(message); });
  a->launch_host_fn("later", [&] { later_ran = true; });
  event->record(*a);
  b->wait(*event);
  b->launch_host_fn("waiter", [&] { b_ran = true; });

  // The event recorded after the failure still completes, so b is not stuck, and b has no
  // error of its own.
  EXPECT_NO_THROW(b->synchronize());
  EXPECT_TRUE(b_ran);
  event->synchronize();
  EXPECT_TRUE(event->query());

  const std::string what = thrown_message<zoro::InvalidArgument>([&] { a->synchronize(); });
  EXPECT_CONTAINS(what, message);
  EXPECT_TRUE(later_ran) << "work after the failure must still run";
  EXPECT_NO_THROW(a->synchronize()) << "a stored error is rethrown once";
  // The stream stays usable.
  bool again = false;
  a->launch_host_fn("again", [&] { again = true; });
  EXPECT_NO_THROW(a->synchronize());
  EXPECT_TRUE(again);
}

TEST_P(StreamTest, ErrorKeepsItsCategory) {
  auto stream = device().create_stream();
  stream->launch_host_fn("oom", [] { throw zoro::OutOfMemory("pool exhausted: 7 B requested"); });
  const std::string what = thrown_message<zoro::OutOfMemory>([&] { stream->synchronize(); });
  EXPECT_CONTAINS(what, "pool exhausted: 7 B requested");
}

TEST_P(StreamTest, DeviceSynchronizeDrainsEveryStreamAndRethrows) {
  std::atomic<int> ran{0};
  auto a = device().create_stream({"a"});
  auto b = device().create_stream({"b"});
  for (int i = 0; i < 10; ++i) {
    a->launch_host_fn("a", [&] { ran.fetch_add(1); });
    b->launch_host_fn("b", [&] { ran.fetch_add(1); });
  }
  b->launch_host_fn("failing", [] { throw zoro::InvalidArgument("device-wide failure"); });
  const std::string what = thrown_message<zoro::InvalidArgument>([&] { device().synchronize(); });
  EXPECT_CONTAINS(what, "device-wide failure");
  EXPECT_EQ(ran.load(), 20);
  EXPECT_TRUE(a->query());
  EXPECT_TRUE(b->query());
  EXPECT_NO_THROW(device().synchronize()) << "rethrown once";
  EXPECT_NO_THROW(b->synchronize()) << "the device-wide synchronize consumed it";
}

TEST_P(StreamTest, TimingEvents) {
  auto stream = device().create_stream();
  auto start = device().create_event(EventOptions{.timing = true});
  auto stop = device().create_event(EventOptions{.timing = true});
  auto plain = device().create_event();
  auto never = device().create_event(EventOptions{.timing = true});

  start->record(*stream);
  stream->launch_host_fn("work", [] {});
  stop->record(*stream);
  plain->record(*stream);
  stream->synchronize();

  EXPECT_GE(stop->elapsed_ms_since(*start), 0.f);
  EXPECT_THROW((void)stop->elapsed_ms_since(*plain), zoro::InvalidArgument);
  EXPECT_THROW((void)plain->elapsed_ms_since(*start), zoro::InvalidArgument);
  EXPECT_THROW((void)stop->elapsed_ms_since(*never), zoro::InvalidArgument);
  EXPECT_THROW((void)never->elapsed_ms_since(*start), zoro::InvalidArgument);

  // Recorded but not complete yet.
  Gate gate;
  auto held = device().create_stream({"held"});
  auto pending = device().create_event(EventOptions{.timing = true});
  held->launch_host_fn("held", [&] { gate.wait(); });
  pending->record(*held);
  EXPECT_THROW((void)pending->elapsed_ms_since(*start), zoro::InvalidArgument);
  gate.open();
  held->synchronize();
  EXPECT_GE(pending->elapsed_ms_since(*start), 0.f);
}

TEST_P(StreamTest, NamesAndPriorities) {
  auto named = device().create_stream({"compute", StreamPriority::kHigh});
  EXPECT_EQ(named->name(), "compute");
  EXPECT_EQ(named->priority(), StreamPriority::kHigh);
  auto first = device().create_stream();
  auto second = device().create_stream();
  EXPECT_EQ(first->name().rfind("stream", 0), 0u) << first->name();
  EXPECT_NE(first->name(), second->name());
  EXPECT_EQ(first->priority(), StreamPriority::kNormal);
  if (is_host()) {
    EXPECT_EQ(first->native_handle(), nullptr);
  } else {
    EXPECT_NE(first->native_handle(), nullptr);
  }
}

TEST_P(StreamTest, EventsAndStreamsOfAnotherDeviceAreRefused) {
  auto other = zoro::device::open_device("host:mem=1MiB");
  auto other_stream = other->create_stream({"other"});
  auto other_event = other->create_event();
  auto stream = device().create_stream();
  auto event = device().create_event(EventOptions{.timing = true});
  auto other_timing = other->create_event(EventOptions{.timing = true});

  EXPECT_THROW(other_event->record(*stream), zoro::InvalidArgument);
  EXPECT_THROW(event->record(*other_stream), zoro::InvalidArgument);
  EXPECT_THROW(stream->wait(*other_event), zoro::InvalidArgument);
  EXPECT_THROW(other_stream->wait(*event), zoro::InvalidArgument);
  event->record(*stream);
  other_timing->record(*other_stream);
  stream->synchronize();
  other_stream->synchronize();
  EXPECT_THROW((void)event->elapsed_ms_since(*other_timing), zoro::InvalidArgument);
}

TEST_P(StreamTest, ConcurrentSubmittersAndEventUsers) {
  // Many host threads share one stream and one event: every task runs exactly once, and
  // record / query / wait may race freely (ThreadSanitizer checks the rest).
  constexpr int kThreads = 4;
  constexpr int kTasksEach = 200;
  std::atomic<int> ran{0};
  auto shared = device().create_stream({"shared"});
  auto event = device().create_event();
  std::vector<std::unique_ptr<Stream>> own;
  for (int t = 0; t < kThreads; ++t) own.push_back(device().create_stream());
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kTasksEach; ++i) {
          shared->launch_host_fn("count", [&] { ran.fetch_add(1, std::memory_order_relaxed); });
          if (i % 10 == 0) {
            event->record(*shared);
            own[t]->wait(*event);
            own[t]->launch_host_fn("own", [&] { ran.fetch_add(1, std::memory_order_relaxed); });
            (void)event->query();
          }
        }
        own[t]->synchronize();
      });
    }
    for (auto& thread : threads) thread.join();
  }
  device().synchronize();
  EXPECT_EQ(ran.load(), kThreads * kTasksEach + kThreads * (kTasksEach / 10));
  EXPECT_EQ(event->version(), static_cast<std::uint64_t>(kThreads * (kTasksEach / 10)));
  EXPECT_TRUE(event->query());
}

INSTANTIATE_TEST_SUITE_P(AllBackends, StreamTest, all_backend_specs(), backend_spec_name);

}  // namespace
}  // namespace zoro::testing
