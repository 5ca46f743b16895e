// make_communicator: the Communicator of this process, picked from how it was launched.
//
//   launched by mpirun (Open MPI's OMPI_COMM_WORLD_RANK, MPICH's PMI_RANK, PMIx's PMIX_RANK):
//       MPI gives rank, size and local rank;
//         CUDA device: NCCL, its unique id broadcast over MPI;
//         host device: MPI collectives (MpiCommunicator);
//   torchrun-style environment (RANK and WORLD_SIZE set; MASTER_ADDR, MASTER_PORT,
//   ZORO_RENDEZVOUS_TOKEN, optional LOCAL_RANK and ZORO_RENDEZVOUS_TIMEOUT_S):
//       the TCP rendezvous (comm/rendezvous/rendezvous.h) joins the ranks;
//         CUDA device: NCCL, its unique id sent by rank 0 over the rendezvous;
//         host device: only a world size of 1 works; more throws Unsupported, because the
//         host backend's collectives are MPI's (launch under mpirun instead);
//   neither (or a world of one): SelfCommunicator.
// A build without MPI (or without NCCL) refuses the launches that need it with Unsupported
// saying which library is missing.
//
// The device is opened by the caller, before: pick its ordinal with local_rank_from_environment()
// ("cuda:<local rank>"), so that each rank of a host uses its own GPU.
// Collective: every rank calls it at the same point. Errors: Unsupported, InvalidArgument
// (a malformed environment, a refused rendezvous), Error (a rendezvous timeout), BackendError.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "runtime/device/device.h"

namespace zoro::comm {

enum class LaunchKind : std::uint8_t { kSingle, kMpi, kRendezvous };
const char* to_string(LaunchKind kind);

// From the environment alone (touches neither MPI nor the network).
LaunchKind detect_launch();
// The rank among this host's ranks from the launcher's environment (OMPI_COMM_WORLD_LOCAL_RANK,
// MPI_LOCALRANKID, LOCAL_RANK); 0 when none is set.
int local_rank_from_environment();

std::unique_ptr<Communicator> make_communicator(device::Device& device);

}  // namespace zoro::comm
