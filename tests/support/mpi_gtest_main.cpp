// The GoogleTest main of tests launched by mpirun (tests/comm/CMakeLists.txt).
//
// Every rank runs every test. The exit status is all-reduced (max) so that a failure on any
// rank fails every rank, and mpirun, and ctest. Rank 0 prints gtest's usual report; the other
// ranks print only their failures, each line prefixed "[rank r]", so a failure that happens on
// rank 2 alone is still visible.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <memory>

#include "comm/mpi/mpi_environment.h"

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n[rank %d] %s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(), rank_,
                 result.summary());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int status = 1;
  {
    std::shared_ptr<zoro::comm::MpiEnvironment> env;
    try {
      env = zoro::comm::MpiEnvironment::acquire();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "cannot initialise MPI: %s\n", e.what());
      return 1;
    }
    const int rank = env->world_rank();
    if (rank != 0) {
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
      listeners.Append(new RankFailurePrinter(rank));
    }
    const int local = RUN_ALL_TESTS();
    if (MPI_Allreduce(&local, &status, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS) {
      status = 1;
    }
    if (rank == 0 && status != 0 && local == 0) {
      std::fprintf(stderr, "a test failed on another rank (see the [rank r] lines)\n");
    }
  }  // MPI_Finalize when env goes
  return status;
}
