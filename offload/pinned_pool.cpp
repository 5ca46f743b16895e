#include "offload/pinned_pool.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

#include "runtime/base/check.h"

namespace zoro::offload {

namespace {

// Every extent handed out or kept free is a multiple of this, so neighbouring blocks never
// share a cache line (no false sharing between the optimizer's threads) and alignments up
// to it cost no padding.
constexpr std::size_t kGranule = 64;
// Device::allocate aligns every allocation to at least this (device.h).
constexpr std::size_t kDeviceAlignment = 256;
constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();

// Padding an allocation aligned to kDeviceAlignment may need to reach `alignment`.
std::size_t worst_padding(std::size_t alignment) {
  return alignment > kDeviceAlignment ? alignment - kDeviceAlignment : 0;
}

}  // namespace

// --- PinnedBlock -----------------------------------------------------------------------------

void PinnedBlock::reset() noexcept {
  if (pool_ != nullptr && data_ != nullptr) pool_->release(*this);
  pool_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
  chunk_ = nullptr;
  offset_ = 0;
  extent_ = 0;
}

void PinnedBlock::take(PinnedBlock& other) noexcept {
  pool_ = std::exchange(other.pool_, nullptr);
  data_ = std::exchange(other.data_, nullptr);
  bytes_ = std::exchange(other.bytes_, 0);
  chunk_ = std::exchange(other.chunk_, nullptr);
  offset_ = std::exchange(other.offset_, 0);
  extent_ = std::exchange(other.extent_, 0);
}

// --- PinnedPool ------------------------------------------------------------------------------

PinnedPool::PinnedPool(device::Device& device, PinnedPoolOptions options)
    : device_(device),
      budget_bytes_(options.budget_bytes),
      chunk_bytes_(align_up(std::max<std::size_t>(options.chunk_bytes, 1), kGranule)) {
  const std::size_t ram = physical_memory_bytes();
  ZORO_CHECK(budget_bytes_ > 0 && budget_bytes_ <= ram,
             "pinned pool budget_bytes=" << budget_bytes_ << " (" << format_bytes(budget_bytes_)
                                         << ") must be greater than 0 and at most the machine's "
                                            "physical memory, "
                                         << ram << " B (" << format_bytes(ram) << ")");
  ZORO_CHECK(options.chunk_bytes > 0, "pinned pool chunk_bytes must be greater than 0");
  ZORO_CHECK(options.chunk_bytes <= std::numeric_limits<std::size_t>::max() / 2,
             "pinned pool chunk_bytes=" << options.chunk_bytes << " is absurd");
}

PinnedPool::~PinnedPool() {
  std::lock_guard lock(mutex_);
  if (blocks_ > 0) {
    // A bug in the owner: the blocks' memory is unpinned and freed below, and the blocks'
    // destructors will call into a destroyed pool. Say so loudly; the library does not abort.
    ZORO_LOG(kError) << "PinnedPool destroyed with " << blocks_ << " block(s) outstanding ("
                     << in_use_bytes_ << " B in use): the pool must outlive its blocks";
  }
}

PinnedBlock PinnedPool::allocate(std::size_t bytes, std::size_t alignment) {
  ZORO_CHECK(bytes > 0, "pinned pool: cannot allocate 0 bytes");
  ZORO_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0,
             "pinned pool: alignment " << alignment << " is not a power of two");
  // Larger than the budget can never succeed; refusing it here also keeps the sums below
  // from overflowing (bytes and alignment are at most the physical memory).
  ZORO_CHECK(alignment <= budget_bytes_, "pinned pool: alignment "
                                             << alignment << " is larger than the budget of "
                                             << budget_bytes_ << " B");
  std::unique_lock lock(mutex_);
  if (bytes > budget_bytes_) throw_over_budget(bytes, bytes);

  const std::size_t extent = align_up(bytes, kGranule);
  const std::size_t slack = worst_padding(alignment);
  if (extent > chunk_bytes_ || slack > chunk_bytes_ - extent) {
    // Too big for a chunk: an allocation of its own, released with its block. Chunk-sized
    // caching would pin (and keep) memory nobody asked for.
    const std::size_t pin_bytes = bytes + slack;
    if (pin_bytes > budget_left()) throw_over_budget(pin_bytes, bytes);
    reserved_bytes_ += pin_bytes;
    lock.unlock();
    return allocate_dedicated(bytes, alignment, pin_bytes);
  }

