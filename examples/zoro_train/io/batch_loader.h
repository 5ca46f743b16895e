// BatchLoader: prepares the next batches on a host thread and copies them to the device ahead
// of use, so compute waits for data only when the producer is slower than the model.
//
//   BatchLoader loader(device, task, {.batch = 16, .seq_len = 48, .seed = seed,
//                                     .first_step = start_step, .grad_accum = k});
//   for (step ...) for (micro ...) {
//     LoadedBatch b = loader.next();          // blocks only if the producer is behind
//     b.wait_ready(compute);                  // compute waits for the copy, on the device
//     forward(b.inputs, b.targets, compute);  // enqueue the work that reads the batch
//     loader.release(b, compute);             // the slot is reusable once `compute` gets here
//   }
//
// Batches come in (step, micro_step) order from first_step, micro_step 0..grad_accum-1, with
// the keys of Note [Stateless sampling] (batch_source.h): a resumed run gets the batches an
// uninterrupted one would have. For evaluation, a loader with split = kValidation,
// first_step = 0 and grad_accum = 1 yields the same M batches (keys step 0..M-1) every time.
//
// Note [Batch slot lifetime]: the loader owns a ring of `depth` slots, each a pinned host
// staging buffer and a device buffer (inputs then targets). A slot goes
//   free -> filled by the producer thread (host) -> copied on the loader's copy stream, event
//   `copied` recorded -> handed out by next() -> released by the consumer, event `released`
//   recorded on the consumer's compute stream -> free.
// Before the producer refills a slot it waits (host) for `copied` (the pinned buffer is no
// longer read), and the copy stream waits (device side) for `released`, so a copy never
// overwrites device memory that compute work enqueued before release() still reads, whatever
// the host threads do. No host thread ever waits on the compute stream.
//
// Contract: next() and release() are called from one consumer thread. next() throws
// InvalidArgument when every slot is held by the consumer (release first: waiting would
// hang), and rethrows an exception of the producer (e.g. the source's error) once the batches
// made before it have been handed out. The destructor stops and joins the producer; the
// caller must not destroy the loader while work on its compute stream still reads a batch
// that was never released (released batches are waited for). Everything goes through
// runtime/device/device.h: it runs on the CUDA and the host backends alike.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "examples/zoro_train/io/batch_source.h"
#include "runtime/device/device.h"

namespace zoro::train {

struct BatchLoaderOptions {
  Split split = Split::kTrain;
  int batch = 8;     // B
  int seq_len = 64;  // T
  std::uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
  std::int64_t first_step = 0;  // the step to start from (a resumed run's next step)
  int grad_accum = 1;           // micro-steps per step
  int depth = 3;                // ring slots, 2..4096 (grad_accum + 2 holds a whole step)
  std::string stream_name = "data";
};

// A batch on the device, valid until release(). Copyable handle; the loader owns the memory.
struct LoadedBatch {
  const std::int32_t* inputs = nullptr;        // device memory, [batch][seq_len]
  const std::int32_t* targets = nullptr;       // device memory, [batch][seq_len]
  const std::int32_t* host_inputs = nullptr;   // the pinned staging copy (same contents)
  const std::int32_t* host_targets = nullptr;  // for host-side metrics (accuracy)
  int batch = 0;
  int seq_len = 0;
  std::int64_t step = 0;
  int micro_step = 0;
  double wait_ms = 0;  // host time next() spent waiting for the producer

  // Makes `compute` wait, on the device, for this batch's copy (no host blocking).
  void wait_ready(device::Stream& compute) const;
  // Whether the copy has completed (a host query; wait_ready is what compute needs).
  bool ready() const;

 private:
  friend class BatchLoader;
  int slot_ = -1;
  std::uint64_t ticket_ = 0;
  const device::Event* copied_ = nullptr;
};

class BatchLoader {
 public:
  // Allocates depth x 2 x batch x seq_len int32 of pinned and of device memory, creates the
  // copy stream and starts the producer. `source` and `device` must outlive the loader.
  BatchLoader(device::Device& device, const BatchSource& source, BatchLoaderOptions options);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // The next batch in (step, micro_step) order; see the contract above.
  LoadedBatch next();
  // Hands the batch's slot back; its device memory is reused only after the work enqueued on
  // `compute` so far. Throws InvalidArgument for a batch not held (released twice, or not
  // from this loader).
  void release(const LoadedBatch& batch, device::Stream& compute);

  const BatchLoaderOptions& options() const { return options_; }
  // Total host time next() has waited, and batches handed out so far.
  double total_wait_ms() const { return total_wait_ms_; }
  std::int64_t batches_served() const { return served_; }
  device::Stream& copy_stream() { return *copy_stream_; }

 private:
  struct Slot {
    std::int32_t* host = nullptr;    // pinned: inputs then targets
    std::int32_t* device = nullptr;  // device: inputs then targets
    std::unique_ptr<device::Event> copied;
    std::unique_ptr<device::Event> released;
    bool held = false;  // by the consumer
    std::uint64_t ticket = 0;
  };
  struct Ready {
    int slot;
    std::int64_t step;
    int micro_step;
  };
  void produce();

  device::Device& device_;
  const BatchSource& source_;
  const BatchLoaderOptions options_;
  std::size_t slot_elems_;  // batch x seq_len
  device::Buffer pinned_;
  device::Buffer device_memory_;
  std::unique_ptr<device::Stream> copy_stream_;
  std::vector<Slot> slots_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<int> free_;      // guarded by mutex_
  std::deque<Ready> ready_;   // guarded by mutex_
  std::exception_ptr error_;  // guarded by mutex_
  bool stop_ = false;         // guarded by mutex_
  int held_ = 0;              // consumer thread only
  std::uint64_t next_ticket_ = 1;
  double total_wait_ms_ = 0;
  std::int64_t served_ = 0;
  std::thread producer_;
};

}  // namespace zoro::train
