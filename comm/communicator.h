// zoro::comm::Communicator: the backend-neutral collectives of a data-parallel run
// (../shared/DESIGN.md section 5).
//
// Implementations:
//   - comm/nccl/  NCCL on the CUDA backend: each collective is enqueued on the stream's
//                 cudaStream_t;
//   - comm/mpi/   MPI on the host backend: each collective runs as a Stream::launch_host_fn
//                 task, so it is ordered with the copies and "kernels" of that stream;
//   - SelfCommunicator (below) for a run of one rank, on either backend.
// make_communicator (comm/bootstrap.h) picks one from the launch environment.
//
// Contract common to every collective:
//   - Stream-ordered: the call validates its arguments, enqueues the collective on `stream`
//     and returns. The collective sees every earlier piece of work of `stream`, and later work
//     of `stream` sees its result. The caller keeps the buffers alive and unmodified until
//     then (synchronize the stream, or record an event after the call and wait for it).
//   - Buffers are device memory (Device::allocate(kDevice)) of the device that made `stream`.
//     (The MPI implementation accepts any host memory, but code written against this
//     interface must not rely on it: NCCL reads device memory only.)
//   - Counts are in elements of `dtype`, never bytes. Sums of 16-bit types are accumulated in
//     fp32 at least and rounded once (NCCL natively; MPI widens to fp32 buffers), so a sum
//     over N ranks matches an fp32 reference rounded to the 16-bit type, up to reduction
//     order (comm/mpi/mpi_communicator.h, Note [16-bit reductions]).
//   - Every rank calls the same collectives in the same order with matching arguments
//     (dtype, counts, root). Collectives of one Communicator must be ordered among themselves
//     on every rank: issue them on one stream, or order their streams with events. (NCCL and
//     MPI both match collectives by issue order; two unordered streams could issue them in
//     different orders on different ranks and deadlock.)
//   - Errors: bad arguments throw InvalidArgument at the call and enqueue nothing. A failure
//     of the collective itself (an MPI or NCCL error) is a BackendError, raised at the call
//     when detected at enqueue time, else stored in the stream and rethrown by its next
//     synchronize() (runtime/device/device.h, Note [Stream errors]).
//   - Thread: any host thread may call; the enqueueing itself is thread-safe.
//
// Shards: reduce_scatter and all_gather take `counts`, one element count per rank, that may
// differ (the last shard of a flat buffer is usually shorter). The full buffer is the
// concatenation of the shards in rank order: rank r's shard starts at element
// shard_offset(counts, r).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "runtime/base/dtype.h"
#include "runtime/device/device.h"

namespace zoro::comm {

enum class ReduceOp : std::uint8_t { kSum, kMax };
const char* to_string(ReduceOp op);

// The first element of rank `rank`'s shard: the sum of counts[0..rank).
std::size_t shard_offset(std::span<const std::size_t> counts, int rank);
// The sum of all counts.
std::size_t total_count(std::span<const std::size_t> counts);

class Communicator {
 public:
  virtual ~Communicator() = default;  // synchronize the streams that used it first
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // This process's rank in [0, size()), the number of ranks, and the rank among the ranks
  // of this host (it picks the GPU). Constant for the communicator's life; never throw.
  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  virtual int local_rank() const noexcept = 0;
  // "nccl", "mpi" or "self": for logs and errors.
  virtual const char* backend_name() const noexcept = 0;

  // Sums the full buffers `send` (total_count(counts) elements, the same length on every
  // rank) over all ranks and leaves shard rank() of the sum in `recv` (counts[rank()]
  // elements). counts.size() == size(). `send` and `recv` must not overlap.
  virtual void reduce_scatter(const void* send, void* recv, std::span<const std::size_t> counts,
                              DType dtype, device::Stream& stream) = 0;

  // Gathers every rank's shard into the full buffer: `send` (counts[rank()] elements) lands
  // in `recv` (total_count(counts) elements) at shard_offset(counts, rank()), and so does
  // every other rank's. In place when send == recv + shard_offset(counts, rank()) elements
  // (the ZeRO case: each rank's updated shard already sits in the full buffer); any other
  // overlap is refused.
  virtual void all_gather(const void* send, void* recv, std::span<const std::size_t> counts,
                          DType dtype, device::Stream& stream) = 0;

