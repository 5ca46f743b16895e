// MpiEnvironment: MPI initialised once per process, finalised when the last user lets go.
//
// Contract:
//   - acquire() initialises MPI with MPI_Init_thread(MPI_THREAD_MULTIPLE) the first time
//     (or adopts an MPI that someone else initialised) and returns a shared handle; every
//     MpiCommunicator holds one, so MPI outlives each of them. When the last handle dies,
//     MPI_Finalize runs, but only if acquire() initialised it.
//   - Why MPI_THREAD_MULTIPLE: on the host backend each collective runs on the worker thread
//     of the stream it was enqueued on, and different streams are different threads;
//     verify_agreement and the bootstrap call MPI from the caller's thread. Funnelling all of
//     that through one thread (MPI_THREAD_SERIALIZED) would need a private MPI thread and a
//     queue in front of it, and would add a hop to every collective. Open MPI (Debian) and
//     MPICH provide MULTIPLE; a library that grants less is refused with Unsupported naming
//     the level it gave.
//   - MPI cannot be initialised again after MPI_Finalize: acquire() then throws Unsupported.
//   - Thread: acquire() is thread-safe. Errors: BackendError for a failed MPI call.
#pragma once

#include <memory>

namespace zoro::comm {

class MpiEnvironment {
 public:
  static std::shared_ptr<MpiEnvironment> acquire();
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  // Rank and size in MPI_COMM_WORLD.
  int world_rank() const noexcept { return world_rank_; }
  int world_size() const noexcept { return world_size_; }
  // Whether this object called MPI_Init_thread (and so will call MPI_Finalize).
  bool owns_mpi() const noexcept { return owns_; }

 private:
  MpiEnvironment();
  bool owns_ = false;
  int world_rank_ = 0;
  int world_size_ = 1;
};

// True when the process was started by an MPI launcher (Open MPI's OMPI_COMM_WORLD_RANK,
// MPICH/Hydra's PMI_RANK, PMIx's PMIX_RANK). Pure environment check; does not touch MPI.
bool launched_by_mpi();

}  // namespace zoro::comm
