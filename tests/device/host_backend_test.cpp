// What only the host backend promises: its extra strictness (overlapping and foreign ranges,
// synchronising from inside a task), where a stored error came from, its task trace, and
// host functions of different streams running at the same time (CUDA may serialise those).
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/device/trace.h"
#include "tests/device/device_test_util.h"
#include "tests/support/backends.h"

namespace zoro::testing {
namespace {

using zoro::device::Device;
using zoro::device::MemoryKind;
using zoro::device::open_device;
using zoro::device::TraceRecord;

class HostBackendTest : public ::testing::Test {
 protected:
  std::unique_ptr<Device> device_ = open_device("host:mem=64MiB");
};

TEST_F(HostBackendTest, OverlappingAndStraddlingRangesAreRefused) {
  auto dev = device_->allocate(MemoryKind::kDevice, 4096);
  auto stream = device_->create_stream();
  auto* p = dev.as<char>();
  std::string what =
      thrown_message<zoro::InvalidArgument>([&] { stream->copy_async(p + 100, p, 200); });
  EXPECT_CONTAINS(what, "overlap");
  EXPECT_THROW(device_->copy(p, p + 1, 2), zoro::InvalidArgument);
  what = thrown_message<zoro::InvalidArgument>([&] { stream->copy_async(p, p + 4000, 200); });
  EXPECT_CONTAINS(what, "runs past the end");
  EXPECT_THROW(stream->memset_async(p + 4000, 0, 200), zoro::InvalidArgument);
  EXPECT_THROW(stream->copy_async(nullptr, p, 1), zoro::InvalidArgument);
  // Adjacent ranges do not overlap.
  stream->copy_async(p + 200, p, 200);
  stream->copy_async(p + 200, p, 0);  // empty: nothing to do, nothing checked
  stream->synchronize();
}

TEST_F(HostBackendTest, MemoryOfAnotherDeviceIsRefused) {
  auto other = open_device("host:mem=1MiB");
  auto foreign = other->allocate(MemoryKind::kDevice, 256);
  auto mine = device_->allocate(MemoryKind::kDevice, 256);
  auto stream = device_->create_stream();
  EXPECT_EQ(device_->memory_kind_of(foreign.data(), 256), MemoryKind::kPageableHost);
  EXPECT_THROW(stream->copy_async(mine.data(), foreign.data(), 256), zoro::InvalidArgument);
}

TEST_F(HostBackendTest, OutOfMemoryNamesTheDeviceAndCapacity) {
  const std::string what = thrown_message<zoro::OutOfMemory>(
      [&] { (void)device_->allocate(MemoryKind::kDevice, 65 * kMiB); });
  EXPECT_CONTAINS(what, "host device");
  EXPECT_CONTAINS(what, "64.0 MiB capacity");
  EXPECT_CONTAINS(what, std::to_string(65 * kMiB) + " B");
  EXPECT_CONTAINS(what, std::to_string(64 * kMiB) + " B) free");
}

TEST_F(HostBackendTest, SynchronisingInsideATaskIsAStoredError) {
  auto a = device_->create_stream({"a"});
  auto b = device_->create_stream({"b"});
  auto event = device_->create_event();
  a->launch_host_fn("syncs itself", [&] { a->synchronize(); });
  a->launch_host_fn("syncs the device", [&] { device_->synchronize(); });
  b->launch_host_fn("syncs an event", [&] { event->synchronize(); });
  std::string what = thrown_message<zoro::InvalidArgument>([&] { a->synchronize(); });
  EXPECT_CONTAINS(what, "Stream::synchronize called from a task of stream 'a'");
  what = thrown_message<zoro::InvalidArgument>([&] { b->synchronize(); });
  EXPECT_CONTAINS(what, "Event::synchronize");
}

TEST_F(HostBackendTest, StoredErrorNamesTaskAndStreamAndKeepsTheFirst) {
  auto stream = device_->create_stream({"compute"});
  stream->launch_host_fn("layer 3 forward", [] { throw std::runtime_error("NaN in logits"); });
  stream->launch_host_fn("layer 4 forward", [] { throw std::runtime_error("second failure"); });
  const std::string what = thrown_message<zoro::Error>([&] { stream->synchronize(); });
  EXPECT_CONTAINS(what, "NaN in logits");
  EXPECT_CONTAINS(what, "'layer 3 forward'");
  EXPECT_CONTAINS(what, "'compute'");
  EXPECT_EQ(what.find("second failure"), std::string::npos);
  EXPECT_NO_THROW(stream->synchronize());
}

TEST_F(HostBackendTest, StreamWithAnUnreportedErrorIsDestroyedQuietly) {
  auto stream = device_->create_stream({"doomed"});
  stream->launch_host_fn("fails", [] { throw zoro::InvalidArgument("never looked at"); });
  EXPECT_NO_THROW(stream.reset());  // logs a warning; never throws from the destructor
}

TEST_F(HostBackendTest, EmptyHostFunctionIsRefused) {
  auto stream = device_->create_stream();
  EXPECT_THROW(stream->launch_host_fn("empty", {}), zoro::InvalidArgument);
}

TEST_F(HostBackendTest, HostFunctionsOfTwoStreamsRunConcurrently) {
  // Each task waits (bounded) for the other to have started: both can only finish if the two
  // streams run at the same time.
  Gate a_started;
  Gate b_started;
  std::atomic<bool> a_saw_b{false};
  std::atomic<bool> b_saw_a{false};
  device_->trace()->set_enabled(true);
  auto a = device_->create_stream({"a"});
  auto b = device_->create_stream({"b"});
  a->launch_host_fn("rendezvous a", [&] {
    a_started.open();
    a_saw_b = b_started.wait_for(kBound);
  });
  b->launch_host_fn("rendezvous b", [&] {
    b_started.open();
    b_saw_a = a_started.wait_for(kBound);
  });
  a->synchronize();
  b->synchronize();
  EXPECT_TRUE(a_saw_b.load());
  EXPECT_TRUE(b_saw_a.load());
  // The trace agrees: each task began before the other ended.
  const auto records = device_->trace()->snapshot();
  const TraceRecord& ra = zoro::device::find_record(records, "a", "rendezvous a");
  const TraceRecord& rb = zoro::device::find_record(records, "b", "rendezvous b");
  EXPECT_LT(ra.seq_begin, rb.seq_end);
  EXPECT_LT(rb.seq_begin, ra.seq_end);
}

TEST_F(HostBackendTest, TraceRecordsEveryTaskInOrder) {
  auto device = open_device("host:mem=16MiB:trace");
  auto dev = device->allocate(MemoryKind::kDevice, 4096);
  auto pinned = device->allocate(MemoryKind::kPinnedHost, 4096);
  auto compute = device->create_stream({"compute"});
  auto d2h = device->create_stream({"d2h"});
  auto ready = device->create_event();
  compute->launch_host_fn("kernel", [] {});
  compute->memset_async(dev.data(), 1, 4096);
  ready->record(*compute);
  d2h->wait(*ready);
  d2h->copy_async(pinned.data(), dev.data(), 4096);
  d2h->launch_host_fn("consume", [] {});
  d2h->copy_async_labelled("d2h bucket 0", pinned.data(), dev.data(), 2048);
  device->synchronize();

  const auto records = device->trace()->snapshot();
  ASSERT_EQ(records.size(), 5u) << "waits and records are not traced; tasks are";
  const TraceRecord& kernel = zoro::device::find_record(records, "compute", "kernel");
  const TraceRecord& memset = zoro::device::find_record(records, "compute", "memset 4096 B");
  const TraceRecord& copy = zoro::device::find_record(records, "d2h", "copy 4096 B");
  const TraceRecord& consume = zoro::device::find_record(records, "d2h", "consume");
  for (const TraceRecord* r : {&kernel, &memset, &copy, &consume}) {
    EXPECT_LT(r->seq_begin, r->seq_end) << r->label;
    EXPECT_LE(r->begin_ns, r->end_ns) << r->label;
  }
  // Stream order, and the wait's order across streams, as integers.
  EXPECT_LT(kernel.seq_end, memset.seq_begin);
  EXPECT_LT(memset.seq_end, copy.seq_begin);
  EXPECT_LT(copy.seq_end, consume.seq_begin);
  const TraceRecord& labelled = zoro::device::find_record(records, "d2h", "d2h bucket 0");
  EXPECT_LT(consume.seq_end, labelled.seq_begin);
}

TEST_F(HostBackendTest, TraceCanBeTurnedOnLater) {
  auto stream = device_->create_stream({"s"});
  stream->launch_host_fn("untraced", [] {});
  stream->synchronize();
  EXPECT_TRUE(device_->trace()->snapshot().empty());
  device_->trace()->set_enabled(true);
  stream->launch_host_fn("traced", [] {});
  stream->launch_host_fn("traced even when failing", [] { throw std::runtime_error("x"); });
  EXPECT_THROW(stream->synchronize(), zoro::Error);
  const auto records = device_->trace()->snapshot();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].label, "traced");
  EXPECT_EQ(records[1].label, "traced even when failing");
  EXPECT_EQ(records[0].track, "s");
}

TEST_F(HostBackendTest, DeviceSynchronizeRacesWithStreamCreationAndDestruction) {
  // Streams come and go on other threads while this one drains the device: no use of a dead
  // stream, no lost error (ThreadSanitizer and AddressSanitizer builds check the rest).
  constexpr int kStreamsEach = 100;
  std::atomic<int> ran{0};
  std::atomic<int> finished{0};
  std::vector<std::thread> churners;
  for (int t = 0; t < 2; ++t) {
    churners.emplace_back([&] {
      for (int i = 0; i < kStreamsEach; ++i) {
        auto stream = device_->create_stream();
        stream->launch_host_fn("work", [&] { ran.fetch_add(1); });
        if (i % 2 == 0) stream->synchronize();
      }  // the others drain in their destructor
      finished.fetch_add(1);
    });
  }
  int drains = 0;
  while (finished.load() < 2 || drains < 10) {
    device_->synchronize();
    ++drains;
  }
  for (auto& thread : churners) thread.join();
  device_->synchronize();
  EXPECT_EQ(ran.load(), 2 * kStreamsEach);
}

}  // namespace
}  // namespace zoro::testing
