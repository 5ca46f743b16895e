#include "comm/mpi/mpi_communicator.h"

#include <climits>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/half.h"
#include "runtime/base/mpi_check.h"

namespace zoro::comm {
namespace {

int to_int_count(std::size_t count, const char* op) {
  ZORO_CHECK(count <= static_cast<std::size_t>(INT_MAX),
             op << ": " << count << " elements exceed MPI's int count limit " << INT_MAX);
  return static_cast<int>(count);
}

std::vector<int> to_int_counts(std::span<const std::size_t> counts, const char* op) {
  std::vector<int> out;
  out.reserve(counts.size());
  for (const std::size_t c : counts) out.push_back(to_int_count(c, op));
  to_int_count(total_count(counts), op);  // displacements are int too
  return out;
}

std::vector<int> displacements(const std::vector<int>& counts) {
  std::vector<int> displs(counts.size(), 0);
  for (std::size_t r = 1; r < counts.size(); ++r) displs[r] = displs[r - 1] + counts[r - 1];
  return displs;
}

// The MPI type that moves (not reduces) one element of `dtype`.
MPI_Datatype transport_type(DType dtype) { return dtype == DType::kF32 ? MPI_FLOAT : MPI_UINT16_T; }

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX; }

// Note [16-bit reductions]: widen to fp32, reduce, round once.
std::vector<float> widen(const void* src, std::size_t count, DType dtype) {
  std::vector<float> out(count);
  const auto* in = static_cast<const std::uint16_t*>(src);
  if (dtype == DType::kBF16) {
    for (std::size_t i = 0; i < count; ++i) out[i] = bf16_to_float(in[i]);
  } else {
    for (std::size_t i = 0; i < count; ++i) out[i] = fp16_to_float(in[i]);
  }
  return out;
}

void narrow(const std::vector<float>& src, void* dst, DType dtype) {
  auto* out = static_cast<std::uint16_t*>(dst);
  if (dtype == DType::kBF16) {
    for (std::size_t i = 0; i < src.size(); ++i) out[i] = float_to_bf16(src[i]);
  } else {
    for (std::size_t i = 0; i < src.size(); ++i) out[i] = float_to_fp16(src[i]);
  }
}

MPI_Comm duplicate(MPI_Comm parent) {
  MPI_Comm comm = MPI_COMM_NULL;
  ZORO_MPI_CHECK(MPI_Comm_dup(parent, &comm));
  ZORO_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  return comm;
}

}  // namespace

MpiCommunicator::MpiCommunicator(std::shared_ptr<MpiEnvironment> env, MPI_Comm parent)
    : env_(std::move(env)) {
  ZORO_CHECK(env_ != nullptr, "MpiCommunicator needs an MpiEnvironment");
  data_comm_ = duplicate(parent);
  try {
    control_comm_ = duplicate(parent);
    ZORO_MPI_CHECK(MPI_Comm_rank(data_comm_, &rank_));
    ZORO_MPI_CHECK(MPI_Comm_size(data_comm_, &size_));
    MPI_Comm node_comm = MPI_COMM_NULL;
    ZORO_MPI_CHECK(
        MPI_Comm_split_type(control_comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_comm));
    const int rank_status = MPI_Comm_rank(node_comm, &local_rank_);
    MPI_Comm_free(&node_comm);
    ZORO_MPI_CHECK(rank_status);
  } catch (...) {
    if (control_comm_ != MPI_COMM_NULL) MPI_Comm_free(&control_comm_);
    MPI_Comm_free(&data_comm_);
    throw;
  }
}

MpiCommunicator::~MpiCommunicator() {
  // MPI_Comm_free is collective in spirit but local in effect (it marks the communicator for
  // deallocation once pending operations finish); it cannot hang here.
  if (control_comm_ != MPI_COMM_NULL && MPI_Comm_free(&control_comm_) != MPI_SUCCESS) {
    ZORO_LOG(kWarn) << "MPI_Comm_free failed for the control communicator";
  }
  if (data_comm_ != MPI_COMM_NULL && MPI_Comm_free(&data_comm_) != MPI_SUCCESS) {
    ZORO_LOG(kWarn) << "MPI_Comm_free failed for the data communicator";
  }
}

void MpiCommunicator::abort(int code) noexcept {
  // The data communicator: it is never freed before this object dies (the control one would
  // do as well; either way the whole job ends).
  MPI_Abort(data_comm_ != MPI_COMM_NULL ? data_comm_ : MPI_COMM_WORLD, code);
}

