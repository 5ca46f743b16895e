// NcclCommunicator: the collectives of the CUDA backend (comm/communicator.h), enqueued with
// ncclReduceScatter / ncclAllGather / ncclAllReduce / ncclBroadcast on the stream's
// cudaStream_t. Built only in CUDA builds with NCCL (comm/CMakeLists.txt); make_communicator
// (comm/bootstrap.h) creates it, with the unique id sent over MPI or the rendezvous.
//
// Note [NCCL uneven shards]: NCCL's reduce-scatter and all-gather take one count for every
// rank. When the shard counts differ, the collective runs on shards padded to the largest
// count, through scratch device memory owned by the communicator:
//   reduce_scatter: zero a padded buffer of size*max elements, copy shard r of `send` to
//     slot r, reduce-scatter max elements, copy the first counts[rank] elements to `recv`;
//   all_gather: copy `send` to a max-element slot, all-gather into size*max elements, copy
//     each rank's first counts[r] elements to its place in `recv`.
// Equal counts (the common case: every shard but possibly the last is equal) skip the
// padding and call NCCL on the caller's buffers directly. The scratch grows to the largest
// padded size seen and is reused by every later call; the contract that a communicator's
// collectives are stream-ordered among themselves (communicator.h) is what makes the reuse
// safe. Growing it synchronises the device first, since the old scratch may still be in use.
//
// 16-bit types use ncclFloat16 / ncclBfloat16, whose sums NCCL accumulates in fp32.
// Thread: enqueueing is thread-safe (the scratch is guarded by a mutex). Errors: BackendError
// (NCCL, CUDA) at the call; asynchronous NCCL failures surface at stream synchronisation.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "comm/communicator.h"

struct ncclComm;

namespace zoro::comm {

class NcclCommunicator final : public Communicator {
 public:
  // sizeof(ncclUniqueId).
  static constexpr std::size_t kUniqueIdBytes = 128;
  // A fresh unique id (rank 0 makes it, the bootstrap sends it to every rank).
  static std::vector<std::uint8_t> new_unique_id();

  // How verify_agreement reaches the other ranks: the bootstrap's MPI or rendezvous (NCCL
  // traffic is stream-ordered, and a host-side check must not interleave with it).
  using AgreementFn = std::function<void(std::uint64_t fingerprint, std::string_view what)>;
  // How abort() ends the other ranks' processes after aborting NCCL: the bootstrap's MPI
  // (MpiCommunicator::abort) when MPI launched the run; empty otherwise (a rendezvous launch:
  // the peers' collectives fail once NCCL notices, and their processes end on their own).
  using AbortFn = std::function<void(int code)>;

  // Makes the current CUDA device `device`'s ordinal and joins the NCCL communicator of
  // `size` ranks identified by `unique_id` (kUniqueIdBytes). Collective: every rank calls it
  // with the same id. `device` (a CUDA device) must outlive the communicator. `agree` may be
  // empty for a world of one; `abort_launch` may be empty (abort()).
  NcclCommunicator(device::Device& device, int rank, int size, int local_rank,
                   std::span<const std::uint8_t> unique_id, AgreementFn agree,
                   AbortFn abort_launch = {});
  ~NcclCommunicator() override;

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  int local_rank() const noexcept override { return local_rank_; }
  const char* backend_name() const noexcept override { return "nccl"; }

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
  // ncclCommAbort (collectives in flight fail rather than hang; the communicator is unusable
  // after it, and the destructor no longer destroys it), then abort_launch if there is one.
  void abort(int code) noexcept override;

 private:
  // The scratch of Note [NCCL uneven shards], at least `bytes` each (caller holds mutex_).
  void ensure_scratch(std::size_t bytes);

  device::Device& device_;
  // Atomic: abort() may release it while another thread enqueues (which then fails cleanly).
  std::atomic<ncclComm*> comm_{nullptr};
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  AgreementFn agree_;
  AbortFn abort_launch_;
  std::mutex mutex_;
  device::Buffer scratch_a_;  // padded send side
  device::Buffer scratch_b_;  // padded receive side
  device::Buffer barrier_word_;
};

}  // namespace zoro::comm
