// The backend-neutral device layer: Device, Stream, Event, Buffer.
//
// Every stream, event, copy and allocation of zoro's pipelines goes through this interface, so
// the engine, the bucketer, DPU and the partitioner are written once and run on two backends
// (../shared/DESIGN.md section 4):
//   - CUDA (runtime/device/cuda/): real streams with priorities, events, a caching device
//     allocator (cudaMallocAsync pool), pinned host memory bound to the GPU's NUMA node,
//     cudaMemcpyAsync;
//   - host (runtime/device/host/): each stream a FIFO worker thread, versioned events,
//     a capacity-capped "device" heap, memcpy copies, an optional trace. It is deliberately
//     stricter than CUDA (see each contract), so that code passing on it is correct on CUDA.
//
// Open one with open_device("cuda:0"), open_device("host:mem=256MiB") or open_device("auto").
//
// Threading: a Device, its Streams and Events may be used from any host thread; each call is
// thread-safe. Work submitted to one Stream runs in submission order; work on different streams
// is unordered unless ordered by Stream::wait(Event). Object lifetime: Streams, Events and
// Buffers must be destroyed before the Device that made them.
//
// Note [Stream errors]: a failure inside work that runs asynchronously on a stream (a host
// function that throws, a failed copy) is stored in that stream and rethrown, once, by the
// next Stream::synchronize() or Device::synchronize(). Work submitted to the stream after the
// failure still runs in order; events recorded after it still complete, so no other stream
// waiting on them can hang.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace zoro::device {

class Device;
class Stream;
class Trace;

enum class BackendKind : std::uint8_t { kHost, kCuda };
const char* to_string(BackendKind kind);

// Where memory lives. kDevice: the accelerator's memory (on the host backend, the capped
// heap). kPinnedHost: page-locked host memory bound to the device's NUMA node; the only host
// memory async copies accept. kPageableHost: ordinary host memory (only synchronous copies).
enum class MemoryKind : std::uint8_t { kDevice, kPinnedHost, kPageableHost };
const char* to_string(MemoryKind kind);

struct MemoryStats {
  std::size_t used_bytes = 0;      // live allocations, as requested (not rounded)
  std::size_t peak_bytes = 0;      // high-water mark of used_bytes since open/reset_peak
  std::size_t capacity_bytes = 0;  // the cap; for host kinds, the machine's physical memory
  std::size_t allocations = 0;     // live allocation count
};

// An owning handle to memory from Device::allocate. Move-only; frees on destruction (which
// must not race with work still using the memory: synchronize first). Never outlives its
// Device.
class Buffer {
 public:
  Buffer() = default;
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const noexcept { return data_; }
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }
  std::size_t bytes() const noexcept { return bytes_; }
  MemoryKind kind() const noexcept { return kind_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }
  // Frees now; the Buffer becomes empty.
  void reset() noexcept;

 private:
  friend class Device;
  Buffer(Device* owner, void* data, std::size_t bytes, MemoryKind kind) noexcept
      : owner_(owner), data_(data), bytes_(bytes), kind_(kind) {}
  Device* owner_ = nullptr;
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  MemoryKind kind_ = MemoryKind::kDevice;
};

struct EventOptions {
  // Whether elapsed_ms() may be asked of this event (CUDA events without timing are cheaper).
  bool timing = false;
};

// A marker in a stream's work. Versioned: each record() makes a new version; query(),
// synchronize() and Stream::wait() act on the version current when they are called, so
// re-recording an event never changes what an earlier wait waits for. An event never
// recorded is complete.
class Event {
 public:
  virtual ~Event() = default;
  // Marks the point after all work submitted to `stream` so far. Thread-safe.
  virtual void record(Stream& stream) = 0;
  // True when the version recorded last (at the time of the call) has completed.
  virtual bool query() const = 0;
  // Blocks the calling host thread until the version recorded last has completed. Does not
  // rethrow stream errors (Note [Stream errors]): synchronize the stream for that.
  virtual void synchronize() const = 0;
  // Milliseconds from `start`'s completion to this event's completion; both must be timing
  // events of the same device, recorded and complete. Throws InvalidArgument otherwise.
  virtual float elapsed_ms_since(const Event& start) const = 0;
  // How many times record() has been called.
  virtual std::uint64_t version() const = 0;
};

enum class StreamPriority : std::uint8_t { kNormal, kHigh };

struct StreamOptions {
  std::string name;  // shown in traces and errors; defaults to "stream<N>"
  StreamPriority priority = StreamPriority::kNormal;
};

// A FIFO of asynchronous work. The submitting calls return at once; they throw only for bad
// arguments detected at submission (InvalidArgument) or a backend call that fails to enqueue.
class Stream {
 public:
  virtual ~Stream() = default;  // waits for the stream's pending work; never throws
  virtual const std::string& name() const = 0;
  virtual StreamPriority priority() const = 0;