  for (auto& chunk : chunks_) {
    const std::size_t offset = carve(*chunk, extent, alignment);
    if (offset != kNone) return block_from(*chunk, offset, bytes, extent);
  }

  // A new chunk, cut to what is left of the budget so that the whole budget is usable.
  const std::size_t chunk_size = std::min(chunk_bytes_, budget_left() / kGranule * kGranule);
  if (chunk_size < extent + slack) throw_over_budget(extent + slack, bytes);
  // Reserve the budget before pinning (outside the lock: pinning takes milliseconds per
  // hundred MiB, and other threads keep allocating from existing chunks and releasing).
  reserved_bytes_ += chunk_size;
  lock.unlock();
  device::Buffer buffer;
  try {
    buffer = device_.allocate(device::MemoryKind::kPinnedHost, chunk_size);
  } catch (...) {
    lock.lock();
    reserved_bytes_ -= chunk_size;
    throw;
  }
  auto chunk = std::make_unique<Chunk>();
  chunk->buffer = std::move(buffer);
  chunk->free.emplace(0, chunk_size);
  lock.lock();
  // Carve before publishing the chunk, so that trim() never sees it unused.
  const std::size_t offset = carve(*chunk, extent, alignment);
  ZORO_ASSERT(offset != kNone);
  chunks_.push_back(std::move(chunk));
  return block_from(*chunks_.back(), offset, bytes, extent);
}

std::size_t PinnedPool::budget_left() const {
  return budget_bytes_ - std::min(reserved_bytes_, budget_bytes_);
}

void PinnedPool::throw_over_budget(std::size_t pin_bytes, std::size_t requested) const {
  ZORO_THROW(OutOfMemory, "pinned pool: cannot allocate "
                              << requested << " B (" << format_bytes(requested) << "): it needs "
                              << pin_bytes << " B more pinned memory, but " << reserved_bytes_
                              << " B are pinned (" << in_use_bytes_ << " B in use by " << blocks_
                              << " blocks) of the budget of " << budget_bytes_ << " B ("
                              << format_bytes(budget_bytes_) << ")");
}

PinnedBlock PinnedPool::allocate_dedicated(std::size_t bytes, std::size_t alignment,
                                           std::size_t pin_bytes) {
  device::Buffer buffer;
  try {
    buffer = device_.allocate(device::MemoryKind::kPinnedHost, pin_bytes);
  } catch (...) {
    std::lock_guard lock(mutex_);
    reserved_bytes_ -= pin_bytes;
    throw;
  }
  const auto base = reinterpret_cast<std::uintptr_t>(buffer.data());
  void* data = reinterpret_cast<void*>(align_up(base, alignment));
  std::lock_guard lock(mutex_);
  const std::size_t id = next_dedicated_id_++;
  dedicated_.emplace(id, std::move(buffer));
  PinnedBlock block;
  block.pool_ = this;
  block.data_ = data;
  block.bytes_ = bytes;
  block.chunk_ = nullptr;
  block.offset_ = id;
  block.extent_ = pin_bytes;
  in_use_bytes_ += bytes;
  peak_in_use_bytes_ = std::max(peak_in_use_bytes_, in_use_bytes_);
  ++blocks_;
  return block;
}

