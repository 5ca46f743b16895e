#include "comm/communicator.h"

#include <cstdio>
#include <functional>
#include <sstream>

#include "runtime/base/check.h"

namespace zoro::comm {

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

std::size_t shard_offset(std::span<const std::size_t> counts, int rank) {
  ZORO_CHECK(rank >= 0 && static_cast<std::size_t>(rank) <= counts.size(),
             "rank " << rank << " is outside [0, " << counts.size() << "]");
  std::size_t offset = 0;
  for (int r = 0; r < rank; ++r) offset += counts[static_cast<std::size_t>(r)];
  return offset;
}

std::size_t total_count(std::span<const std::size_t> counts) {
  std::size_t total = 0;
  for (const std::size_t c : counts) total += c;
  return total;
}

namespace detail {
namespace {

bool overlaps(const void* a, std::size_t a_bytes, const void* b, std::size_t b_bytes) {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const auto pa = reinterpret_cast<std::uintptr_t>(a);
  const auto pb = reinterpret_cast<std::uintptr_t>(b);
  return pa < pb + b_bytes && pb < pa + a_bytes;
}

void check_counts(const Communicator& comm, const char* op, std::span<const std::size_t> counts) {
  ZORO_CHECK(counts.size() == static_cast<std::size_t>(comm.size()),
             op << ": " << counts.size() << " counts given for " << comm.size() << " ranks");
}

}  // namespace

void check_reduce_scatter_args(const Communicator& comm, const void* send, const void* recv,
                               std::span<const std::size_t> counts, DType dtype) {
  check_counts(comm, "reduce_scatter", counts);
  const std::size_t total = total_count(counts);
  const std::size_t mine = counts[static_cast<std::size_t>(comm.rank())];
  ZORO_CHECK(total == 0 || send != nullptr,
             "reduce_scatter: null send buffer for " << total << " elements");
  ZORO_CHECK(mine == 0 || recv != nullptr,
             "reduce_scatter: null recv buffer for " << mine << " elements");
  ZORO_CHECK(!overlaps(send, total * size_of(dtype), recv, mine * size_of(dtype)),
             "reduce_scatter: send and recv buffers overlap");
}

bool check_all_gather_args(const Communicator& comm, const void* send, const void* recv,
                           std::span<const std::size_t> counts, DType dtype) {
  check_counts(comm, "all_gather", counts);
  const std::size_t total = total_count(counts);
  const std::size_t mine = counts[static_cast<std::size_t>(comm.rank())];
  ZORO_CHECK(mine == 0 || send != nullptr,
             "all_gather: null send buffer for " << mine << " elements");
  ZORO_CHECK(total == 0 || recv != nullptr,
             "all_gather: null recv buffer for " << total << " elements");
  const std::size_t esize = size_of(dtype);
  const bool in_place = recv != nullptr && send == static_cast<const std::byte*>(recv) +
                                                       shard_offset(counts, comm.rank()) * esize;
  ZORO_CHECK(in_place || !overlaps(send, mine * esize, recv, total * esize),
             "all_gather: send overlaps recv without being this rank's shard of it (in place)");
  return in_place;
}

void check_all_reduce_args(const void* send, const void* recv, std::size_t count, DType dtype) {
  ZORO_CHECK(count == 0 || (send != nullptr && recv != nullptr),
             "all_reduce: null buffer for " << count << " elements");
  ZORO_CHECK(send == recv || !overlaps(send, count * size_of(dtype), recv, count * size_of(dtype)),
             "all_reduce: send and recv overlap without being the same buffer (in place)");
}

void check_broadcast_args(const Communicator& comm, const void* buffer, std::size_t count,
                          int root) {
  ZORO_CHECK(root >= 0 && root < comm.size(),
             "broadcast: root " << root << " is outside [0, " << comm.size() << ")");
  ZORO_CHECK(count == 0 || buffer != nullptr,
             "broadcast: null buffer for " << count << " elements");
}

std::string describe_disagreement(std::span<const std::uint64_t> fingerprints) {
  if (fingerprints.empty()) return {};
  std::ostringstream ranks;
  std::ostringstream values;
  bool any = false;
  const auto hex = [](std::uint64_t v) {
    char text[24];
    std::snprintf(text, sizeof text, "0x%016llx", static_cast<unsigned long long>(v));
    return std::string(text);
  };
  values << "rank 0 has " << hex(fingerprints[0]);
  for (std::size_t r = 1; r < fingerprints.size(); ++r) {
    if (fingerprints[r] == fingerprints[0]) continue;
    ranks << (any ? ", " : "") << r;
    values << ", rank " << r << " has " << hex(fingerprints[r]);
    any = true;
  }
  if (!any) return {};
  return "rank(s) " + ranks.str() + " disagree with rank 0: " + values.str();
}

}  // namespace detail

// ---- SelfCommunicator ----------------------------------------------------------------------

void SelfCommunicator::reduce_scatter(const void* send, void* recv,
                                      std::span<const std::size_t> counts, DType dtype,
                                      device::Stream& stream) {
  detail::check_reduce_scatter_args(*this, send, recv, counts, dtype);
  if (counts[0] > 0) stream.copy_async(recv, send, counts[0] * size_of(dtype));
}

void SelfCommunicator::all_gather(const void* send, void* recv, std::span<const std::size_t> counts,
                                  DType dtype, device::Stream& stream) {
  const bool in_place = detail::check_all_gather_args(*this, send, recv, counts, dtype);
  if (!in_place && counts[0] > 0) stream.copy_async(recv, send, counts[0] * size_of(dtype));
}

void SelfCommunicator::all_reduce(const void* send, void* recv, std::size_t count, DType dtype,
                                  ReduceOp /*op*/, device::Stream& stream) {
  detail::check_all_reduce_args(send, recv, count, dtype);
  if (send != recv && count > 0) stream.copy_async(recv, send, count * size_of(dtype));
}

void SelfCommunicator::broadcast(void* buffer, std::size_t count, DType /*dtype*/, int root,
                                 device::Stream& /*stream*/) {
  detail::check_broadcast_args(*this, buffer, count, root);
}

void SelfCommunicator::barrier(device::Stream& /*stream*/) {}

void SelfCommunicator::verify_agreement(std::uint64_t /*fingerprint*/, std::string_view /*what*/) {}

}  // namespace zoro::comm
