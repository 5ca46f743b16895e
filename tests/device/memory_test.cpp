// Memory on every backend: copies device<->pinned<->device on random data, memset, the
// capacity cap and its statistics, kinds of addresses, pageable memory refused by async calls.
#include <cstring>
#include <vector>

#include "runtime/base/error.h"
#include "tests/device/device_test_util.h"
#include "tests/support/backends.h"
#include "tests/support/random.h"

namespace zoro::testing {
namespace {

using zoro::device::Buffer;
using zoro::device::MemoryKind;
using zoro::device::MemoryStats;

class MemoryTest : public BackendTest {};

constexpr unsigned char kSentinel = 0xA5;

TEST_P(MemoryTest, CopiesRoundTripThroughDevice) {
  ZORO_TRACE_SEED();
  auto rng = make_rng(10);
  auto stream = device().create_stream();
  // Odd sizes and offsets too: nothing may assume whole, aligned buffers.
  for (std::size_t bytes :
       {std::size_t{1}, std::size_t{255}, std::size_t{4096}, std::size_t{(1u << 20) + 3}}) {
    SCOPED_TRACE(::testing::Message() << bytes << " B");
    constexpr std::size_t kOffset = 7;
    const auto data = random_bytes(rng, bytes);
    auto src = device().allocate(MemoryKind::kPinnedHost, bytes);
    auto dev_a = device().allocate(MemoryKind::kDevice, bytes + kOffset);
    auto dev_b = device().allocate(MemoryKind::kDevice, bytes);
    auto dst = device().allocate(MemoryKind::kPinnedHost, bytes + 2 * kOffset);
    std::memcpy(src.data(), data.data(), bytes);
    std::memset(dst.data(), kSentinel, dst.bytes());

    auto* a = dev_a.as<unsigned char>() + kOffset;
    auto* out = dst.as<unsigned char>() + kOffset;
    stream->copy_async(a, src.data(), bytes);                    // pinned -> device
    stream->copy_async_labelled("d2d", dev_b.data(), a, bytes);  // device -> device
    stream->copy_async(out, dev_b.data(), bytes);                // device -> pinned
    stream->synchronize();

    EXPECT_EQ(std::memcmp(out, data.data(), bytes), 0);
    const auto* all = dst.as<unsigned char>();
    for (std::size_t i = 0; i < kOffset; ++i) {
      EXPECT_EQ(all[i], kSentinel) << "written before the destination, at " << i;
      EXPECT_EQ(all[kOffset + bytes + i], kSentinel) << "written past the destination, at " << i;
    }
  }
}

TEST_P(MemoryTest, PinnedToPinnedAndBlockingCopies) {
  ZORO_TRACE_SEED();
  auto rng = make_rng(11);
  constexpr std::size_t kBytes = 10000;
  const auto data = random_bytes(rng, kBytes);
  auto pinned_a = device().allocate(MemoryKind::kPinnedHost, kBytes);
  auto pinned_b = device().allocate(MemoryKind::kPinnedHost, kBytes);
  auto dev = device().allocate(MemoryKind::kDevice, kBytes);
  auto stream = device().create_stream();

  // The blocking copy takes any kinds, pageable included.
  device().copy(dev.data(), data.data(), kBytes);  // pageable -> device
  std::vector<std::uint8_t> back(kBytes, 0);
  device().copy(back.data(), dev.data(), kBytes);  // device -> pageable
  EXPECT_EQ(back, data);

  std::memcpy(pinned_a.data(), data.data(), kBytes);
  stream->copy_async(pinned_b.data(), pinned_a.data(), kBytes);
  stream->synchronize();
  EXPECT_EQ(std::memcmp(pinned_b.data(), data.data(), kBytes), 0);
}

TEST_P(MemoryTest, MemsetSetsOnlyItsRange) {
  constexpr std::size_t kBytes = 4096;
  constexpr std::size_t kBegin = 100;
  constexpr std::size_t kLength = 1000;
  auto dev = device().allocate(MemoryKind::kDevice, kBytes);
  auto pinned = device().allocate(MemoryKind::kPinnedHost, kBytes);
  auto stream = device().create_stream();
  stream->memset_async(dev.data(), 0, kBytes);
  // Only the low byte of the value counts, as with memset and cudaMemsetAsync.
  stream->memset_async(dev.as<unsigned char>() + kBegin, 0x1AB, kLength);
  // The copy must land after this memset (stream order), overwriting every byte of it.
  stream->memset_async(pinned.data(), kSentinel, kBytes);
  stream->copy_async(pinned.data(), dev.data(), kBytes);
  stream->synchronize();
  const auto* bytes = pinned.as<unsigned char>();
  for (std::size_t i = 0; i < kBytes; ++i) {
    const unsigned char expected = (i >= kBegin && i < kBegin + kLength) ? 0xAB : 0;
    ASSERT_EQ(bytes[i], expected) << "at byte " << i;
  }
}

TEST_P(MemoryTest, MemsetOnPinnedMemory) {
  constexpr std::size_t kBytes = 1000;
  auto pinned = device().allocate(MemoryKind::kPinnedHost, kBytes);
  std::memset(pinned.data(), 0, kBytes);
  auto stream = device().create_stream();
  stream->memset_async(pinned.as<unsigned char>() + 10, 0x42, kBytes - 20);
  stream->synchronize();
  const auto* bytes = pinned.as<unsigned char>();
  for (std::size_t i = 0; i < kBytes; ++i) {
    ASSERT_EQ(bytes[i], (i >= 10 && i < kBytes - 10) ? 0x42 : 0) << "at byte " << i;
  }
}

TEST_P(MemoryTest, AllocationsAreAlignedAndClassified) {
  for (MemoryKind kind :
       {MemoryKind::kDevice, MemoryKind::kPinnedHost, MemoryKind::kPageableHost}) {
    SCOPED_TRACE(zoro::device::to_string(kind));
    auto buffer = device().allocate(kind, 1000);
    ASSERT_TRUE(buffer);
    EXPECT_EQ(buffer.bytes(), 1000u);
    EXPECT_EQ(buffer.kind(), kind);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer.data()) % 256, 0u);
    EXPECT_EQ(device().memory_kind_of(buffer.data()), kind);
    EXPECT_EQ(device().memory_kind_of(buffer.as<char>() + 500, 500), kind);
  }
  auto dev = device().allocate(MemoryKind::kDevice, 4096);
  int on_stack = 0;
  EXPECT_EQ(device().memory_kind_of(&on_stack, sizeof on_stack), MemoryKind::kPageableHost);
  const std::string what = thrown_message<zoro::InvalidArgument>(
      [&] { (void)device().memory_kind_of(dev.as<char>() + 4000, 200); });
  EXPECT_CONTAINS(what, "runs past the end");
  EXPECT_THROW(device().allocate(MemoryKind::kDevice, 0), zoro::InvalidArgument);
}

