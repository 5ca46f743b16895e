// Private to runtime/device/cuda: the CUDA backend's classes (device.h's Device, Stream and
// Event over the CUDA runtime API). Nothing outside this folder includes it; everything else
// reaches these through device.h and make_cuda_device (backends.h).
//
// Contract (in addition to device.h):
//   - Any host thread may call any function: every call that touches CUDA first makes the
//     object's device current (DeviceGuard) and restores the caller's device on return.
//   - Every CUDA call goes through ZORO_CUDA_CHECK (or its NOTHROW variant in destructors and
//     callbacks): a failure is a BackendError naming the call and CUDA's message. Where one
//     code is an answer rather than a failure (cudaErrorNotReady from a query, out of memory,
//     no device), that code is handled (and cleared with cudaGetLastError) and any other goes
//     to the check.
//   - Destructors never throw.
//
// Note [Host functions on CUDA]: Stream::launch_host_fn goes through cudaLaunchHostFunc,
// whose callback thread must not call CUDA at all. So the callback only runs the user's
// function and stores what it throws; the closure (and with it everything the user's lambda
// captured, which may own Buffers whose release calls CUDA) is not destroyed on the callback
// thread but retired to the stream and destroyed by the next launch_host_fn, synchronize or
// the stream's destructor, on an ordinary host thread. CUDA does not run the host functions
// of a context that has failed: their closures are then neither run nor freed (a small leak
// in a process that has already lost its GPU).
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/device/allocation_registry.h"
#include "runtime/device/backends.h"
#include "runtime/device/device.h"

namespace zoro::device::cuda {

// Makes `ordinal` the calling thread's current device for the guard's lifetime and restores
// the previous one afterwards (callers may be on any thread, with any device current).
class DeviceGuard {
 public:
  struct NoThrow {};
  explicit DeviceGuard(int ordinal);
  // For destructors: a failure to switch is logged, not thrown.
  DeviceGuard(int ordinal, NoThrow);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  bool switched_ = false;
};

// What a stream's host functions share with it: the first stored error (Note [Stream errors]
// in device.h) and the closures that finished running (Note [Host functions on CUDA]).
// Owned by the StreamCore, which outlives every callback of its stream (its destructor
// synchronizes the stream before destroying anything).
class HostFnState {
 public:
  struct Closure {
    std::string label;
    std::function<void()> fn;
    HostFnState* state;
  };

  HostFnState() = default;
  HostFnState(const HostFnState&) = delete;
  HostFnState& operator=(const HostFnState&) = delete;

  // Keeps the first error; later ones are logged and dropped (the first is the cause).
  void store_error(std::exception_ptr error, const std::string& label) noexcept;
  // The stored error, cleared (so it is rethrown once); null when none.
  std::exception_ptr take_error() noexcept;
  // Called on the callback thread once a closure has run: keeps it for destruction later.
  void retire(std::unique_ptr<Closure> closure) noexcept;
  // Destroys the retired closures on the calling (ordinary host) thread.
  void drain_retired() noexcept;

 private:
  std::mutex mutex_;
  std::exception_ptr error_;
  std::vector<std::unique_ptr<Closure>> retired_;
};

class CudaDevice;

// What Device::synchronize needs of a live stream; owned by the CudaStream and by any
// synchronize() in progress, so that a stream destroyed meanwhile stays valid until then.
struct StreamCore {
  StreamCore(int ordinal, cudaStream_t stream, std::string name);
  ~StreamCore();  // synchronizes and destroys the cudaStream_t; never throws
  StreamCore(const StreamCore&) = delete;
  StreamCore& operator=(const StreamCore&) = delete;

  const int ordinal;
  const cudaStream_t stream;
  const std::string name;
  HostFnState host_fns;
};

class CudaStream final : public Stream {
 public:
  CudaStream(CudaDevice& device, std::shared_ptr<StreamCore> core, StreamPriority priority);
  ~CudaStream() override;

  const std::string& name() const override { return core_->name; }
  StreamPriority priority() const override { return priority_; }
  void copy_async(void* dst, const void* src, std::size_t bytes) override;
  void memset_async(void* dst, int value, std::size_t bytes) override;
  void wait(const Event& event) override;
  void launch_host_fn(std::string label, std::function<void()> fn) override;
  void synchronize() override;
  bool query() const override;
  void* native_handle() const override { return static_cast<void*>(core_->stream); }

  cudaStream_t handle() const { return core_->stream; }
  int ordinal() const { return core_->ordinal; }

 private:
  CudaDevice& device_;
  std::shared_ptr<StreamCore> core_;
  StreamPriority priority_;
};

class CudaEvent final : public Event {
 public:
  CudaEvent(int ordinal, bool timing);
  ~CudaEvent() override;

  void record(Stream& stream) override;
  bool query() const override;
  void synchronize() const override;
  float elapsed_ms_since(const Event& start) const override;
  std::uint64_t version() const override { return version_.load(std::memory_order_acquire); }

  // Enqueues on `stream` a wait for the version recorded last (Stream::wait).
  void enqueue_wait(const CudaStream& stream) const;

 private:
  const int ordinal_;
  const bool timing_;
  cudaEvent_t event_ = nullptr;
  // Serialises record() against itself and against waits, so that version() always counts
  // the records a wait could have seen.
  mutable std::mutex mutex_;
  std::atomic<std::uint64_t> version_{0};
};

class CudaDevice final : public Device {
 public:
  explicit CudaDevice(const CudaDeviceOptions& options);
  ~CudaDevice() override;

  const DeviceInfo& info() const override { return info_; }
  std::unique_ptr<Stream> create_stream(StreamOptions options) override;
  std::unique_ptr<Event> create_event(EventOptions options) override;
  MemoryStats memory_stats(MemoryKind kind) const override { return registry_.stats(kind); }
  void reset_peak(MemoryKind kind) override { registry_.reset_peak(kind); }
  MemoryKind memory_kind_of(const void* p, std::size_t bytes) const override {
    return registry_.classify(p, bytes);
  }
  void copy(void* dst, const void* src, std::size_t bytes) override;
  void synchronize() override;

  int ordinal() const { return info_.ordinal; }
  // Called by ~CudaStream.
  void forget_stream(const StreamCore* core) noexcept;

 protected:
  void* do_allocate(MemoryKind kind, std::size_t bytes) override;
  void do_deallocate(void* p, std::size_t bytes, MemoryKind kind) noexcept override;

 private:
  void* allocate_device(std::size_t bytes);
  void* allocate_pinned(std::size_t bytes);
  void* allocate_pageable(std::size_t bytes);

  DeviceInfo info_;
  AllocationRegistry registry_;
  int least_priority_ = 0;     // cudaDeviceGetStreamPriorityRange: numerically largest
  int greatest_priority_ = 0;  // numerically smallest (the most urgent)
  cudaMemPool_t pool_ = nullptr;
  // Internal stream for cudaMallocAsync / cudaFreeAsync (see allocate_device).
  cudaStream_t alloc_stream_ = nullptr;

  mutable std::mutex streams_mutex_;
  // Live streams, by core address (for forget_stream) and weakly (for synchronize).
  std::vector<std::pair<const StreamCore*, std::weak_ptr<StreamCore>>> streams_;
  std::atomic<std::uint64_t> next_stream_id_{0};
};

}  // namespace zoro::device::cuda