void MpiCommunicator::reduce_scatter(const void* send, void* recv,
                                     std::span<const std::size_t> counts, DType dtype,
                                     device::Stream& stream) {
  detail::check_reduce_scatter_args(*this, send, recv, counts, dtype);
  std::vector<int> int_counts = to_int_counts(counts, "reduce_scatter");
  const std::size_t total = total_count(counts);
  const std::size_t mine = counts[static_cast<std::size_t>(rank_)];
  MPI_Comm comm = data_comm_;
  stream.launch_host_fn("mpi reduce_scatter", [=, int_counts = std::move(int_counts)] {
    if (dtype == DType::kF32) {
      ZORO_MPI_CHECK(MPI_Reduce_scatter(send, recv, int_counts.data(), MPI_FLOAT, MPI_SUM, comm));
      return;
    }
    const std::vector<float> wide_send = widen(send, total, dtype);
    std::vector<float> wide_recv(mine);
    ZORO_MPI_CHECK(MPI_Reduce_scatter(wide_send.data(), wide_recv.data(), int_counts.data(),
                                      MPI_FLOAT, MPI_SUM, comm));
    narrow(wide_recv, recv, dtype);
  });
}

void MpiCommunicator::all_gather(const void* send, void* recv, std::span<const std::size_t> counts,
                                 DType dtype, device::Stream& stream) {
  const bool in_place = detail::check_all_gather_args(*this, send, recv, counts, dtype);
  std::vector<int> int_counts = to_int_counts(counts, "all_gather");
  MPI_Comm comm = data_comm_;
  const int mine = int_counts[static_cast<std::size_t>(rank_)];
  stream.launch_host_fn("mpi all_gather", [=, int_counts = std::move(int_counts)] {
    const std::vector<int> displs = displacements(int_counts);
    const MPI_Datatype type = transport_type(dtype);
    ZORO_MPI_CHECK(MPI_Allgatherv(in_place ? MPI_IN_PLACE : send, mine, type, recv,
                                  int_counts.data(), displs.data(), type, comm));
  });
}

void MpiCommunicator::all_reduce(const void* send, void* recv, std::size_t count, DType dtype,
                                 ReduceOp op, device::Stream& stream) {
  detail::check_all_reduce_args(send, recv, count, dtype);
  const int n = to_int_count(count, "all_reduce");
  MPI_Comm comm = data_comm_;
  stream.launch_host_fn("mpi all_reduce", [=] {
    if (dtype == DType::kF32) {
      ZORO_MPI_CHECK(
          MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, n, MPI_FLOAT, mpi_op(op), comm));
      return;
    }
    std::vector<float> wide = widen(send, count, dtype);
    ZORO_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, wide.data(), n, MPI_FLOAT, mpi_op(op), comm));
    narrow(wide, recv, dtype);
  });
}

void MpiCommunicator::broadcast(void* buffer, std::size_t count, DType dtype, int root,
                                device::Stream& stream) {
  detail::check_broadcast_args(*this, buffer, count, root);
  const int n = to_int_count(count, "broadcast");
  MPI_Comm comm = data_comm_;
  stream.launch_host_fn("mpi broadcast", [=] {
    ZORO_MPI_CHECK(MPI_Bcast(buffer, n, transport_type(dtype), root, comm));
  });
}

void MpiCommunicator::barrier(device::Stream& stream) {
  MPI_Comm comm = data_comm_;
  stream.launch_host_fn("mpi barrier", [comm] { ZORO_MPI_CHECK(MPI_Barrier(comm)); });
}

void MpiCommunicator::verify_agreement(std::uint64_t fingerprint, std::string_view what) {
  std::vector<std::uint64_t> all(static_cast<std::size_t>(size_));
  ZORO_MPI_CHECK(
      MPI_Allgather(&fingerprint, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, control_comm_));
  const std::string problem = detail::describe_disagreement(all);
  ZORO_CHECK(problem.empty(), "ranks disagree on the " << what << ": " << problem);
}

void MpiCommunicator::broadcast_bytes_blocking(void* bytes, std::size_t size, int root) {
  ZORO_CHECK(root >= 0 && root < size_,
             "broadcast_bytes_blocking: root " << root << " is outside [0, " << size_ << ")");
  ZORO_MPI_CHECK(MPI_Bcast(bytes, to_int_count(size, "broadcast_bytes_blocking"), MPI_BYTE, root,
                           control_comm_));
}

}  // namespace zoro::comm