TEST_P(MemoryTest, CapacityIsEnforcedAndCounted) {
  const MemoryStats base = device().memory_stats(MemoryKind::kDevice);
  EXPECT_EQ(base.capacity_bytes, kTestDeviceCapacity);
  EXPECT_EQ(device().info().memory_capacity_bytes, kTestDeviceCapacity);

  Buffer small = device().allocate(MemoryKind::kDevice, 1000);
  Buffer large = device().allocate(MemoryKind::kDevice, 3 * kMiB);
  MemoryStats stats = device().memory_stats(MemoryKind::kDevice);
  EXPECT_EQ(stats.used_bytes, base.used_bytes + 1000 + 3 * kMiB);
  EXPECT_EQ(stats.allocations, base.allocations + 2);
  EXPECT_GE(stats.peak_bytes, stats.used_bytes);

  // One byte more than is free: refused, naming the requested and the free bytes.
  const std::size_t free_bytes = stats.capacity_bytes - stats.used_bytes;
  const std::size_t requested = free_bytes + 1;
  const std::string what = thrown_message<zoro::OutOfMemory>(
      [&] { (void)device().allocate(MemoryKind::kDevice, requested); });
  EXPECT_CONTAINS(what, std::to_string(requested));
  EXPECT_CONTAINS(what, std::to_string(free_bytes));
  const MemoryStats after_refusal = device().memory_stats(MemoryKind::kDevice);
  EXPECT_EQ(after_refusal.used_bytes, stats.used_bytes) << "a refused allocation leaks nothing";
  EXPECT_EQ(after_refusal.allocations, stats.allocations);

  const std::size_t peak = stats.used_bytes;
  large.reset();
  stats = device().memory_stats(MemoryKind::kDevice);
  EXPECT_EQ(stats.used_bytes, base.used_bytes + 1000);
  EXPECT_EQ(stats.allocations, base.allocations + 1);
  EXPECT_EQ(stats.peak_bytes, peak) << "freeing keeps the high-water mark";
  device().reset_peak(MemoryKind::kDevice);
  EXPECT_EQ(device().memory_stats(MemoryKind::kDevice).peak_bytes, stats.used_bytes);

  // Filling the cap exactly is allowed; then one byte more is not.
  const std::size_t rest = stats.capacity_bytes - stats.used_bytes;
  {
    Buffer fill = device().allocate(MemoryKind::kDevice, rest);
    EXPECT_EQ(device().memory_stats(MemoryKind::kDevice).used_bytes, stats.capacity_bytes);
    EXPECT_THROW((void)device().allocate(MemoryKind::kDevice, 1), zoro::OutOfMemory);
  }
  small.reset();
  EXPECT_EQ(device().memory_stats(MemoryKind::kDevice).used_bytes, base.used_bytes);
  EXPECT_EQ(device().memory_stats(MemoryKind::kDevice).allocations, base.allocations);
}

