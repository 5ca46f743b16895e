// The CUDA Device: opening (validation, DeviceInfo, placement), the three kinds of memory,
// blocking copies, device-wide synchronisation, and the backend factory (backends.h).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <new>
#include <utility>

#include "runtime/base/cuda_check.h"
#include "runtime/base/units.h"
#include "runtime/device/cuda/cuda_internal.h"
#include "runtime/device/topology.h"

namespace zoro::device {

int cuda_runtime_device_count(std::string* reason) {
  // The one CUDA call whose failure is an answer, not an error: no driver, "driver version
  // is insufficient" and no device all mean "no usable GPU".
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear it, so that no later check reports it
    if (reason != nullptr) {
      *reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(status) + ": " +
                cudaGetErrorString(status);
    }
    return 0;
  }
  if (count == 0 && reason != nullptr) *reason = "no CUDA device found";
  return count;
}

std::unique_ptr<Device> make_cuda_device(const CudaDeviceOptions& options) {
  return std::make_unique<cuda::CudaDevice>(options);
}

namespace cuda {

namespace {

// Validates the options and describes the device; runs before the registry is built, since
// the registry needs the capacity.
DeviceInfo describe(const CudaDeviceOptions& options) {
  std::string reason;
  const int count = cuda_runtime_device_count(&reason);
  if (count == 0) ZORO_THROW(Unsupported, "cannot open '" << options.spec << "': " << reason);
  ZORO_CHECK(options.ordinal >= 0 && options.ordinal < count,
             "cannot open '" << options.spec << "': device " << options.ordinal
                             << " does not exist (this machine has " << count << " CUDA device"
                             << (count == 1 ? "" : "s") << ", 0.." << count - 1 << ")");
  DeviceGuard guard(options.ordinal);
  cudaDeviceProp prop{};
  ZORO_CUDA_CHECK(cudaGetDeviceProperties(&prop, options.ordinal));
  const std::size_t total = prop.totalGlobalMem;
  const std::size_t capacity =
      options.memory_capacity_bytes == 0 ? total : options.memory_capacity_bytes;
  ZORO_CHECK(capacity <= total, "cannot open '" << options.spec
                                                << "': mem=" << format_bytes(capacity) << " ("
                                                << capacity << " B) exceeds the GPU's memory ("
                                                << format_bytes(total) << ", " << total << " B)");

  char bus_id[32] = {0};
  ZORO_CUDA_CHECK(cudaDeviceGetPCIBusId(bus_id, static_cast<int>(sizeof bus_id), options.ordinal));

  DeviceInfo info;
  info.backend = BackendKind::kCuda;
  info.name = prop.name;
  info.spec = options.spec.empty() ? "cuda:" + std::to_string(options.ordinal) : options.spec;
  info.ordinal = options.ordinal;
  info.pci_bus_id = bus_id;
  info.numa_node = Topology::instance().numa_node_near_pci(info.pci_bus_id);
  info.memory_capacity_bytes = capacity;
  return info;
}

// Pageable allocations get the alignment device.h promises for every kind.
constexpr std::align_val_t kPageableAlignment{256};

}  // namespace

CudaDevice::CudaDevice(const CudaDeviceOptions& options)
    : info_(describe(options)), registry_(info_.spec, info_.memory_capacity_bytes) {
  DeviceGuard guard(info_.ordinal);
  ZORO_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least_priority_, &greatest_priority_));

  int pools_supported = 0;
  ZORO_CUDA_CHECK(
      cudaDeviceGetAttribute(&pools_supported, cudaDevAttrMemoryPoolsSupported, info_.ordinal));
  if (pools_supported == 0) {
    ZORO_THROW(Unsupported, "'" << info_.spec << "' (" << info_.name
                                << ") does not support stream-ordered memory pools "
                                   "(cudaMallocAsync), which zoro's device allocator needs");
  }
  int register_supported = 0;
  ZORO_CUDA_CHECK(
      cudaDeviceGetAttribute(&register_supported, cudaDevAttrHostRegisterSupported, info_.ordinal));
  if (register_supported == 0) {
    ZORO_THROW(Unsupported, "'" << info_.spec << "' (" << info_.name
                                << ") does not support cudaHostRegister, which zoro's "
                                   "NUMA-bound pinned memory needs");
  }

  // The caching allocator: the device's default pool, told never to return freed memory to
  // the driver at synchronisation points (the default threshold, 0, would unmap it at every
  // stream synchronize and make the next allocation pay for a fresh mapping). Freed memory
  // stays cached for reuse until this device closes (see ~CudaDevice) or an allocation
  // fails (allocate_device trims and retries). The pool is shared by the process, so this
  // also applies to other users of the default pool on this GPU.
  ZORO_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, info_.ordinal));
  std::uint64_t threshold = std::numeric_limits<std::uint64_t>::max();
  ZORO_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &threshold));

  // Non-blocking: allocation must never wait for (or make wait) the legacy default stream.
  ZORO_CUDA_CHECK(cudaStreamCreateWithFlags(&alloc_stream_, cudaStreamNonBlocking));
  ZORO_LOG(kInfo) << "opened " << info_.spec << " (" << info_.name << ", PCI " << info_.pci_bus_id
                  << ", NUMA node " << info_.numa_node << ", cap "
                  << format_bytes(info_.memory_capacity_bytes) << ")";
}

