// MpiCommunicator: the collectives of the host backend over MPI (comm/communicator.h).
//
// Each collective is enqueued as a Stream::launch_host_fn task that makes the blocking MPI
// call, so it is ordered with the copies and host "kernels" of the same stream exactly as a
// NCCL kernel is ordered on a CUDA stream. The buffers are read and written in place by MPI
// (host-backend "device" memory is host memory).
//
// Two private duplicates of the parent communicator keep traffic apart: one for the
// stream-ordered collectives, one for the blocking host-side calls (verify_agreement), so a
// host-side call can never be matched against a collective in flight on a stream worker.
// Both use MPI_ERRORS_RETURN, so a failed call becomes a BackendError (ZORO_MPI_CHECK)
// instead of MPI's default abort.
//
// Note [16-bit reductions]: MPI has no bf16/fp16 arithmetic, and a user-defined op would
// round to 16 bits at every step of MPI's reduction tree (sum of N ranks: up to log2(N) or
// N-1 roundings, and order-dependent). Instead the task widens the send buffer to an fp32
// scratch vector, reduces with MPI_FLOAT (MPI's own, optimised MPI_SUM / MPI_MAX), and rounds
// the result to 16 bits once (round to nearest even, runtime/base/half.h). That matches what
// NCCL does (fp32 accumulation), costs 2x the bytes on the wire for 16-bit reductions, and
// makes the result independent of the reduction tree up to fp32 rounding. Gathers and
// broadcasts move 16-bit values unchanged (MPI_UINT16_T).
//
// Counts: MPI counts are int; a count above INT_MAX elements is refused (InvalidArgument).
// Lifetime: destroy it after synchronizing every stream that used it; it keeps MPI alive
// (MpiEnvironment) until then.
#pragma once

#include <mpi.h>

#include <memory>

#include "comm/communicator.h"
#include "comm/mpi/mpi_environment.h"

namespace zoro::comm {

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates `parent` (default: the whole world). Collective over `parent`: every rank of it
  // must construct one. Throws BackendError for a failed MPI call.
  explicit MpiCommunicator(std::shared_ptr<MpiEnvironment> env, MPI_Comm parent = MPI_COMM_WORLD);
  ~MpiCommunicator() override;

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  int local_rank() const noexcept override { return local_rank_; }
  const char* backend_name() const noexcept override { return "mpi"; }

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
  // MPI_Abort on the data communicator: ends every process of the job (Open MPI and MPICH
  // abort all of MPI_COMM_WORLD whatever the communicator).
  void abort(int code) noexcept override;

  // Blocking, host-side: rank 0's `bytes` copied to every rank (the NCCL unique id). Every
  // rank passes a buffer of the same size. Uses the control communicator.
  void broadcast_bytes_blocking(void* bytes, std::size_t size, int root);

 private:
  std::shared_ptr<MpiEnvironment> env_;
  MPI_Comm data_comm_ = MPI_COMM_NULL;     // stream-ordered collectives
  MPI_Comm control_comm_ = MPI_COMM_NULL;  // blocking host-side calls
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
};

}  // namespace zoro::comm