TEST_P(MemoryTest, HostKindsAreCountedSeparately) {
  for (MemoryKind kind : {MemoryKind::kPinnedHost, MemoryKind::kPageableHost}) {
    SCOPED_TRACE(zoro::device::to_string(kind));
    const MemoryStats device_before = device().memory_stats(MemoryKind::kDevice);
    const MemoryStats before = device().memory_stats(kind);
    EXPECT_GT(before.capacity_bytes, 0u);
    {
      Buffer buffer = device().allocate(kind, kMiB);
      const MemoryStats during = device().memory_stats(kind);
      EXPECT_EQ(during.used_bytes, before.used_bytes + kMiB);
      EXPECT_EQ(during.allocations, before.allocations + 1);
      EXPECT_GE(during.peak_bytes, during.used_bytes);
      EXPECT_EQ(device().memory_stats(MemoryKind::kDevice).used_bytes, device_before.used_bytes);
    }
    EXPECT_EQ(device().memory_stats(kind).used_bytes, before.used_bytes);
  }
}

TEST_P(MemoryTest, BufferMovesTransferOwnership) {
  const MemoryStats base = device().memory_stats(MemoryKind::kDevice);
  Buffer a = device().allocate(MemoryKind::kDevice, 512);
  void* p = a.data();
  Buffer b = std::move(a);
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_EQ(b.data(), p);
  Buffer c;
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(device().memory_stats(MemoryKind::kDevice).allocations, base.allocations + 1);
  c.reset();
  EXPECT_FALSE(c);
  EXPECT_EQ(device().memory_stats(MemoryKind::kDevice).allocations, base.allocations);
}

TEST_P(MemoryTest, AsyncCallsRefusePageableMemory) {
  constexpr std::size_t kBytes = 4096;
  std::vector<std::uint8_t> pageable(kBytes, 1);
  auto dev = device().allocate(MemoryKind::kDevice, kBytes);
  auto heap = device().allocate(MemoryKind::kPageableHost, kBytes);
  auto stream = device().create_stream();
  const std::string what = thrown_message<zoro::InvalidArgument>(
      [&] { stream->copy_async(dev.data(), pageable.data(), kBytes); });
  if (is_host()) {
    EXPECT_CONTAINS(what, "pageable");
  }
  EXPECT_THROW(stream->copy_async(pageable.data(), dev.data(), kBytes), zoro::InvalidArgument);
  EXPECT_THROW(stream->copy_async(heap.data(), dev.data(), kBytes), zoro::InvalidArgument)
      << "pageable memory from Device::allocate is still pageable";
  EXPECT_THROW(stream->memset_async(pageable.data(), 0, kBytes), zoro::InvalidArgument);
  // Nothing was enqueued by the refused calls.
  stream->synchronize();
  EXPECT_EQ(pageable[0], 1);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, MemoryTest, all_backend_specs(), backend_spec_name);

}  // namespace
}  // namespace zoro::testing
