#include "comm/nccl/nccl_communicator.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "runtime/base/cuda_check.h"
#include "runtime/base/nccl_check.h"

namespace zoro::comm {
namespace {

static_assert(sizeof(ncclUniqueId) == NcclCommunicator::kUniqueIdBytes);

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF16:
      return ncclFloat16;
    case DType::kBF16:
      return ncclBfloat16;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

cudaStream_t native(device::Stream& stream) {
  void* handle = stream.native_handle();
  ZORO_CHECK(handle != nullptr, "NCCL collectives need a stream of a CUDA device; stream '"
                                    << stream.name() << "' is not one");
  return static_cast<cudaStream_t>(handle);
}

bool all_equal(std::span<const std::size_t> counts) {
  return std::adjacent_find(counts.begin(), counts.end(), std::not_equal_to<>()) == counts.end();
}

// An open ncclGroupStart/ncclGroupEnd section of this thread. A call that fails inside the
// group leaves the thread in it, and every later NCCL call of the thread would join the
// group instead of being enqueued; so the group is ended on every path, the error of a call
// inside it taking precedence over ncclGroupEnd's (which reports it again).
class NcclGroup {
 public:
  NcclGroup() { ZORO_NCCL_CHECK(ncclGroupStart()); }
  ~NcclGroup() {
    if (open_) (void)ncclGroupEnd();
  }
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;
  // Launches the group's collectives (enqueued on their streams when this returns).
  void end() {
    open_ = false;
    ZORO_NCCL_CHECK(ncclGroupEnd());
  }