CudaDevice::~CudaDevice() {
  {
    std::lock_guard lock(streams_mutex_);
    const auto live = std::count_if(streams_.begin(), streams_.end(),
                                    [](const auto& s) { return !s.second.expired(); });
    if (live > 0) {
      ZORO_LOG(kError) << info_.spec << " destroyed with " << live
                       << " live stream(s); streams must be destroyed before their device";
    }
  }
  for (MemoryKind kind :
       {MemoryKind::kDevice, MemoryKind::kPinnedHost, MemoryKind::kPageableHost}) {
    const MemoryStats stats = registry_.stats(kind);
    if (stats.allocations > 0) {
      ZORO_LOG(kError) << info_.spec << " destroyed with " << stats.allocations << " live "
                       << to_string(kind) << " allocation(s) (" << format_bytes(stats.used_bytes)
                       << "); buffers must be destroyed before their device";
    }
  }
  DeviceGuard guard(info_.ordinal, DeviceGuard::NoThrow{});
  ZORO_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(alloc_stream_));
  ZORO_CUDA_CHECK_NOTHROW(cudaStreamDestroy(alloc_stream_));
  // Hand the cached, unused memory back to the driver; memory still allocated (by us, wrongly,
  // or by other users of the default pool) is unaffected.
  ZORO_CUDA_CHECK_NOTHROW(cudaMemPoolTrimTo(pool_, 0));
}

std::unique_ptr<Stream> CudaDevice::create_stream(StreamOptions options) {
  DeviceGuard guard(info_.ordinal);
  // CUDA's priorities are "lower number, more urgent"; kNormal is the least urgent, which is
  // also CUDA's default priority (0).
  const int priority =
      options.priority == StreamPriority::kHigh ? greatest_priority_ : least_priority_;
  std::string name = options.name.empty() ? "stream" + std::to_string(next_stream_id_.fetch_add(1))
                                          : std::move(options.name);
  cudaStream_t stream = nullptr;
  // Non-blocking: zoro's streams never synchronise implicitly with the legacy default
  // stream, so that Device::copy (on the legacy stream) and third-party work there do not
  // stall them.
  ZORO_CUDA_CHECK(cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, priority));
  std::shared_ptr<StreamCore> core;
  try {
    core = std::make_shared<StreamCore>(info_.ordinal, stream, std::move(name));
  } catch (...) {
    ZORO_CUDA_CHECK_NOTHROW(cudaStreamDestroy(stream));
    throw;
  }
  {
    std::lock_guard lock(streams_mutex_);
    std::erase_if(streams_, [](const auto& s) { return s.second.expired(); });
    streams_.emplace_back(core.get(), core);
  }
  return std::make_unique<CudaStream>(*this, std::move(core), options.priority);
}

void CudaDevice::forget_stream(const StreamCore* core) noexcept {
  std::lock_guard lock(streams_mutex_);
  std::erase_if(streams_, [core](const auto& s) { return s.first == core; });
}

std::unique_ptr<Event> CudaDevice::create_event(EventOptions options) {
  return std::make_unique<CudaEvent>(info_.ordinal, options.timing);
}

