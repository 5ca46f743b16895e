#include "comm/mpi/mpi_environment.h"

#include <cstdlib>
#include <mutex>

#include "runtime/base/mpi_check.h"

namespace zoro::comm {
namespace {

std::mutex g_mutex;
std::weak_ptr<MpiEnvironment> g_environment;  // guarded by g_mutex

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
    default:
      return "an unknown level";
  }
}

}  // namespace

std::shared_ptr<MpiEnvironment> MpiEnvironment::acquire() {
  std::lock_guard lock(g_mutex);
  if (auto existing = g_environment.lock()) return existing;
  std::shared_ptr<MpiEnvironment> env(new MpiEnvironment());
  g_environment = env;
  return env;
}

MpiEnvironment::MpiEnvironment() {
  int finalized = 0;
  ZORO_MPI_CHECK(MPI_Finalized(&finalized));
  ZORO_CHECK_T(Unsupported, !finalized,
               "MPI was already finalised in this process and cannot be initialised again");
  int initialized = 0;
  ZORO_MPI_CHECK(MPI_Initialized(&initialized));
  int provided = MPI_THREAD_SINGLE;
  if (initialized) {
    ZORO_MPI_CHECK(MPI_Query_thread(&provided));
  } else {
    ZORO_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
    owns_ = true;
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    if (owns_) MPI_Finalize();
    owns_ = false;
    ZORO_THROW(Unsupported,
               "zoro's MPI collectives need MPI_THREAD_MULTIPLE (they run on "
               "stream worker threads) but the MPI library provides "
                   << thread_level_name(provided));
  }
  ZORO_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
  ZORO_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
}

MpiEnvironment::~MpiEnvironment() {
  if (!owns_) return;
  int finalized = 0;
  if (MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) {
    if (MPI_Finalize() != MPI_SUCCESS) {
      ZORO_LOG(kWarn) << "MPI_Finalize failed";
    }
  }
}

bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') return true;
  }
  return false;
}

}  // namespace zoro::comm