 private:
  bool open_ = true;
};

// Calls op(r, offset_r) for every rank r with counts[r] > 0, in rank order, inside NCCL groups
// of at most max_ops calls (Note [NCCL uneven shards]).
template <class Op>
void grouped_per_rank(std::span<const std::size_t> counts, std::size_t max_ops, const Op& op) {
  std::size_t offset = 0;
  std::size_t in_group = 0;
  std::optional<NcclGroup> group;
  group.emplace();
  for (std::size_t r = 0; r < counts.size(); ++r) {
    if (counts[r] == 0) continue;
    if (in_group == max_ops) {
      group->end();
      group.emplace();
      in_group = 0;
    }
    op(static_cast<int>(r), offset);
    offset += counts[r];
    ++in_group;
  }
  group->end();
}

}  // namespace

std::vector<std::uint8_t> NcclCommunicator::new_unique_id() {
  ncclUniqueId id;
  ZORO_NCCL_CHECK(ncclGetUniqueId(&id));
  std::vector<std::uint8_t> bytes(kUniqueIdBytes);
  std::memcpy(bytes.data(), &id, kUniqueIdBytes);
  return bytes;
}

NcclCommunicator::NcclCommunicator(device::Device& device, int rank, int size, int local_rank,
                                   std::span<const std::uint8_t> unique_id, AgreementFn agree,
                                   AbortFn abort_launch)
    : rank_(rank),
      size_(size),
      local_rank_(local_rank),
      agree_(std::move(agree)),
      abort_launch_(std::move(abort_launch)) {
  ZORO_CHECK(device.backend() == device::BackendKind::kCuda,
             "NcclCommunicator needs a CUDA device, not " << device.info().spec);
  ZORO_CHECK(size >= 1 && rank >= 0 && rank < size,
             "NCCL rank " << rank << " is outside [0, " << size << ")");
  ZORO_CHECK(unique_id.size() == kUniqueIdBytes,
             "NCCL unique id of " << unique_id.size() << " bytes, not " << kUniqueIdBytes);
  ZORO_CHECK(size == 1 || agree_ != nullptr,
             "a NcclCommunicator of " << size << " ranks needs a way to verify agreement");
  ncclUniqueId id;
  std::memcpy(&id, unique_id.data(), kUniqueIdBytes);
  ZORO_CUDA_CHECK(cudaSetDevice(device.info().ordinal));
  ncclComm* comm = nullptr;
  ZORO_NCCL_CHECK(ncclCommInitRank(&comm, size, id, rank));
  comm_.store(comm);
  barrier_word_ = device.allocate(device::MemoryKind::kDevice, sizeof(float));
}

NcclCommunicator::~NcclCommunicator() {
  ncclComm* comm = comm_.load();
  if (comm == nullptr) return;  // never made, or abort() released it
  const ncclResult_t status = ncclCommDestroy(comm);
  if (status != ncclSuccess) {
    ZORO_LOG(kWarn) << "ncclCommDestroy failed: " << ncclGetErrorString(status);
  }
}

void NcclCommunicator::abort(int code) noexcept {
  // Guarded by nothing on purpose: abort() is called by a failing rank, possibly while
  // another thread is inside an enqueue holding mutex_, and must not wait for it. A later
  // enqueue sees no communicator and fails with a BackendError.
  if (ncclComm* comm = comm_.exchange(nullptr); comm != nullptr) {
    const ncclResult_t status = ncclCommAbort(comm);
    if (status != ncclSuccess) {
      try {
        ZORO_LOG(kWarn) << "ncclCommAbort failed: " << ncclGetErrorString(status);
      } catch (...) {  // noexcept: a failed log line must not end the process before MPI does
      }
    }
  }
  if (abort_launch_) {
    try {
      abort_launch_(code);
    } catch (...) {  // noexcept: a launcher's abort that throws leaves only this process to end
    }
  }
}

void NcclCommunicator::reduce_scatter(const void* send, void* recv,
                                      std::span<const std::size_t> counts, DType dtype,
                                      device::Stream& stream) {
  detail::check_reduce_scatter_args(*this, send, recv, counts, dtype);
  cudaStream_t s = native(stream);
  if (total_count(counts) == 0) return;
  const ncclDataType_t type = nccl_type(dtype);
  std::lock_guard lock(mutex_);
  ncclComm* comm = comm_.load();
  if (all_equal(counts)) {
    ZORO_NCCL_CHECK(ncclReduceScatter(send, recv, counts[0], type, ncclSum, comm, s));
    return;
  }
  // Note [NCCL uneven shards]: one ncclReduce per non-empty shard, rooted at its owner.
  const auto* base = static_cast<const std::byte*>(send);
  const std::size_t esize = size_of(dtype);
  grouped_per_rank(counts, kMaxGroupOps, [&](int r, std::size_t offset) {
    void* out = r == rank_ ? recv : nullptr;  // recvbuff is used on the root only
    ZORO_NCCL_CHECK(ncclReduce(base + offset * esize, out, counts[static_cast<std::size_t>(r)],
                               type, ncclSum, r, comm, s));
  });
}

void NcclCommunicator::all_gather(const void* send, void* recv, std::span<const std::size_t> counts,
                                  DType dtype, device::Stream& stream) {
  detail::check_all_gather_args(*this, send, recv, counts, dtype);
  cudaStream_t s = native(stream);
  if (total_count(counts) == 0) return;
  const ncclDataType_t type = nccl_type(dtype);
  std::lock_guard lock(mutex_);
  ncclComm* comm = comm_.load();
  if (all_equal(counts)) {
    // In place works as is: NCCL's in-place all-gather is sendbuff == recvbuff + rank * count,
    // communicator.h's in-place condition for equal counts.
    ZORO_NCCL_CHECK(ncclAllGather(send, recv, counts[0], type, comm, s));
    return;
  }
  // Note [NCCL uneven shards]: one ncclBroadcast per non-empty shard, rooted at its owner; in
  // place on the root when send is its shard of recv (sendbuff == recvbuff).
  auto* base = static_cast<std::byte*>(recv);
  const std::size_t esize = size_of(dtype);
  grouped_per_rank(counts, kMaxGroupOps, [&](int r, std::size_t offset) {
    std::byte* shard = base + offset * esize;
    const void* from = r == rank_ ? send : shard;  // sendbuff is read on the root only
    ZORO_NCCL_CHECK(
        ncclBroadcast(from, shard, counts[static_cast<std::size_t>(r)], type, r, comm, s));
  });
}

void NcclCommunicator::all_reduce(const void* send, void* recv, std::size_t count, DType dtype,
                                  ReduceOp op, device::Stream& stream) {
  detail::check_all_reduce_args(send, recv, count, dtype);
  cudaStream_t s = native(stream);
  if (count == 0) return;
  std::lock_guard lock(mutex_);
  ZORO_NCCL_CHECK(ncclAllReduce(send, recv, count, nccl_type(dtype), nccl_op(op), comm_.load(), s));
}

void NcclCommunicator::broadcast(void* buffer, std::size_t count, DType dtype, int root,
                                 device::Stream& stream) {
  detail::check_broadcast_args(*this, buffer, count, root);
  cudaStream_t s = native(stream);
  if (count == 0) return;
  std::lock_guard lock(mutex_);
  ZORO_NCCL_CHECK(ncclBroadcast(buffer, buffer, count, nccl_type(dtype), root, comm_.load(), s));
}

void NcclCommunicator::barrier(device::Stream& stream) {
  // NCCL has no barrier: a one-element all-reduce completes on no rank before every rank has
  // joined it, which is the barrier's guarantee in stream order.
  cudaStream_t s = native(stream);
  std::lock_guard lock(mutex_);
  ZORO_NCCL_CHECK(ncclAllReduce(barrier_word_.data(), barrier_word_.data(), 1, ncclFloat32, ncclSum,
                                comm_.load(), s));
}

void NcclCommunicator::verify_agreement(std::uint64_t fingerprint, std::string_view what) {
  if (size_ == 1) return;
  agree_(fingerprint, what);
}

}  // namespace zoro::comm