void CudaDevice::synchronize() {
  // Hold the streams (not the lock) while waiting: a stream destroyed meanwhile stays valid,
  // and creating or destroying streams on other threads does not wait for us.
  std::vector<std::shared_ptr<StreamCore>> live;
  {
    std::lock_guard lock(streams_mutex_);
    live.reserve(streams_.size());
    for (const auto& s : streams_) {
      if (auto core = s.second.lock()) live.push_back(std::move(core));
    }
  }
  {
    DeviceGuard guard(info_.ordinal);
    for (const auto& core : live) ZORO_CUDA_CHECK(cudaStreamSynchronize(core->stream));
  }
  // Rethrow the first stored error; any other stream's stays stored for its next
  // synchronize, so that no error is lost.
  std::exception_ptr first;
  for (const auto& core : live) {
    core->host_fns.drain_retired();
    if (!first) first = core->host_fns.take_error();
  }
  if (first) std::rethrow_exception(first);
}

void CudaDevice::copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  // Classify both ranges: this throws for a range that runs past the end of one of our
  // allocations, as on the host backend.
  (void)registry_.classify(dst, bytes);
  (void)registry_.classify(src, bytes);
  const auto d = reinterpret_cast<std::uintptr_t>(dst);
  const auto s = reinterpret_cast<std::uintptr_t>(src);
  ZORO_CHECK(!(d < s + bytes && s < d + bytes),
             "Device::copy: source and destination of " << bytes << " B overlap");
  DeviceGuard guard(info_.ordinal);
  // Returns after the data has landed, in every direction (device.h). cudaMemcpy alone does
  // not promise that: by the CUDA Runtime API's "API synchronization behavior" rules for
  // synchronous memcpy, a copy from pageable host memory to the device "will return once the
  // pageable buffer has been copied to the staging memory for DMA transfer to device memory,
  // but the DMA to final destination may not have completed", and a device-to-device copy
  // performs "no host-side synchronization". It runs on the legacy default stream, which our
  // streams (cudaStreamNonBlocking) do not wait for, so work enqueued right after copy()
  // could read the old bytes. Hence the copy on the legacy stream, named explicitly (not
  // whatever stream the build's --default-stream makes cudaMemcpy use), then a wait for that
  // one stream. Not cudaDeviceSynchronize: it would also wait for every stream's work, so
  // copy() would block behind the pipeline (and on a stream waiting for an event the caller
  // has yet to record, forever); the contract is "ordered after no stream's work".
  ZORO_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cudaStreamLegacy));
  ZORO_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
}

// --- memory --------------------------------------------------------------------------------

void* CudaDevice::do_allocate(MemoryKind kind, std::size_t bytes) {
  switch (kind) {
    case MemoryKind::kDevice:
      return allocate_device(bytes);
    case MemoryKind::kPinnedHost:
      return allocate_pinned(bytes);
    case MemoryKind::kPageableHost:
      return allocate_pageable(bytes);
  }
  ZORO_THROW(InvalidArgument, "unknown memory kind " << static_cast<int>(kind));
}

void* CudaDevice::allocate_device(std::size_t bytes) {
  // The cap (mem=SIZE) is enforced before CUDA is asked, with the numbers in the message.
  registry_.reserve(MemoryKind::kDevice, bytes);
  void* p = nullptr;
  try {
    DeviceGuard guard(info_.ordinal);
    cudaError_t status = cudaMallocAsync(&p, bytes, alloc_stream_);
    if (status == cudaErrorMemoryAllocation) {
      // The pool keeps freed memory mapped (release threshold: never). It reuses it for
      // requests that fit, but a larger request may need those mappings returned first:
      // trim and retry once before giving up.
      (void)cudaGetLastError();
      ZORO_CUDA_CHECK(cudaStreamSynchronize(alloc_stream_));
      ZORO_CUDA_CHECK(cudaMemPoolTrimTo(pool_, 0));
      status = cudaMallocAsync(&p, bytes, alloc_stream_);
    }
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      std::size_t free_bytes = 0, total_bytes = 0;
      ZORO_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
      ZORO_THROW(OutOfMemory, info_.spec << ": cannot allocate " << format_bytes(bytes) << " ("
                                         << bytes << " B) of device memory: the GPU has "
                                         << format_bytes(free_bytes) << " (" << free_bytes
                                         << " B) free of " << format_bytes(total_bytes)
                                         << " (other processes or libraries hold the rest)");
    }
    ZORO_CUDA_CHECK(status);
    // cudaMallocAsync's pointer is valid in the order of alloc_stream_ only; using it on any
    // other stream would need a wait on that stream, which callers cannot see. device.h
    // promises memory usable at once by every stream and by copies, so wait here. Served
    // from the pool's cache this costs a round trip to an idle stream (microseconds), and
    // pipelines allocate up front, not per step.
    ZORO_CUDA_CHECK(cudaStreamSynchronize(alloc_stream_));
    registry_.add(p, bytes, MemoryKind::kDevice);
  } catch (...) {
    if (p != nullptr) {
      DeviceGuard guard(info_.ordinal, DeviceGuard::NoThrow{});
      ZORO_CUDA_CHECK_NOTHROW(cudaFreeAsync(p, alloc_stream_));
    }
    registry_.unreserve(MemoryKind::kDevice, bytes);
    throw;
  }
  return p;
}

