// CpuExecutor: the persistent, pinned oneTBB thread team that runs the CPU optimizers.
//
// Contract:
// - Owns one tbb::task_arena of `threads` slots, one of them for the calling thread: a call
//   runs on the caller plus threads-1 TBB workers. A tbb::task_scheduler_observer binds every
//   thread, when it enters the arena, to one PU of the NUMA node given in Options (hwloc,
//   through device::Topology) — thread slot k to the k-th PU of that node, modulo their
//   number — and restores the thread's previous affinity when it leaves, so the caller's own
//   affinity is unchanged after each call. On a one-node machine this is a plain pinning.
//   A failed binding is logged (warn) once and the work still runs: placement is speed only.
// - run_chunked() covers [range.begin, range.end) in consecutive chunks of chunk_elems
//   (the last may be shorter), in increasing order. Each chunk is split over the threads;
//   when a chunk is completely written, on_chunk_done(chunk) is called ON THE CALLING THREAD,
//   in chunk order, exactly once per chunk, before the next chunk starts. So the callback
//   may enqueue an asynchronous copy of that chunk (it is safe to read its outputs) and
//   should return quickly: the next chunk is not started until it returns. If the body or
//   the callback throws, run_chunked stops after that chunk and rethrows; later chunks are
//   not touched.
// - Several threads may call run_chunked() on one executor at once: they share its threads.
//   The executor must outlive every call; destroying it waits for nothing (no call may be in
//   flight).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace zoro::optim {

// A half-open element range [begin, end).
struct Range {
  std::size_t begin = 0;
  std::size_t end = 0;
  std::size_t size() const noexcept { return end - begin; }
  friend bool operator==(const Range&, const Range&) = default;
};

// Called when a chunk's outputs are complete; see the contract above.
using ChunkDone = std::function<void(Range chunk)>;

class CpuExecutor {
 public:
  struct Options {
    // Threads in the team, the caller included; 0 means one per PU of numa_node.
    int threads = 0;
    // NUMA node whose PUs the threads are pinned to; -1 means the process's current node.
    // The engine passes Topology::numa_node_near_pci(<the GPU's bus id>).
    int numa_node = -1;
    // false: no binding at all (the threads float).
    bool pin_threads = true;
    // Elements per parallel task inside a chunk (work-stealing granularity). Only speed
    // depends on it: results never do.
    std::size_t grain_elems = std::size_t{1} << 15;
  };

  explicit CpuExecutor(Options options);
  CpuExecutor() : CpuExecutor(Options{}) {}
  ~CpuExecutor();
  CpuExecutor(const CpuExecutor&) = delete;
  CpuExecutor& operator=(const CpuExecutor&) = delete;

  int threads() const noexcept;
  // The PUs (OS indices) the threads are pinned to, in slot order; empty when not pinning.
  const std::vector<int>& cpus() const noexcept;
  int numa_node() const noexcept;

  // Runs body(sub-range) over every element of each chunk, in parallel; see the contract.
  // chunk_elems == 0 means the whole range as one chunk. body must be thread-safe and
  // write only the elements of the sub-range it is given.
  void run_chunked(Range range, std::size_t chunk_elems, const std::function<void(Range)>& body,
                   const ChunkDone& on_chunk_done);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zoro::optim
