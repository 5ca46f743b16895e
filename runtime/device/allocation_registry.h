// Private to runtime/device: the bookkeeping every backend shares — which address ranges are
// device or pinned memory (so a copy's arguments can be classified and checked), and the
// per-kind used / peak / capacity statistics with the capacity enforced before allocating.
// Thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "runtime/device/device.h"

namespace zoro::device {

class AllocationRegistry {
 public:
  // `device_name` appears in OutOfMemory messages. Capacities: device memory is capped at
  // device_capacity; host kinds report the machine's physical memory as their capacity.
  AllocationRegistry(std::string device_name, std::size_t device_capacity);

  // Accounts `bytes` of `kind` before the backend allocates; throws OutOfMemory naming the
  // requested, free and capacity bytes when it would exceed the capacity.
  void reserve(MemoryKind kind, std::size_t bytes);
  // Undoes reserve() (the allocation failed, or was freed).
  void unreserve(MemoryKind kind, std::size_t bytes) noexcept;

  // Records a live allocation made after reserve(); remove() forgets it (before freeing).
  void add(const void* p, std::size_t bytes, MemoryKind kind);
  void remove(const void* p) noexcept;

  // The kind of [p, p+bytes): the allocation containing p, or kPageableHost when none does.
  // Throws InvalidArgument when the range starts inside an allocation and runs past its end.
  MemoryKind classify(const void* p, std::size_t bytes) const;

  MemoryStats stats(MemoryKind kind) const;
  void reset_peak(MemoryKind kind);
  std::size_t device_capacity() const { return capacity_[0]; }

 private:
  struct Range {
    std::size_t bytes;
    MemoryKind kind;
  };
  static std::size_t index(MemoryKind kind) { return static_cast<std::size_t>(kind); }
  std::string device_name_;
  mutable std::mutex mutex_;
  std::map<std::uintptr_t, Range> ranges_;  // by start address
  std::array<std::size_t, 3> capacity_{};
  std::array<std::size_t, 3> used_{};
  std::array<std::size_t, 3> peak_{};
  std::array<std::size_t, 3> count_{};
};

}  // namespace zoro::device
