// make_communicator's choice from the launch environment. These run without mpirun: they set
// and restore the torchrun-style variables (this binary's tests run one per process under
// ctest; the guard restores them anyway).
#include "comm/bootstrap.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "comm/rendezvous/rendezvous.h"
#include "runtime/base/error.h"

namespace zoro::comm {
namespace {

// Sets environment variables for a scope, restoring the previous values after.
class EnvGuard {
 public:
  void set(const char* name, const char* value) {
    const char* old = std::getenv(name);
    saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~EnvGuard() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        ::setenv(it->first.c_str(), it->second->c_str(), 1);
      } else {
        ::unsetenv(it->first.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

void clear_launch_env(EnvGuard& env) {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "RANK", "WORLD_SIZE",
                           "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "ZORO_RENDEZVOUS_TOKEN",
                           "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"}) {
    env.set(name, nullptr);
  }
}

TEST(Bootstrap, SingleProcessGetsSelf) {
  EnvGuard env;
  clear_launch_env(env);
  EXPECT_EQ(detect_launch(), LaunchKind::kSingle);
  EXPECT_EQ(local_rank_from_environment(), 0);
  auto device = device::open_device("host:mem=16MiB");
  auto comm = make_communicator(*device);
  EXPECT_EQ(comm->size(), 1);
  EXPECT_STREQ(comm->backend_name(), "self");
}

TEST(Bootstrap, TorchrunWorldOfOneGetsSelf) {
  EnvGuard env;
  clear_launch_env(env);
  env.set("RANK", "0");
  env.set("WORLD_SIZE", "1");
  env.set("MASTER_ADDR", "127.0.0.1");
  env.set("MASTER_PORT", "29500");
  EXPECT_EQ(detect_launch(), LaunchKind::kRendezvous);
  auto device = device::open_device("host:mem=16MiB");
  auto comm = make_communicator(*device);
  EXPECT_EQ(comm->size(), 1);
}

TEST(Bootstrap, HostBackendWithRendezvousNeedsMpi) {
  EnvGuard env;
  clear_launch_env(env);
  env.set("RANK", "0");
  env.set("WORLD_SIZE", "2");
  env.set("MASTER_ADDR", "127.0.0.1");
  env.set("MASTER_PORT", "29500");
  env.set("ZORO_RENDEZVOUS_TOKEN", "t");
  auto device = device::open_device("host:mem=16MiB");
  try {
    (void)make_communicator(*device);
    ADD_FAILURE() << "a 2-rank host-backend run without MPI was accepted";
  } catch (const Unsupported& e) {
    EXPECT_NE(std::string(e.what()).find("host-backend collectives need MPI"), std::string::npos)
        << e.what();
  }
}

TEST(Bootstrap, MalformedEnvironmentNamesTheVariable) {
  EnvGuard env;
  clear_launch_env(env);
  env.set("RANK", "1");
  env.set("WORLD_SIZE", "two");
  env.set("MASTER_ADDR", "127.0.0.1");
  env.set("MASTER_PORT", "29500");
  try {
    (void)RendezvousOptions::from_environment();
    ADD_FAILURE() << "accepted WORLD_SIZE=two";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("WORLD_SIZE='two'"), std::string::npos) << e.what();
  }
  env.set("WORLD_SIZE", "2");
  try {
    (void)RendezvousOptions::from_environment();
    ADD_FAILURE() << "accepted a multi-rank run without a token";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("ZORO_RENDEZVOUS_TOKEN"), std::string::npos) << e.what();
  }
  env.set("ZORO_RENDEZVOUS_TOKEN", "t");
  env.set("MASTER_PORT", "70000");
  EXPECT_THROW((void)RendezvousOptions::from_environment(), InvalidArgument);
  env.set("MASTER_PORT", "29500");
  env.set("LOCAL_RANK", "1");
  const auto o = RendezvousOptions::from_environment();
  EXPECT_EQ(o.rank, 1);
  EXPECT_EQ(o.world_size, 2);
  EXPECT_EQ(o.local_rank, 1);
  EXPECT_EQ(local_rank_from_environment(), 1);
}

TEST(Bootstrap, MpiLaunchIsDetected) {
  EnvGuard env;
  clear_launch_env(env);
  env.set("OMPI_COMM_WORLD_RANK", "0");
  EXPECT_EQ(detect_launch(), LaunchKind::kMpi);
  env.set("OMPI_COMM_WORLD_RANK", nullptr);
  env.set("PMI_RANK", "3");
  EXPECT_EQ(detect_launch(), LaunchKind::kMpi);
}

}  // namespace
}  // namespace zoro::comm
