// The host backend's Device: memory (capped heap, NUMA-bound pinned, tracked pageable), the
// live-stream list behind Device::synchronize(), and the trace (see host_device.h).
#include "runtime/device/host/host_device.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "runtime/base/check.h"
#include "runtime/base/units.h"
#include "runtime/device/topology.h"

namespace zoro::device {

std::unique_ptr<Device> make_host_device(const HostDeviceOptions& options) {
  return std::make_unique<host::HostDevice>(options);
}

namespace host {

namespace {
// Device (and pageable) memory alignment promised by Device::allocate.
constexpr std::size_t kAlignment = 256;
}  // namespace

void check_no_overlap(const void* a, const void* b, std::size_t bytes, const char* what) {
  const auto pa = reinterpret_cast<std::uintptr_t>(a);
  const auto pb = reinterpret_cast<std::uintptr_t>(b);
  const bool overlap = pa < pb ? pb - pa < bytes : pa - pb < bytes;
  ZORO_CHECK(!overlap, what << ": source and destination ranges of " << bytes
                            << " B overlap (distance " << (pa < pb ? pb - pa : pa - pb) << " B)");
}

HostDevice::HostDevice(const HostDeviceOptions& options)
    : registry_("host device", options.memory_capacity_bytes) {
  info_.backend = BackendKind::kHost;
  info_.name = "host";
  info_.spec = options.spec;
  info_.ordinal = 0;
  info_.numa_node = Topology::instance().current_numa_node();
  info_.memory_capacity_bytes = options.memory_capacity_bytes;
  trace_.set_enabled(options.trace);
}

HostDevice::~HostDevice() {
  // The contract makes these the caller's bugs; report them rather than crash in a destructor.
  std::size_t live_streams = 0;
  {
    std::lock_guard lock(streams_mutex_);
    for (const auto& weak : streams_) live_streams += weak.expired() ? 0 : 1;
  }
  if (live_streams > 0) {
    ZORO_LOG(kWarn) << "host device destroyed with " << live_streams
                    << " stream(s) still alive (destroy streams before their Device)";
  }
  for (MemoryKind kind :
       {MemoryKind::kDevice, MemoryKind::kPinnedHost, MemoryKind::kPageableHost}) {
    const MemoryStats stats = registry_.stats(kind);
    if (stats.allocations > 0) {
      ZORO_LOG(kWarn) << "host device destroyed with " << stats.allocations << " live "
                      << to_string(kind) << " buffer(s) (" << stats.used_bytes
                      << " B): they leak (free Buffers before their Device)";
    }
  }
}

std::unique_ptr<Stream> HostDevice::create_stream(StreamOptions options) {
  std::string name = std::move(options.name);
  {
    std::lock_guard lock(streams_mutex_);
    const std::uint64_t index = streams_created_++;
    if (name.empty()) name = "stream" + std::to_string(index);
  }
  return std::make_unique<HostStream>(this, std::move(name), options.priority);
}

std::unique_ptr<Event> HostDevice::create_event(EventOptions options) {
  return std::make_unique<HostEvent>(this, options);
}

void HostDevice::add_stream(const std::shared_ptr<StreamCore>& core) {
  std::lock_guard lock(streams_mutex_);
  // Drop the entries of destroyed streams here, so the list stays as long as the live set.
  std::erase_if(streams_, [](const std::weak_ptr<StreamCore>& weak) { return weak.expired(); });
  streams_.push_back(core);
}

void HostDevice::remove_stream(const StreamCore* core) noexcept {
  std::lock_guard lock(streams_mutex_);
  std::erase_if(streams_, [core](const std::weak_ptr<StreamCore>& weak) {
    const auto locked = weak.lock();
    return locked == nullptr || locked.get() == core;
  });
}

void HostDevice::synchronize() {
  check_not_on_worker("Device::synchronize");
  std::vector<std::shared_ptr<StreamCore>> streams;
  {
    std::lock_guard lock(streams_mutex_);
    for (const auto& weak : streams_) {
      if (auto core = weak.lock()) streams.push_back(std::move(core));
    }
  }
  // Drain every stream even after finding an error ("every stream idle" is the contract);
  // take only the first error, so each stored error is rethrown exactly once.
  std::exception_ptr first;
  for (const auto& core : streams) {
    core->drain();
    if (!first) first = core->take_error();
  }
  if (first) std::rethrow_exception(first);
}

MemoryStats HostDevice::memory_stats(MemoryKind kind) const { return registry_.stats(kind); }

void HostDevice::reset_peak(MemoryKind kind) { registry_.reset_peak(kind); }

MemoryKind HostDevice::memory_kind_of(const void* p, std::size_t bytes) const {
  return registry_.classify(p, bytes);
}

void HostDevice::check_async_range(const void* p, std::size_t bytes, const char* what) const {
  ZORO_CHECK(p != nullptr, what << " is a null pointer");
  const MemoryKind kind = registry_.classify(p, bytes);
  ZORO_CHECK(kind != MemoryKind::kPageableHost,
             what << " (" << bytes << " B at " << p
                  << ") is pageable host memory (or memory of another device): async copies "
                     "need device or pinned memory of this device (on CUDA a pageable copy "
                     "would silently serialise); use Device::copy or a pinned staging buffer");
}

void HostDevice::copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  ZORO_CHECK(dst != nullptr && src != nullptr,
             "Device::copy of " << bytes << " B with a null pointer");
  // Classifying checks that neither range runs past the end of one of our allocations.
  (void)registry_.classify(dst, bytes);
  (void)registry_.classify(src, bytes);
  check_no_overlap(dst, src, bytes, "Device::copy");
  std::memcpy(dst, src, bytes);
}

void* HostDevice::do_allocate(MemoryKind kind, std::size_t bytes) {
  registry_.reserve(kind, bytes);
  void* p = nullptr;
  try {
    if (kind == MemoryKind::kPinnedHost) {
      p = Topology::instance().allocate_bound(bytes, info_.numa_node);
    } else {
      p = ::operator new (bytes, std::align_val_t{kAlignment}, std::nothrow);
      if (p == nullptr) {
        ZORO_THROW(OutOfMemory, "host device: the system could not allocate "
                                    << format_bytes(bytes) << " (" << bytes << " B) of "
                                    << to_string(kind) << " memory");
      }
    }
    registry_.add(p, bytes, kind);
  } catch (...) {
    if (p != nullptr) {
      if (kind == MemoryKind::kPinnedHost) {
        Topology::instance().free_bound(p, bytes);
      } else {
        ::operator delete (p, std::align_val_t{kAlignment});
      }
    }
    registry_.unreserve(kind, bytes);
    throw;
  }
  return p;
}

void HostDevice::do_deallocate(void* p, std::size_t bytes, MemoryKind kind) noexcept {
  registry_.remove(p);
  if (kind == MemoryKind::kPinnedHost) {
    Topology::instance().free_bound(p, bytes);
  } else {
    ::operator delete (p, std::align_val_t{kAlignment});
  }
  registry_.unreserve(kind, bytes);
}

}  // namespace host
}  // namespace zoro::device
