// PinnedPool: the host-side memory of offloading (fp32 master parameters, Adam moments, the
// gradient accumulator, staging: ../shared/DESIGN.md section 1), as pinned blocks carved from
// a few large chunks under an explicit budget.
//
// Contract:
//   - Memory comes from Device::allocate(MemoryKind::kPinnedHost, ...) in chunks of
//     chunk_bytes, never as one giant pin: pinning is slow (the kernel locks every page) and
//     a single huge registration can fail where several smaller ones succeed. The pool
//     sub-allocates blocks from the chunks with a per-chunk free list that coalesces freed
//     neighbours. Chunks are kept until trim() or the pool's destruction: re-pinning is
//     what the pool exists to avoid.
//   - A request larger than chunk_bytes (or whose alignment could not fit a chunk) gets a
//     dedicated allocation of its own size, released as soon as its block is.
//   - The budget caps the pinned bytes the pool holds (chunks plus dedicated allocations) and
//     is checked BEFORE pinning anything: a request that would need more throws OutOfMemory
//     naming the requested, in-use, reserved and budget bytes. The last chunk is cut to what
//     is left of the budget, so the whole budget is usable. The budget must be non-zero and
//     at most the machine's physical memory (InvalidArgument naming both otherwise).
//   - Placement: the device binds pinned memory to its NUMA node (DeviceInfo::numa_node), so
//     every block is on the node nearest the GPU; numa_node() reports it.
//   - Blocks are move-only RAII handles that give their memory back on destruction. The pool
//     must outlive its blocks, and the device must outlive the pool: destroying a pool with
//     blocks outstanding is a bug (logged at error level with the count; the blocks then
//     dangle). As with Buffer, a block must not be released while stream work still uses it.
//   - Thread-safe: any thread may allocate, release (destroy blocks) and read stats at once.
//     Pinning a new chunk happens outside the pool's lock, so other threads keep allocating
//     from the existing chunks and releasing meanwhile. A block itself is not thread-safe.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/base/units.h"
#include "runtime/device/device.h"

namespace zoro::offload {

struct PinnedPoolOptions {
  std::size_t budget_bytes = 0;          // required: the most pinned memory the pool may hold
  std::size_t chunk_bytes = 256 * kMiB;  // the unit of pinning
};

struct PinnedPoolStats {
  std::size_t budget_bytes = 0;
  std::size_t reserved_bytes = 0;     // pinned by the pool: chunks + dedicated allocations
  std::size_t in_use_bytes = 0;       // live blocks, as requested
  std::size_t peak_in_use_bytes = 0;  // high-water mark of in_use_bytes
  std::size_t chunks = 0;             // shared chunks held
  std::size_t dedicated = 0;          // live dedicated allocations (requests > chunk_bytes)
  std::size_t blocks = 0;             // live blocks (shared and dedicated)
};

class PinnedPool;

// A block of pinned memory from a PinnedPool. Move-only; gives the memory back on
// destruction or reset(). Contents are unspecified on allocation.
class PinnedBlock {
 public:
  PinnedBlock() = default;
  ~PinnedBlock() { reset(); }
  PinnedBlock(PinnedBlock&& other) noexcept { take(other); }
  PinnedBlock& operator=(PinnedBlock&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }
  PinnedBlock(const PinnedBlock&) = delete;
  PinnedBlock& operator=(const PinnedBlock&) = delete;

  void* data() const noexcept { return data_; }
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }
  std::size_t bytes() const noexcept { return bytes_; }
  // Whether the block has an allocation of its own (the request exceeded chunk_bytes).
  bool dedicated() const noexcept { return chunk_ == nullptr && data_ != nullptr; }
  explicit operator bool() const noexcept { return data_ != nullptr; }
  // Gives the memory back now; the block becomes empty.
  void reset() noexcept;

 private:
  friend class PinnedPool;
  void take(PinnedBlock& other) noexcept;

  PinnedPool* pool_ = nullptr;
  void* data_ = nullptr;
  std::size_t bytes_ = 0;  // as requested
  // Shared blocks: the chunk and the extent [offset_, offset_ + extent_) taken from it.
  // Dedicated blocks: chunk_ is null and offset_ identifies the allocation.
  void* chunk_ = nullptr;
  std::size_t offset_ = 0;
  std::size_t extent_ = 0;
};

class PinnedPool {
 public:
  static constexpr std::size_t kDefaultAlignment = 64;  // a cache line

  // Validates the options (InvalidArgument: budget 0 or above physical memory, chunk 0); pins
  // nothing until the first allocate.
  PinnedPool(device::Device& device, PinnedPoolOptions options);
  ~PinnedPool();
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;

  // A block of `bytes` (> 0) aligned to `alignment` (a power of two). Throws InvalidArgument
  // for bad arguments, OutOfMemory when the budget (or the device) cannot supply it.
  PinnedBlock allocate(std::size_t bytes, std::size_t alignment = kDefaultAlignment);

  // Unpins the chunks that no block uses; returns the bytes released.
  std::size_t trim();

  PinnedPoolStats stats() const;
  void reset_peak();
  // The NUMA node the pool's memory is bound to (the device's; -1 when unknown).
  int numa_node() const noexcept { return device_.info().numa_node; }
  std::size_t budget_bytes() const noexcept { return budget_bytes_; }
  std::size_t chunk_bytes() const noexcept { return chunk_bytes_; }
  device::Device& device() const noexcept { return device_; }

 private:
  friend class PinnedBlock;
  struct Chunk {
    device::Buffer buffer;
    // Free extents by offset -> size; neighbours are merged on release.
    std::map<std::size_t, std::size_t> free;
    std::size_t used_extents = 0;  // bytes handed out as blocks
  };

  // Takes an extent of `extent` bytes starting at an `alignment`-aligned address from
  // `chunk` (first fit); returns its offset, or npos when no free extent fits.
  static std::size_t carve(Chunk& chunk, std::size_t extent, std::size_t alignment);
  // Gives [offset, offset + extent) back to `chunk`, merging it with free neighbours.
  static void give_back(Chunk& chunk, std::size_t offset, std::size_t extent) noexcept;
  PinnedBlock block_from(Chunk& chunk, std::size_t offset, std::size_t bytes, std::size_t extent);
  // Budget not yet pinned (or being pinned); under the lock.
  std::size_t budget_left() const;
  // OutOfMemory for a request of `requested` bytes that needs `pin_bytes` more pinned memory
  // than the budget has left, with the numbers; under the lock.
  [[noreturn]] void throw_over_budget(std::size_t pin_bytes, std::size_t requested) const;
  PinnedBlock allocate_dedicated(std::size_t bytes, std::size_t alignment, std::size_t pin_bytes);
  void release(PinnedBlock& block) noexcept;

  device::Device& device_;
  const std::size_t budget_bytes_;
  const std::size_t chunk_bytes_;

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Chunk>> chunks_;
  // Dedicated allocations by id (PinnedBlock::offset_).
  std::map<std::size_t, device::Buffer> dedicated_;
  std::size_t next_dedicated_id_ = 0;
  std::size_t reserved_bytes_ = 0;  // includes chunks being pinned outside the lock
  std::size_t in_use_bytes_ = 0;
  std::size_t peak_in_use_bytes_ = 0;
  std::size_t blocks_ = 0;
};

}  // namespace zoro::offload
