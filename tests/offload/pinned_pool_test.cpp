// PinnedPool on every backend (tests/support/backends.h): blocks are pinned, aligned and
// writable; freed extents coalesce and are reused from the same chunk; the budget is checked
// before pinning, with the numbers in the error; big requests get dedicated allocations;
// concurrent use is race-free (run this binary under ThreadSanitizer too).
#include "offload/pinned_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/units.h"
#include "tests/support/backends.h"
#include "tests/support/random.h"

namespace zoro::offload {
namespace {

using device::MemoryKind;

bool is_aligned(const void* p, std::size_t alignment) {
  return reinterpret_cast<std::uintptr_t>(p) % alignment == 0;
}

// The message of the exception of type E that `fn` throws (a failed expectation otherwise).
template <class E, class Fn>
std::string message_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw the wrong type: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

// One thread of ConcurrentAllocateAndFree: allocate, write, check and free at random.
void run_worker(PinnedPool& pool, std::atomic<int>& failures, int t) {
  constexpr int kIterations = 300;
  auto rng = testing::make_rng(100 + static_cast<std::uint64_t>(t));
  std::vector<PinnedBlock> held;
  for (int i = 0; i < kIterations; ++i) {
    // Mostly small blocks, now and then one above chunk_bytes (dedicated).
    const std::size_t bytes =
        (rng() % 16 == 0) ? 600 * kKiB + rng() % 4096 : 1 + rng() % (64 * kKiB);
    const std::size_t alignment = std::size_t{1} << (rng() % 13);
    PinnedBlock block = pool.allocate(bytes, alignment);
    const auto tag = static_cast<unsigned char>(t * 31 + i);
    if (!is_aligned(block.data(), alignment)) failures.fetch_add(1);
    std::memset(block.data(), tag, block.bytes());
    held.push_back(std::move(block));
    if (held.size() > 6 || rng() % 3 == 0) {
      const std::size_t victim = rng() % held.size();
      const auto* p = held[victim].as<unsigned char>();
      const unsigned char expect = p[0];
      for (std::size_t j = 0; j < held[victim].bytes(); ++j) {
        if (p[j] != expect) {
          failures.fetch_add(1);
          break;
        }
      }
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(victim));
    }
    if (i % 50 == 0) (void)pool.stats();
  }
}

class PinnedPoolTest : public testing::BackendTest {};

TEST_P(PinnedPoolTest, BlocksArePinnedAlignedAndWritable) {
  PinnedPool pool(device(), {.budget_bytes = 16 * kMiB, .chunk_bytes = 1 * kMiB});
  EXPECT_EQ(pool.numa_node(), device().info().numa_node);
  std::vector<PinnedBlock> blocks;
  const std::size_t sizes[] = {1, 63, 64, 100, 4096, 70000, 1 * kMiB};
  const std::size_t alignments[] = {1, 8, 64, 256, 4096};
  for (std::size_t bytes : sizes) {
    for (std::size_t alignment : alignments) {
      SCOPED_TRACE(::testing::Message() << bytes << " B aligned to " << alignment);
      PinnedBlock block = pool.allocate(bytes, alignment);
      ASSERT_TRUE(block);
      EXPECT_EQ(block.bytes(), bytes);
      EXPECT_TRUE(is_aligned(block.data(), alignment));
      EXPECT_TRUE(is_aligned(block.data(), PinnedPool::kDefaultAlignment));
      EXPECT_EQ(device().memory_kind_of(block.data(), bytes), MemoryKind::kPinnedHost);
      const auto tag = static_cast<unsigned char>(blocks.size() * 7 + 1);
      std::memset(block.data(), tag, bytes);
      blocks.push_back(std::move(block));
    }
  }
  // No block overwrote another: each still holds its own tag.
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const auto tag = static_cast<unsigned char>(i * 7 + 1);
    const auto* p = blocks[i].as<unsigned char>();
    for (std::size_t j = 0; j < blocks[i].bytes(); ++j) {
      ASSERT_EQ(p[j], tag) << "block " << i << " byte " << j;
    }
  }
  const PinnedPoolStats stats = pool.stats();
  EXPECT_EQ(stats.blocks, blocks.size());
  EXPECT_LE(stats.reserved_bytes, stats.budget_bytes);
  blocks.clear();
  EXPECT_EQ(pool.stats().in_use_bytes, 0u);
  EXPECT_EQ(pool.stats().blocks, 0u);
}