  // Reduces `count` elements of `send` over all ranks with `op` into `recv` on every rank.
  // send == recv is in place; any other overlap is refused. kMax serves flags (overflow
  // seen anywhere) and maxima; kSum norms and losses.
  virtual void all_reduce(const void* send, void* recv, std::size_t count, DType dtype, ReduceOp op,
                          device::Stream& stream) = 0;

  // Copies `count` elements of `buffer` on rank `root` into `buffer` on every other rank.
  virtual void broadcast(void* buffer, std::size_t count, DType dtype, int root,
                         device::Stream& stream) = 0;

  // Work of `stream` enqueued after the barrier starts only once every rank has reached the
  // barrier in its own stream. To block the host too, synchronize the stream after it.
  virtual void barrier(device::Stream& stream) = 0;

  // Blocking, host-side (not stream-ordered; not to be called from a stream task): checks
  // that every rank passed the same `fingerprint` (of a config, a model, a world layout)
  // and throws InvalidArgument naming `what`, the ranks that disagree with rank 0, and both
  // values otherwise. Every rank must call it; every rank throws when any disagrees.
  virtual void verify_agreement(std::uint64_t fingerprint, std::string_view what) = 0;

  // Ends the run on every rank, for a rank that has failed and cannot keep its place in the
  // collective sequence (the others would wait for it forever): MPI aborts the job
  // (MPI_Abort(comm, code), which ends every rank's process with `code`; this call does not
  // return); NCCL aborts its communicator (ncclCommAbort: collectives in flight on any stream
  // fail instead of hanging) and then the MPI job when MPI launched the run; a world of one
  // (SelfCommunicator) has no one waiting, so it does nothing and returns, and the caller exits
  // as it would have anyway. The caller prints its error first (nothing is printed here but
  // what MPI prints). Any thread; never throws. Not for a clean shutdown: ranks that finished
  // normally just destroy their communicators.
  virtual void abort(int code) noexcept = 0;
};

// The communicator of a run with a single rank, on any backend: reductions and gathers
// are copies (Stream::copy_async, skipped in place), broadcast and barrier are no-ops.
// A real implementation, used whenever the launch environment has one rank.
class SelfCommunicator final : public Communicator {
 public:
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  int local_rank() const noexcept override { return 0; }
  const char* backend_name() const noexcept override { return "self"; }
  void reduce_scatter(const void* send, void* recv, std::span<const std::size_t> counts,
                      DType dtype, device::Stream& stream) override;
  void all_gather(const void* send, void* recv, std::span<const std::size_t> counts, DType dtype,
                  device::Stream& stream) override;
  void all_reduce(const void* send, void* recv, std::size_t count, DType dtype, ReduceOp op,
                  device::Stream& stream) override;
  void broadcast(void* buffer, std::size_t count, DType dtype, int root,
                 device::Stream& stream) override;
  void barrier(device::Stream& stream) override;
  void verify_agreement(std::uint64_t fingerprint, std::string_view what) override;
  void abort(int /*code*/) noexcept override {}
};

namespace detail {
// Argument checks shared by the implementations; each throws InvalidArgument naming the
// collective and the problem.
void check_reduce_scatter_args(const Communicator& comm, const void* send, const void* recv,
                               std::span<const std::size_t> counts, DType dtype);
// Returns true when the gather is in place (send == recv + own offset).
bool check_all_gather_args(const Communicator& comm, const void* send, const void* recv,
                           std::span<const std::size_t> counts, DType dtype);
void check_all_reduce_args(const void* send, const void* recv, std::size_t count, DType dtype);
void check_broadcast_args(const Communicator& comm, const void* buffer, std::size_t count,
                          int root);
// "ranks 2, 3 disagree with rank 0: rank 0 has 0x..., rank 2 has 0x..., ..." or empty when
// all fingerprints agree. fingerprints[r] is rank r's.
std::string describe_disagreement(std::span<const std::uint64_t> fingerprints);
}  // namespace detail

}  // namespace zoro::comm
