// NcclCommunicator: the collectives of the CUDA backend (comm/communicator.h), enqueued with
// ncclReduceScatter / ncclAllGather / ncclAllReduce / ncclBroadcast (ncclReduce and
// ncclBroadcast for uneven shards) on the stream's cudaStream_t. Built only in CUDA builds with
// NCCL (comm/CMakeLists.txt); make_communicator (comm/bootstrap.h) creates it, with the unique id
// sent over MPI or the rendezvous.
//
// Note [NCCL uneven shards]: NCCL's ncclReduceScatter and ncclAllGather take one count for
// every rank. Equal counts (the common case) call them on the caller's buffers directly; the
// in-place all-gather is NCCL's own in-place form (sendbuff == recvbuff + rank * count, NCCL
// "In-place Operations"), which is exactly communicator.h's in-place condition when counts
// are equal. Unequal counts run as one rooted collective per rank with a non-empty shard,
// issued inside ncclGroupStart/ncclGroupEnd so that NCCL launches them together (NCCL "Group
// Calls: Aggregated Operations"; PyTorch's ProcessGroupNCCL gathers and reduce-scatters
// uneven tensors the same way):
//   reduce_scatter: for each rank r, ncclReduce(send + offset_r, r == rank ? recv : nullptr,
//     counts[r], sum, root r). recvbuff is used on the root only ("recvbuff may be NULL on
//     all calls except for root device", nccl.h); send and recv never overlap (communicator.h).
//   all_gather: for each rank r, ncclBroadcast(r == rank ? send : recv + offset_r,
//     recv + offset_r, counts[r], root r). sendbuff is read on the root only; every rank,
//     the root included, receives into recvbuff, so an out-of-place gather needs no copy and
//     the in-place one (send == recv + own offset) is a broadcast with sendbuff == recvbuff,
//     NCCL's in-place broadcast.
// Each rank then sends and receives about total_count elements (one pipelined reduce or
// broadcast of counts[r] per rank), where padding to the largest shard moved about
// size * largest (a bucket owned mostly by one rank: size times its bytes), and nothing but the
// caller's buffers is touched: no scratch, so no device memory outside the engine's memory plan.
// A rank whose count is 0 is skipped by every rank alike (counts agree on every rank); NCCL
// discards an empty collective anyway, but a zero-count shard may point one past the end of
// its buffer, which NCCL's optional pointer checks (NCCL_CHECK_POINTERS) would refuse. The rooted
// collectives touch disjoint ranges, so the order NCCL runs them in within the group does not
// matter. Groups hold at most kMaxGroupOps operations (older NCCL refuses more than 2048 per
// group); larger worlds issue several groups in rank order.
//
// 16-bit types use ncclFloat16 / ncclBfloat16, whose sums NCCL accumulates in fp32.
// Thread: every enqueue holds mutex_ (NCCL "Thread Safety": one communicator must not be
// driven by several threads at once, and a group must be issued by one thread). Errors:
// BackendError (NCCL, CUDA) at the call; a call that fails inside a group still ends the group
// (the thread would otherwise stay in it); asynchronous NCCL failures surface at stream
// synchronisation.
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
  // The most rooted collectives in one NCCL group (Note [NCCL uneven shards]).
  static constexpr std::size_t kMaxGroupOps = 1024;

  // Atomic: abort() may release it while another thread enqueues (which then fails cleanly).
  std::atomic<ncclComm*> comm_{nullptr};
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  AgreementFn agree_;
  AbortFn abort_launch_;
  std::mutex mutex_;  // held by every enqueue (NCCL calls on comm_)
  device::Buffer barrier_word_;
};

}  // namespace zoro::comm