TEST_P(PinnedPoolTest, AsyncCopiesAcceptBlocks) {
  // The point of pinned blocks: the device takes them in copy_async (pageable is refused).
  PinnedPool pool(device(), {.budget_bytes = 4 * kMiB, .chunk_bytes = 1 * kMiB});
  constexpr std::size_t kBytes = 64 * kKiB;
  PinnedBlock src = pool.allocate(kBytes);
  PinnedBlock dst = pool.allocate(kBytes);
  auto rng = testing::make_rng(1);
  ZORO_TRACE_SEED();
  const auto data = testing::random_bytes(rng, kBytes);
  std::memcpy(src.data(), data.data(), kBytes);
  device::Buffer staging = device().allocate(MemoryKind::kDevice, kBytes);
  auto stream = device().create_stream();
  stream->copy_async(staging.data(), src.data(), kBytes);
  stream->copy_async(dst.data(), staging.data(), kBytes);
  stream->synchronize();
  EXPECT_EQ(std::memcmp(dst.data(), data.data(), kBytes), 0);
}

TEST_P(PinnedPoolTest, FreedNeighboursCoalesceAndAreReusedFromTheSameChunk) {
  PinnedPool pool(device(), {.budget_bytes = 4 * kMiB, .chunk_bytes = 1 * kMiB});
  constexpr std::size_t kQuarter = 256 * kKiB;
  PinnedBlock a = pool.allocate(kQuarter);
  PinnedBlock b = pool.allocate(kQuarter);
  PinnedBlock c = pool.allocate(kQuarter);
  ASSERT_EQ(pool.stats().chunks, 1u);
  // First fit in one chunk: a, b, c are contiguous.
  EXPECT_EQ(b.as<std::byte>(), a.as<std::byte>() + kQuarter);
  EXPECT_EQ(c.as<std::byte>(), b.as<std::byte>() + kQuarter);
  void* const start = a.data();

  b.reset();
  a.reset();  // a merges with b's free extent
  PinnedBlock ab = pool.allocate(2 * kQuarter);
  EXPECT_EQ(ab.data(), start) << "the two freed neighbours were not merged";
  EXPECT_EQ(pool.stats().chunks, 1u);
  EXPECT_EQ(pool.stats().reserved_bytes, 1 * kMiB);

  // Free in the other order, plus the tail: the whole chunk is one extent again.
  c.reset();
  ab.reset();
  PinnedBlock whole = pool.allocate(1 * kMiB);
  EXPECT_EQ(whole.data(), start);
  EXPECT_FALSE(whole.dedicated());
  EXPECT_EQ(pool.stats().chunks, 1u);
}

TEST_P(PinnedPoolTest, MiddleFreeMergesWithBothNeighbours) {
  PinnedPool pool(device(), {.budget_bytes = 1 * kMiB, .chunk_bytes = 1 * kMiB});
  constexpr std::size_t kBlock = 128 * kKiB;
  std::vector<PinnedBlock> blocks;
  for (int i = 0; i < 8; ++i) blocks.push_back(pool.allocate(kBlock));
  void* const second = blocks[1].data();
  blocks[1].reset();
  blocks[3].reset();
  blocks[2].reset();  // joins [1] and [3] into one extent of 3 blocks
  PinnedBlock three = pool.allocate(3 * kBlock);
  EXPECT_EQ(three.data(), second);
  EXPECT_EQ(pool.stats().reserved_bytes, 1 * kMiB);  // no second chunk was needed
}