std::size_t PinnedPool::carve(Chunk& chunk, std::size_t extent, std::size_t alignment) {
  const auto base = reinterpret_cast<std::uintptr_t>(chunk.buffer.data());
  for (auto it = chunk.free.begin(); it != chunk.free.end(); ++it) {
    const auto [offset, size] = *it;
    const std::size_t aligned = align_up(base + offset, alignment) - base;
    const std::size_t pad = aligned - offset;
    if (pad > size || size - pad < extent) continue;
    // Split: [offset, aligned) stays free, [aligned, aligned + extent) is taken, the tail
    // stays free. Reuse the node for the tail or the padding to avoid an allocation.
    auto node = chunk.free.extract(it);
    const std::size_t tail = size - pad - extent;
    if (pad > 0) {
      node.mapped() = pad;
      chunk.free.insert(std::move(node));
      if (tail > 0) chunk.free.emplace(aligned + extent, tail);
    } else if (tail > 0) {
      node.key() = aligned + extent;
      node.mapped() = tail;
      chunk.free.insert(std::move(node));
    }
    chunk.used_extents += extent;
    return aligned;
  }
  return kNone;
}

void PinnedPool::give_back(Chunk& chunk, std::size_t offset, std::size_t extent) noexcept {
  auto& free = chunk.free;
  chunk.used_extents -= extent;
  auto next = free.lower_bound(offset);
  if (next != free.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      prev->second += extent;
      if (next != free.end() && prev->first + prev->second == next->first) {
        prev->second += next->second;
        free.erase(next);
      }
      return;
    }
  }
  if (next != free.end() && offset + extent == next->first) {
    auto node = free.extract(next);
    node.key() = offset;
    node.mapped() += extent;
    free.insert(std::move(node));
    return;
  }
  try {
    free.emplace(offset, extent);
  } catch (...) {
    // Out of memory for a map node: the extent stays unusable until the pool is destroyed.
    ZORO_LOG(kError) << "pinned pool: lost a free extent of " << extent << " B (out of memory)";
  }
}

PinnedBlock PinnedPool::block_from(Chunk& chunk, std::size_t offset, std::size_t bytes,
                                   std::size_t extent) {
  PinnedBlock block;
  block.pool_ = this;
  block.data_ = static_cast<std::byte*>(chunk.buffer.data()) + offset;
  block.bytes_ = bytes;
  block.chunk_ = &chunk;
  block.offset_ = offset;
  block.extent_ = extent;
  in_use_bytes_ += bytes;
  peak_in_use_bytes_ = std::max(peak_in_use_bytes_, in_use_bytes_);
  ++blocks_;
  return block;
}

void PinnedPool::release(PinnedBlock& block) noexcept {
  device::Buffer unpin;  // destroyed after the lock is released: unpinning is slow
  std::lock_guard lock(mutex_);
  in_use_bytes_ -= block.bytes_;
  --blocks_;
  if (block.chunk_ != nullptr) {
    give_back(*static_cast<Chunk*>(block.chunk_), block.offset_, block.extent_);
    return;
  }
  auto it = dedicated_.find(block.offset_);
  if (it == dedicated_.end()) {
    ZORO_LOG(kError) << "pinned pool: released a dedicated block it does not know (a bug)";
    return;
  }
  unpin = std::move(it->second);
  dedicated_.erase(it);
  reserved_bytes_ -= block.extent_;
}

std::size_t PinnedPool::trim() {
  std::vector<std::unique_ptr<Chunk>> unused;  // unpinned after the lock is released
  std::size_t released = 0;
  {
    std::lock_guard lock(mutex_);
    auto keep = std::stable_partition(chunks_.begin(), chunks_.end(),
                                      [](const auto& c) { return c->used_extents > 0; });
    for (auto it = keep; it != chunks_.end(); ++it) {
      released += (*it)->buffer.bytes();
      unused.push_back(std::move(*it));
    }
    chunks_.erase(keep, chunks_.end());
    reserved_bytes_ -= released;
  }
  return released;
}

PinnedPoolStats PinnedPool::stats() const {
  std::lock_guard lock(mutex_);
  PinnedPoolStats s;
  s.budget_bytes = budget_bytes_;
  s.reserved_bytes = reserved_bytes_;
  s.in_use_bytes = in_use_bytes_;
  s.peak_in_use_bytes = peak_in_use_bytes_;
  s.chunks = chunks_.size();
  s.dedicated = dedicated_.size();
  s.blocks = blocks_;
  return s;
}

void PinnedPool::reset_peak() {
  std::lock_guard lock(mutex_);
  peak_in_use_bytes_ = in_use_bytes_;
}

}  // namespace zoro::offload
