// The only file of comm/ that knows which implementations this build has (ZORO_HAS_MPI,
// ZORO_HAS_NCCL are defined for it alone, comm/CMakeLists.txt).
#include "comm/bootstrap.h"

#include <charconv>
#include <cstdlib>
#include <string_view>

#include "comm/rendezvous/rendezvous.h"
#include "runtime/base/check.h"

#if ZORO_HAS_MPI
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"
#endif
#if ZORO_HAS_NCCL
#include "comm/nccl/nccl_communicator.h"
#endif

namespace zoro::comm {

const char* to_string(LaunchKind kind) {
  switch (kind) {
    case LaunchKind::kSingle:
      return "single process";
    case LaunchKind::kMpi:
      return "mpirun";
    case LaunchKind::kRendezvous:
      return "rendezvous (torchrun-style environment)";
  }
  return "?";
}

LaunchKind detect_launch() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') return LaunchKind::kMpi;
  }
  if (RendezvousOptions::present_in_environment()) return LaunchKind::kRendezvous;
  return LaunchKind::kSingle;
}

int local_rank_from_environment() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "LOCAL_RANK"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    const std::string_view s(v);
    int value = -1;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    ZORO_CHECK(ec == std::errc() && end == s.data() + s.size() && value >= 0,
               "environment variable " << name << "='" << s << "' is not a local rank");
    return value;
  }
  return 0;
}

namespace {

[[maybe_unused]] bool is_cuda(const device::Device& device) {
  return device.backend() == device::BackendKind::kCuda;
}

std::unique_ptr<Communicator> from_mpi([[maybe_unused]] device::Device& device) {
#if ZORO_HAS_MPI
  auto env = MpiEnvironment::acquire();
  if (!is_cuda(device)) return std::make_unique<MpiCommunicator>(env);
  auto mpi = std::make_shared<MpiCommunicator>(env);
#if ZORO_HAS_NCCL
  std::vector<std::uint8_t> id(NcclCommunicator::kUniqueIdBytes);
  if (mpi->rank() == 0) id = NcclCommunicator::new_unique_id();
  mpi->broadcast_bytes_blocking(id.data(), id.size(), 0);
  const int rank = mpi->rank(), size = mpi->size(), local = mpi->local_rank();
  return std::make_unique<NcclCommunicator>(
      device, rank, size, local, id,
      [mpi](std::uint64_t fp, std::string_view what) { mpi->verify_agreement(fp, what); },
      [mpi](int code) { mpi->abort(code); });
#else
  if (mpi->size() == 1) return std::make_unique<SelfCommunicator>();
  ZORO_THROW(Unsupported,
             "a CUDA device under mpirun needs NCCL for its collectives, and "
             "this build of zoro has no NCCL (rebuild with ZORO_NCCL=ON)");
#endif
#else
  ZORO_THROW(Unsupported,
             "launched by mpirun, but this build of zoro has no MPI (rebuild "
             "with ZORO_MPI=ON and libopenmpi-dev)");
#endif
}

std::unique_ptr<Communicator> from_rendezvous([[maybe_unused]] device::Device& device) {
  const RendezvousOptions options = RendezvousOptions::from_environment();
  if (options.world_size == 1) return std::make_unique<SelfCommunicator>();
  if (device.backend() == device::BackendKind::kHost) {
    ZORO_THROW(Unsupported, "host-backend collectives need MPI: a world of "
                                << options.world_size
                                << " ranks on the host backend must be launched with mpirun "
                                   "(the rendezvous only bootstraps NCCL on CUDA devices)");
  }
#if ZORO_HAS_NCCL
  std::shared_ptr<Rendezvous> rdv = Rendezvous::join(options);
  std::vector<std::uint8_t> mine;
  if (rdv->rank() == 0) mine = NcclCommunicator::new_unique_id();
  const std::vector<std::uint8_t> id = rdv->broadcast_from_rank0(mine);
  ZORO_CHECK(id.size() == NcclCommunicator::kUniqueIdBytes,
             "rank 0 sent a NCCL unique id of " << id.size() << " bytes, not "
                                                << NcclCommunicator::kUniqueIdBytes);
  return std::make_unique<NcclCommunicator>(
      device, options.rank, options.world_size, options.local_rank, id,
      [rdv](std::uint64_t fp, std::string_view what) { rdv->verify_agreement(fp, what); });
#else
  ZORO_THROW(Unsupported,
             "a multi-rank CUDA run needs NCCL, and this build of zoro has none "
             "(rebuild with ZORO_NCCL=ON)");
#endif
}

}  // namespace

std::unique_ptr<Communicator> make_communicator(device::Device& device) {
  switch (detect_launch()) {
    case LaunchKind::kMpi:
      return from_mpi(device);
    case LaunchKind::kRendezvous:
      return from_rendezvous(device);
    case LaunchKind::kSingle:
      break;
  }
  return std::make_unique<SelfCommunicator>();
}

}  // namespace zoro::comm