TEST_P(PinnedPoolTest, BudgetIsValidatedAgainstPhysicalMemory) {
  const std::size_t ram = physical_memory_bytes();
  std::string msg =
      message_of<InvalidArgument>([&] { PinnedPool pool(device(), {.budget_bytes = 0}); });
  EXPECT_NE(msg.find("budget_bytes=0"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(ram)), std::string::npos) << msg;

  msg = message_of<InvalidArgument>([&] { PinnedPool pool(device(), {.budget_bytes = ram + 1}); });
  EXPECT_NE(msg.find(std::to_string(ram + 1)), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(ram)), std::string::npos) << msg;

  EXPECT_THROW(PinnedPool(device(), {.budget_bytes = kMiB, .chunk_bytes = 0}), InvalidArgument);
}

TEST_P(PinnedPoolTest, ExceedingTheBudgetNamesTheNumbersAndPinsNothing) {
  constexpr std::size_t kBudget = 2 * kMiB;
  PinnedPool pool(device(), {.budget_bytes = kBudget, .chunk_bytes = 1 * kMiB});
  PinnedBlock a = pool.allocate(1 * kMiB);
  PinnedBlock b = pool.allocate(1 * kMiB - 4096);
  const std::size_t pinned_before = device().memory_stats(MemoryKind::kPinnedHost).used_bytes;
  const std::string msg = message_of<OutOfMemory>([&] { (void)pool.allocate(8192); });
  EXPECT_NE(msg.find("8192"), std::string::npos) << msg;                           // requested
  EXPECT_NE(msg.find(std::to_string(2 * kMiB - 4096)), std::string::npos) << msg;  // in use
  EXPECT_NE(msg.find(std::to_string(kBudget)), std::string::npos) << msg;          // budget
  EXPECT_EQ(device().memory_stats(MemoryKind::kPinnedHost).used_bytes, pinned_before);
  EXPECT_EQ(pool.stats().reserved_bytes, kBudget);
  // What is left of the budget is still usable.
  PinnedBlock c = pool.allocate(4096);
  EXPECT_TRUE(c);
  // More than the whole budget, at once.
  EXPECT_THROW((void)pool.allocate(kBudget + 1), OutOfMemory);
}

TEST_P(PinnedPoolTest, TheLastChunkIsCutToTheBudget) {
  PinnedPool pool(device(), {.budget_bytes = 1536 * kKiB, .chunk_bytes = 1 * kMiB});
  PinnedBlock a = pool.allocate(1 * kMiB);
  PinnedBlock b = pool.allocate(512 * kKiB);
  PinnedPoolStats stats = pool.stats();
  EXPECT_EQ(stats.chunks, 2u);
  EXPECT_EQ(stats.reserved_bytes, 1536 * kKiB);
  EXPECT_THROW((void)pool.allocate(64), OutOfMemory);
}

TEST_P(PinnedPoolTest, BigRequestsGetDedicatedAllocations) {
  PinnedPool pool(device(), {.budget_bytes = 16 * kMiB, .chunk_bytes = 1 * kMiB});
  PinnedBlock small = pool.allocate(1000);
  {
    PinnedBlock big = pool.allocate(3 * kMiB + 5, 4096);
    EXPECT_TRUE(big.dedicated());
    EXPECT_FALSE(small.dedicated());
    EXPECT_TRUE(is_aligned(big.data(), 4096));
    EXPECT_EQ(device().memory_kind_of(big.data(), big.bytes()), MemoryKind::kPinnedHost);
    std::memset(big.data(), 0x5a, big.bytes());
    const PinnedPoolStats stats = pool.stats();
    EXPECT_EQ(stats.dedicated, 1u);
    EXPECT_EQ(stats.chunks, 1u);
    // The dedicated allocation may carry padding up to the alignment.
    EXPECT_GE(stats.reserved_bytes, 1 * kMiB + 3 * kMiB + 5);
    EXPECT_LE(stats.reserved_bytes, 1 * kMiB + 3 * kMiB + 5 + 4096);
    EXPECT_EQ(stats.in_use_bytes, 1000 + 3 * kMiB + 5);
  }
  // A dedicated allocation is unpinned with its block; chunks stay.
  const PinnedPoolStats stats = pool.stats();
  EXPECT_EQ(stats.dedicated, 0u);
  EXPECT_EQ(stats.reserved_bytes, 1 * kMiB);
  EXPECT_EQ(stats.peak_in_use_bytes, 1000 + 3 * kMiB + 5);
  // A dedicated request is budgeted like a chunk.
  EXPECT_THROW((void)pool.allocate(16 * kMiB), OutOfMemory);
}

