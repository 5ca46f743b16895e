// Topology (hwloc): valid on any machine, one NUMA node or many; never an error for missing
// information.
#include "runtime/device/topology.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "runtime/base/error.h"
#include "tests/device/device_test_util.h"

namespace zoro::testing {
namespace {

using zoro::device::Topology;

TEST(TopologyTest, DescribesTheMachine) {
  const Topology& topo = Topology::instance();
  EXPECT_GE(topo.numa_node_count(), 1);
  const auto allowed = topo.allowed_cpus();
  ASSERT_FALSE(allowed.empty());
  EXPECT_TRUE(std::is_sorted(allowed.begin(), allowed.end()));
  EXPECT_GE(topo.allowed_core_count(), 1);
  EXPECT_LE(topo.allowed_core_count(), static_cast<int>(allowed.size()));
  const int node = topo.current_numa_node();
  EXPECT_GE(node, 0);
  EXPECT_LT(node, topo.numa_node_count());
  const auto cpus = topo.cpus_of_numa_node(node);
  ASSERT_FALSE(cpus.empty());
  for (int cpu : cpus) {
    EXPECT_TRUE(std::binary_search(allowed.begin(), allowed.end(), cpu)) << "cpu " << cpu;
  }
  EXPECT_FALSE(topo.cpus_of_numa_node(9999).empty()) << "an unknown node falls back";
  EXPECT_CONTAINS(topo.describe(), "NUMA node");
}

TEST(TopologyTest, UnknownPciDeviceFallsBackToTheProcessNode) {
  const Topology& topo = Topology::instance();
  EXPECT_EQ(topo.numa_node_near_pci("garbage"), topo.current_numa_node());
  EXPECT_EQ(topo.numa_node_near_pci(""), topo.current_numa_node());
  EXPECT_EQ(topo.numa_node_near_pci("ffff:ff:1f.7"), topo.current_numa_node());
}

TEST(TopologyTest, BoundMemoryIsUsable) {
  const Topology& topo = Topology::instance();
  constexpr std::size_t kBytes = 3 * 4096 + 5;
  for (int node : {topo.current_numa_node(), -1}) {
    void* p = topo.allocate_bound(kBytes, node);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 4096, 0u) << "page-aligned";
    std::memset(p, 0x3C, kBytes);
    EXPECT_EQ(static_cast<unsigned char*>(p)[kBytes - 1], 0x3C);
    topo.free_bound(p, kBytes);
  }
  topo.free_bound(nullptr, 0);  // a no-op
  EXPECT_THROW((void)topo.allocate_bound(0, 0), zoro::InvalidArgument);
}

TEST(TopologyTest, BindsAThreadToOneAllowedCpu) {
  const Topology& topo = Topology::instance();
  const int cpu = topo.allowed_cpus().back();
  // On a thread of its own, so the test runner's affinity is left alone.
  bool bound_alone = false;
  std::string error;
  std::thread thread([&] {
    try {
      topo.bind_current_thread_to_cpu(cpu);
      cpu_set_t set;
      CPU_ZERO(&set);
      if (pthread_getaffinity_np(pthread_self(), sizeof set, &set) == 0) {
        bound_alone = CPU_COUNT(&set) == 1 && CPU_ISSET(cpu, &set);
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  thread.join();
  EXPECT_EQ(error, "");
  EXPECT_TRUE(bound_alone) << "the thread's affinity is not exactly cpu " << cpu;
}

TEST(TopologyTest, BindingToAnAbsentCpuIsABackendError) {
  const Topology& topo = Topology::instance();
  std::string library;
  std::thread thread([&] {
    try {
      topo.bind_current_thread_to_cpu(1 << 20);
    } catch (const zoro::BackendError& e) {
      library = e.library();
    }
  });
  thread.join();
  EXPECT_EQ(library, "hwloc");
}

}  // namespace
}  // namespace zoro::testing