void* CudaDevice::allocate_pinned(std::size_t bytes) {
  registry_.reserve(MemoryKind::kPinnedHost, bytes);
  const Topology& topology = Topology::instance();
  void* p = nullptr;
  bool registered = false;
  try {
    // cudaHostAlloc cannot choose the NUMA node of its pages. Map them bound to the GPU's
    // node first (hwloc), then pin them in place: the pages are faulted in on that node.
    p = topology.allocate_bound(bytes, info_.numa_node);
    DeviceGuard guard(info_.ordinal);
    // Default flags: under UVA (every 64-bit platform CUDA supports) registered memory is
    // portable and mapped, which is all we need.
    const cudaError_t status = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
    if (status == cudaErrorMemoryAllocation) {
      // The kernel refused to lock the pages (RLIMIT_MEMLOCK, or too little RAM left).
      (void)cudaGetLastError();
      const MemoryStats pinned = registry_.stats(MemoryKind::kPinnedHost);
      ZORO_THROW(OutOfMemory, info_.spec << ": cannot pin " << format_bytes(bytes) << " (" << bytes
                                         << " B) of host memory (cudaHostRegister: out "
                                         << "of memory); zoro already pins "
                                         << pinned.used_bytes - bytes
                                         << " B on this device (check `ulimit -l`)");
    }
    ZORO_CUDA_CHECK(status);
    registered = true;
    registry_.add(p, bytes, MemoryKind::kPinnedHost);
  } catch (...) {
    if (registered) {
      DeviceGuard guard(info_.ordinal, DeviceGuard::NoThrow{});
      ZORO_CUDA_CHECK_NOTHROW(cudaHostUnregister(p));
    }
    if (p != nullptr) topology.free_bound(p, bytes);
    registry_.unreserve(MemoryKind::kPinnedHost, bytes);
    throw;
  }
  return p;
}

void* CudaDevice::allocate_pageable(std::size_t bytes) {
  // Tracked like the other kinds (statistics, and range checks in memory_kind_of), though
  // CUDA never sees it.
  registry_.reserve(MemoryKind::kPageableHost, bytes);
  void* p = nullptr;
  try {
    p = ::operator new(bytes, kPageableAlignment);
    registry_.add(p, bytes, MemoryKind::kPageableHost);
  } catch (const std::bad_alloc&) {
    if (p != nullptr) ::operator delete(p, kPageableAlignment);
    registry_.unreserve(MemoryKind::kPageableHost, bytes);
    ZORO_THROW(OutOfMemory, info_.spec << ": cannot allocate " << format_bytes(bytes) << " ("
                                       << bytes << " B) of pageable host memory");
  }
  return p;
}

void CudaDevice::do_deallocate(void* p, std::size_t bytes, MemoryKind kind) noexcept {
  // Forget the range before the memory can be handed out again, so that a concurrent
  // allocation at the same address is never erased by this one's removal.
  registry_.remove(p);
  switch (kind) {
    case MemoryKind::kDevice: {
      DeviceGuard guard(info_.ordinal, DeviceGuard::NoThrow{});
      // Back to the pool, in alloc_stream_'s order. Buffer's contract (device.h) is that no
      // work still uses it, so no other stream needs to be waited for.
      ZORO_CUDA_CHECK_NOTHROW(cudaFreeAsync(p, alloc_stream_));
      break;
    }
    case MemoryKind::kPinnedHost: {
      {
        DeviceGuard guard(info_.ordinal, DeviceGuard::NoThrow{});
        ZORO_CUDA_CHECK_NOTHROW(cudaHostUnregister(p));
      }
      Topology::instance().free_bound(p, bytes);
      break;
    }
    case MemoryKind::kPageableHost:
      ::operator delete(p, kPageableAlignment);
      break;
  }
  registry_.unreserve(kind, bytes);
}

}  // namespace cuda
}  // namespace zoro::device