TEST_P(PinnedPoolTest, StatsTrimAndMoves) {
  PinnedPool pool(device(), {.budget_bytes = 8 * kMiB, .chunk_bytes = 1 * kMiB});
  PinnedBlock a = pool.allocate(600 * kKiB);
  PinnedBlock b = pool.allocate(600 * kKiB);  // does not fit beside a: a second chunk
  EXPECT_EQ(pool.stats().chunks, 2u);
  EXPECT_EQ(pool.stats().in_use_bytes, 1200 * kKiB);

  PinnedBlock moved = std::move(b);
  EXPECT_FALSE(b);  // NOLINT(bugprone-use-after-move): moved-from blocks are empty
  EXPECT_EQ(pool.stats().blocks, 2u);
  PinnedBlock assigned;
  assigned = std::move(moved);
  EXPECT_EQ(pool.stats().blocks, 2u);

  assigned.reset();
  EXPECT_EQ(pool.stats().in_use_bytes, 600 * kKiB);
  EXPECT_EQ(pool.stats().peak_in_use_bytes, 1200 * kKiB);
  pool.reset_peak();
  EXPECT_EQ(pool.stats().peak_in_use_bytes, 600 * kKiB);

  EXPECT_EQ(pool.trim(), 1 * kMiB);  // the unused chunk is unpinned, a's is kept
  EXPECT_EQ(pool.stats().chunks, 1u);
  EXPECT_EQ(pool.stats().reserved_bytes, 1 * kMiB);
  EXPECT_EQ(device().memory_stats(MemoryKind::kPinnedHost).used_bytes, 1 * kMiB);
  a.reset();
  EXPECT_EQ(pool.trim(), 1 * kMiB);
  EXPECT_EQ(pool.stats().reserved_bytes, 0u);
  EXPECT_EQ(device().memory_stats(MemoryKind::kPinnedHost).used_bytes, 0u);
}

TEST_P(PinnedPoolTest, RejectsBadArguments) {
  PinnedPool pool(device(), {.budget_bytes = 1 * kMiB, .chunk_bytes = 256 * kKiB});
  EXPECT_THROW((void)pool.allocate(0), InvalidArgument);
  EXPECT_THROW((void)pool.allocate(64, 0), InvalidArgument);
  EXPECT_THROW((void)pool.allocate(64, 3), InvalidArgument);
  EXPECT_THROW((void)pool.allocate(64, 96), InvalidArgument);
  EXPECT_THROW((void)pool.allocate(64, 2 * kMiB), InvalidArgument);  // above the budget
  const std::string msg = message_of<InvalidArgument>([&] { (void)pool.allocate(64, 48); });
  EXPECT_NE(msg.find("48"), std::string::npos) << msg;
  EXPECT_EQ(pool.stats().reserved_bytes, 0u);  // nothing was pinned for bad requests
}

TEST_P(PinnedPoolTest, ConcurrentAllocateAndFree) {
  // Several threads allocate, write, check and free blocks of random sizes (some dedicated)
  // at once. Under ThreadSanitizer this is the race check of the pool's bookkeeping.
  ZORO_TRACE_SEED();
  PinnedPool pool(device(), {.budget_bytes = 64 * kMiB, .chunk_bytes = 512 * kKiB});
  constexpr int kThreads = 4;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&pool, &failures, t] {
      try {
        run_worker(pool, failures, t);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "thread " << t << ": " << e.what();
        failures.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  const PinnedPoolStats stats = pool.stats();
  EXPECT_EQ(stats.in_use_bytes, 0u);
  EXPECT_EQ(stats.blocks, 0u);
  EXPECT_EQ(stats.dedicated, 0u);
  EXPECT_LE(stats.reserved_bytes, stats.budget_bytes);
  EXPECT_EQ(stats.reserved_bytes, stats.chunks * 512 * kKiB);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, PinnedPoolTest, testing::all_backend_specs(),
                         testing::backend_spec_name);

}  // namespace
}  // namespace zoro::offload
