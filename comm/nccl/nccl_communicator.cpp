#include "comm/nccl/nccl_communicator.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

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
    : device_(device),
      rank_(rank),
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

void NcclCommunicator::ensure_scratch(std::size_t bytes) {
  if (scratch_a_.bytes() >= bytes && scratch_b_.bytes() >= bytes) return;
  // The old scratch may still be read by work in flight (Note [NCCL uneven shards]).
  device_.synchronize();
  scratch_a_.reset();
  scratch_b_.reset();
  scratch_a_ = device_.allocate(device::MemoryKind::kDevice, bytes);
  scratch_b_ = device_.allocate(device::MemoryKind::kDevice, bytes);
}

void NcclCommunicator::reduce_scatter(const void* send, void* recv,
                                      std::span<const std::size_t> counts, DType dtype,
                                      device::Stream& stream) {
  detail::check_reduce_scatter_args(*this, send, recv, counts, dtype);
  cudaStream_t s = native(stream);
  const std::size_t esize = size_of(dtype);
  const std::size_t max = *std::max_element(counts.begin(), counts.end());
  if (max == 0) return;
  if (all_equal(counts)) {
    ZORO_NCCL_CHECK(ncclReduceScatter(send, recv, max, nccl_type(dtype), ncclSum, comm_, s));
    return;
  }
  std::lock_guard lock(mutex_);
  const std::size_t n = static_cast<std::size_t>(size_);
  ensure_scratch(n * max * esize);
  auto* padded = scratch_a_.as<std::byte>();
  auto* shard = scratch_b_.as<std::byte>();
  stream.memset_async(padded, 0, n * max * esize);
  std::size_t offset = 0;
  for (std::size_t r = 0; r < n; ++r) {
    if (counts[r] > 0) {
      stream.copy_async(padded + r * max * esize,
                        static_cast<const std::byte*>(send) + offset * esize, counts[r] * esize);
    }
    offset += counts[r];
  }
  ZORO_NCCL_CHECK(ncclReduceScatter(padded, shard, max, nccl_type(dtype), ncclSum, comm_, s));
  const std::size_t mine = counts[static_cast<std::size_t>(rank_)];
  if (mine > 0) stream.copy_async(recv, shard, mine * esize);
}

void NcclCommunicator::all_gather(const void* send, void* recv, std::span<const std::size_t> counts,
                                  DType dtype, device::Stream& stream) {
  detail::check_all_gather_args(*this, send, recv, counts, dtype);
  cudaStream_t s = native(stream);
  const std::size_t esize = size_of(dtype);
  const std::size_t max = *std::max_element(counts.begin(), counts.end());
  if (max == 0) return;
  if (all_equal(counts)) {
    // In place works as is: NCCL accepts sendbuff == recvbuff + rank * count.
    ZORO_NCCL_CHECK(ncclAllGather(send, recv, max, nccl_type(dtype), comm_, s));
    return;
  }
  std::lock_guard lock(mutex_);
  const std::size_t n = static_cast<std::size_t>(size_);
  ensure_scratch(n * max * esize);
  auto* slot = scratch_a_.as<std::byte>();
  auto* gathered = scratch_b_.as<std::byte>();
  const std::size_t mine = counts[static_cast<std::size_t>(rank_)];
  if (mine > 0) stream.copy_async(slot, send, mine * esize);
  ZORO_NCCL_CHECK(ncclAllGather(slot, gathered, max, nccl_type(dtype), comm_, s));
  std::size_t offset = 0;
  for (std::size_t r = 0; r < n; ++r) {
    if (counts[r] > 0) {
      stream.copy_async(static_cast<std::byte*>(recv) + offset * esize, gathered + r * max * esize,
                        counts[r] * esize);
    }
    offset += counts[r];
  }
}

void NcclCommunicator::all_reduce(const void* send, void* recv, std::size_t count, DType dtype,
                                  ReduceOp op, device::Stream& stream) {
  detail::check_all_reduce_args(send, recv, count, dtype);
  cudaStream_t s = native(stream);
  if (count == 0) return;
  ZORO_NCCL_CHECK(ncclAllReduce(send, recv, count, nccl_type(dtype), nccl_op(op), comm_, s));
}

void NcclCommunicator::broadcast(void* buffer, std::size_t count, DType dtype, int root,
                                 device::Stream& stream) {
  detail::check_broadcast_args(*this, buffer, count, root);
  cudaStream_t s = native(stream);
  if (count == 0) return;
  ZORO_NCCL_CHECK(ncclBroadcast(buffer, buffer, count, nccl_type(dtype), root, comm_, s));
}

void NcclCommunicator::barrier(device::Stream& stream) {
  // NCCL has no barrier: a one-element all-reduce completes on no rank before every rank has
  // joined it, which is the barrier's guarantee in stream order.
  cudaStream_t s = native(stream);
  ZORO_NCCL_CHECK(
      ncclAllReduce(barrier_word_.data(), barrier_word_.data(), 1, ncclFloat32, ncclSum, comm_, s));
}

void NcclCommunicator::verify_agreement(std::uint64_t fingerprint, std::string_view what) {
  if (size_ == 1) return;
  agree_(fingerprint, what);
}

}  // namespace zoro::comm
