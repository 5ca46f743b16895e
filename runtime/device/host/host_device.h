// Private to runtime/device/host: the host backend's Device, Stream and Event (device.h is the
// contract; this file only says how the host backend keeps it).
//
//   - A HostStream owns one worker thread that runs its tasks in FIFO order. The queue, the
//     counters and the stored error live in a StreamCore shared with the device's list of live
//     streams, so Device::synchronize() can drain a stream that another thread is destroying
//     without touching freed memory.
//   - A HostEvent is versioned: record() allocates version v and enqueues a marker task that
//     completes v. The state (EventState) is shared with the marker and with every wait task, so
//     destroying an Event while work still refers to it is safe, as on CUDA.
//   - Memory: the device heap is 256-byte-aligned operator new, capped by the
//     AllocationRegistry; pinned memory comes from Topology::allocate_bound on the device's
//     NUMA node; pageable memory is aligned operator new, tracked for stats only.
//   - Trace: with `:trace` in the spec (or trace()->set_enabled(true)), every copy, memset and
//     host function is recorded on the track named after its stream, labelled with the host
//     function's label, copy_async_labelled's label, or "copy <bytes> B" / "memset <bytes> B".
//     Waits and event records are not traced.
//   - A stored error (Note [Stream errors]) keeps its zoro category and message, with the task
//     and stream appended; a foreign exception becomes zoro::Error with its what().
//
// Stricter than CUDA, so that code passing here is correct there: async copies and memsets
// check every range (pageable or foreign memory is refused; so are overlapping copies), and a
// synchronising call made from inside a stream task (which would deadlock, and which CUDA
// forbids) throws InvalidArgument instead of hanging.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "runtime/device/allocation_registry.h"
#include "runtime/device/backends.h"
#include "runtime/device/device.h"
#include "runtime/device/trace.h"

namespace zoro::device::host {

class HostDevice;

// Throws InvalidArgument when the calling thread is a stream worker: `what` names the
// synchronising call. See the file comment.
void check_not_on_worker(const char* what);

// One unit of stream work. `traced` tasks (copies, memsets, host functions) appear in the
// device's Trace under the stream's name and `label`.
struct Task {
  std::string label;
  std::function<void()> fn;
  bool traced = false;
};

// The part of a stream the worker thread and Device::synchronize() share. Thread-safe.
class StreamCore {
 public:
  StreamCore(std::string name, Trace* trace);
  ~StreamCore();  // stops and joins the worker (after it has run every queued task)
  StreamCore(const StreamCore&) = delete;
  StreamCore& operator=(const StreamCore&) = delete;

  const std::string& name() const { return name_; }
  void submit(Task task);
  // Blocks until every task submitted before the call has run.
  void drain();
  // Takes the stored error (Note [Stream errors]); null when none.
  std::exception_ptr take_error();
  bool idle() const;

 private:
  void run();
  void store_error(std::exception_ptr error, const std::string& label);

  const std::string name_;
  Trace* const trace_;
  mutable std::mutex mutex_;
  std::condition_variable work_cv_;  // signalled on submit and on stop
  std::condition_variable idle_cv_;  // signalled after each task completes
  std::deque<Task> queue_;
  std::uint64_t submitted_ = 0;
  std::uint64_t completed_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;  // the first error not yet rethrown
  std::thread worker_;        // last: starts once everything above is initialised
};

class HostStream final : public Stream {
 public:
  HostStream(HostDevice* device, std::string name, StreamPriority priority);
  ~HostStream() override;

  const std::string& name() const override { return core_->name(); }
  StreamPriority priority() const override { return priority_; }
  void copy_async(void* dst, const void* src, std::size_t bytes) override;
  void copy_async_labelled(std::string label, void* dst, const void* src,
                           std::size_t bytes) override;
  void memset_async(void* dst, int value, std::size_t bytes) override;
  void wait(const Event& event) override;
  void launch_host_fn(std::string label, std::function<void()> fn) override;
  void synchronize() override;
  bool query() const override;
  void* native_handle() const override { return nullptr; }

  HostDevice* device() const { return device_; }
  StreamCore& core() { return *core_; }

 private:
  HostDevice* const device_;
  const StreamPriority priority_;  // recorded only: a hint the host backend does not need
  std::shared_ptr<StreamCore> core_;
};

// The versions of one event, shared by the Event, its marker tasks and the waits on it.
struct EventState {
  std::mutex mutex;
  std::condition_variable completed_cv;
  std::uint64_t recorded = 0;          // versions handed out by record()
  std::set<std::uint64_t> pending;     // recorded versions whose marker has not run yet
  std::uint64_t latest_completed = 0;  // highest version completed so far
  std::int64_t latest_completed_ns = 0;

  bool complete_locked(std::uint64_t version) const { return pending.count(version) == 0; }
  void complete(std::uint64_t version);
  void wait_for(std::uint64_t version);
};

class HostEvent final : public Event {
 public:
  HostEvent(HostDevice* device, EventOptions options);

  void record(Stream& stream) override;
  bool query() const override;
  void synchronize() const override;
  float elapsed_ms_since(const Event& start) const override;
  std::uint64_t version() const override;

  HostDevice* device() const { return device_; }
  bool timing() const { return options_.timing; }
  const std::shared_ptr<EventState>& state() const { return state_; }

 private:
  HostDevice* const device_;
  const EventOptions options_;
  std::shared_ptr<EventState> state_;
};

class HostDevice final : public Device {
 public:
  explicit HostDevice(const HostDeviceOptions& options);
  ~HostDevice() override;

  const DeviceInfo& info() const override { return info_; }
  std::unique_ptr<Stream> create_stream(StreamOptions options) override;
  std::unique_ptr<Event> create_event(EventOptions options) override;
  MemoryStats memory_stats(MemoryKind kind) const override;
  void reset_peak(MemoryKind kind) override;
  MemoryKind memory_kind_of(const void* p, std::size_t bytes) const override;
  void copy(void* dst, const void* src, std::size_t bytes) override;
  void synchronize() override;
  Trace* trace() override { return &trace_; }

  // For HostStream: register / forget a live stream's core.
  void add_stream(const std::shared_ptr<StreamCore>& core);
  void remove_stream(const StreamCore* core) noexcept;
  // Checks that [p, p+bytes) is device or pinned memory of this device (`what` names the
  // call and the side, for the message).
  void check_async_range(const void* p, std::size_t bytes, const char* what) const;

 protected:
  void* do_allocate(MemoryKind kind, std::size_t bytes) override;
  void do_deallocate(void* p, std::size_t bytes, MemoryKind kind) noexcept override;

 private:
  DeviceInfo info_;
  AllocationRegistry registry_;
  Trace trace_;
  std::mutex streams_mutex_;
  std::vector<std::weak_ptr<StreamCore>> streams_;
  std::uint64_t streams_created_ = 0;  // guarded by streams_mutex_; names "stream<N>"
};

// Throws InvalidArgument when the ranges [a, a+bytes) and [b, b+bytes) overlap.
void check_no_overlap(const void* a, const void* b, std::size_t bytes, const char* what);

}  // namespace zoro::device::host
