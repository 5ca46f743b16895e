#include "runtime/device/allocation_registry.h"

#include "runtime/base/check.h"
#include "runtime/base/units.h"

namespace zoro::device {

AllocationRegistry::AllocationRegistry(std::string device_name, std::size_t device_capacity)
    : device_name_(std::move(device_name)) {
  const std::size_t ram = physical_memory_bytes();
  capacity_ = {device_capacity, ram, ram};
}

void AllocationRegistry::reserve(MemoryKind kind, std::size_t bytes) {
  std::lock_guard lock(mutex_);
  const std::size_t i = index(kind);
  const std::size_t free_bytes = capacity_[i] - std::min(used_[i], capacity_[i]);
  if (bytes > free_bytes) {
    ZORO_THROW(OutOfMemory, device_name_ << ": cannot allocate " << format_bytes(bytes) << " ("
                                         << bytes << " B) of " << to_string(kind) << " memory: "
                                         << format_bytes(free_bytes) << " (" << free_bytes
                                         << " B) free of " << format_bytes(capacity_[i])
                                         << " capacity, " << format_bytes(used_[i]) << " in use");
  }
  used_[i] += bytes;
  peak_[i] = std::max(peak_[i], used_[i]);
  ++count_[i];
}

void AllocationRegistry::unreserve(MemoryKind kind, std::size_t bytes) noexcept {
  std::lock_guard lock(mutex_);
  const std::size_t i = index(kind);
  used_[i] -= std::min(used_[i], bytes);
  if (count_[i] > 0) --count_[i];
}

void AllocationRegistry::add(const void* p, std::size_t bytes, MemoryKind kind) {
  std::lock_guard lock(mutex_);
  ranges_[reinterpret_cast<std::uintptr_t>(p)] = Range{bytes, kind};
}

void AllocationRegistry::remove(const void* p) noexcept {
  std::lock_guard lock(mutex_);
  ranges_.erase(reinterpret_cast<std::uintptr_t>(p));
}

MemoryKind AllocationRegistry::classify(const void* p, std::size_t bytes) const {
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  std::lock_guard lock(mutex_);
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return MemoryKind::kPageableHost;
  --it;
  const std::uintptr_t start = it->first;
  const std::uintptr_t end = start + it->second.bytes;
  if (addr >= end) return MemoryKind::kPageableHost;
  ZORO_CHECK(bytes <= end - addr, "range of " << bytes << " B at offset " << (addr - start)
                                              << " runs past the end of a " << it->second.bytes
                                              << " B " << to_string(it->second.kind)
                                              << " allocation");
  return it->second.kind;
}

MemoryStats AllocationRegistry::stats(MemoryKind kind) const {
  std::lock_guard lock(mutex_);
  const std::size_t i = index(kind);
  return MemoryStats{used_[i], peak_[i], capacity_[i], count_[i]};
}

void AllocationRegistry::reset_peak(MemoryKind kind) {
  std::lock_guard lock(mutex_);
  peak_[index(kind)] = used_[index(kind)];
}

}  // namespace zoro::device