  // Copies `bytes` from src to dst in stream order. Both sides must be device or pinned host
  // memory from this Device (the host backend checks every range); pageable memory is refused
  // with InvalidArgument, because on CUDA it would silently serialise. Ranges must not overlap.
  virtual void copy_async(void* dst, const void* src, std::size_t bytes) = 0;
  // copy_async that names the copy in traces ("d2h bucket 3"; a plain copy_async is traced as
  // "copy <bytes> B"), so tests can find a given copy among the trace's records. The same
  // contract otherwise; a backend that keeps no trace may ignore the label (the default).
  virtual void copy_async_labelled(std::string label, void* dst, const void* src,
                                   std::size_t bytes) {
    (void)label;
    copy_async(dst, src, bytes);
  }
  // Sets `bytes` of device or pinned memory to `value`, in stream order.
  virtual void memset_async(void* dst, int value, std::size_t bytes) = 0;
  // Makes later work on this stream wait for `event`'s version current at this call.
  virtual void wait(const Event& event) = 0;
  // Runs fn on a host thread in stream order: later work on this stream waits for it. An
  // exception it throws is stored (Note [Stream errors]). fn must not call into the device
  // layer's synchronising functions (on CUDA, no CUDA call at all). `label` names it in
  // traces and errors. On the host backend this is how "kernels" run.
  virtual void launch_host_fn(std::string label, std::function<void()> fn) = 0;
  // Blocks until all submitted work has completed; rethrows a stored error (once).
  virtual void synchronize() = 0;
  // True when all submitted work has completed (a stored error is kept for synchronize).
  virtual bool query() const = 0;
  // The backend's own handle: cudaStream_t on CUDA, nullptr on the host backend. Only
  // runtime/device/cuda/ and kernels/cuda/ may cast it.
  virtual void* native_handle() const = 0;
};

struct DeviceInfo {
  BackendKind backend = BackendKind::kHost;
  std::string name;        // "NVIDIA H100 80GB HBM3" or "host"
  std::string spec;        // the spec it was opened with, normalised ("cuda:0", "host:mem=...")
  int ordinal = 0;         // CUDA device index; 0 on the host backend
  std::string pci_bus_id;  // "0000:41:00.0" on CUDA; empty on the host backend
  int numa_node = -1;      // where pinned memory is bound; -1 when unknown
  std::size_t memory_capacity_bytes = 0;  // device memory cap in force
};

class Device {
 public:
  virtual ~Device() = default;
  Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  virtual const DeviceInfo& info() const = 0;
  BackendKind backend() const { return info().backend; }

  virtual std::unique_ptr<Stream> create_stream(StreamOptions options = {}) = 0;
  virtual std::unique_ptr<Event> create_event(EventOptions options = {}) = 0;

  // Allocates `bytes` (> 0) of `kind`, aligned to at least 256 bytes. Exceeding the device
  // capacity throws OutOfMemory naming the requested and free bytes. Pinned memory is bound
  // to info().numa_node. Contents are unspecified.
  Buffer allocate(MemoryKind kind, std::size_t bytes);
  virtual MemoryStats memory_stats(MemoryKind kind) const = 0;
  virtual void reset_peak(MemoryKind kind) = 0;

  // Which kind of memory [p, p+bytes) is; pageable for memory this device did not allocate.
  // Throws InvalidArgument when the range straddles the end of one of its allocations.
  virtual MemoryKind memory_kind_of(const void* p, std::size_t bytes = 1) const = 0;

  // A blocking copy between any kinds, pageable included. Returns after the data has landed
  // in dst, in every direction (stricter than cudaMemcpy, which may return before a copy from
  // pageable host memory to the device, or between device buffers, is complete), so work
  // enqueued on any stream after it sees the new bytes. Ordered after no stream's work:
  // synchronize what produces src (and what still reads or writes dst) first.
  virtual void copy(void* dst, const void* src, std::size_t bytes) = 0;
  // Blocks until every stream of this device is idle; rethrows the first stored stream error.
  virtual void synchronize() = 0;

  // The task trace, when the backend keeps one (the host backend does; nullptr otherwise).
  virtual Trace* trace() { return nullptr; }

 protected:
  virtual void* do_allocate(MemoryKind kind, std::size_t bytes) = 0;
  virtual void do_deallocate(void* p, std::size_t bytes, MemoryKind kind) noexcept = 0;

 private:
  friend class Buffer;
};

// Opens a device from a spec:
//   "auto"                      the first CUDA device if one is usable, else "host"
//   "host[:mem=SIZE][:trace]"   the host backend; mem caps its device heap (default 1GiB)
//   "cuda[:N][:mem=SIZE]"       CUDA device N (default 0); mem caps zoro's use of it
// SIZE as in parse_bytes ("256MiB"). Throws InvalidArgument for a malformed spec, an unknown
// backend or key, a zero or absurd capacity (more than the machine has); Unsupported for CUDA
// in a build without it or on a machine without a usable GPU (the message says which).
std::unique_ptr<Device> open_device(std::string_view spec);

// How many CUDA devices are usable: 0 in a build without CUDA, and 0 when the driver call
// fails for any reason (no driver, "driver version is insufficient", no device).
int cuda_device_count();
// Why cuda_device_count() is 0, for skip messages ("built without CUDA", the driver's error).
std::string cuda_unavailable_reason();

}  // namespace zoro::device
