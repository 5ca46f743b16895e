// Placement on the machine's NUMA topology, through hwloc (../shared/DESIGN.md section 6).
//
// zoro binds pinned host memory to the NUMA node nearest the GPU and pins the CPU optimizer's
// threads to that node's cores. On a one-node machine (the usual case, and CI) every call is
// valid and placement is trivially satisfied: never an error.
//
// Thread-safe: the topology is loaded once (the first call of instance()) and read-only after.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace zoro::device {

class Topology {
 public:
  // The process-wide topology. Throws BackendError if hwloc cannot load it.
  static Topology& instance();
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  int numa_node_count() const;
  // NUMA node (logical index) nearest the PCI device "DDDD:BB:DD.F" (as cudaDeviceGetPCIBusId
  // prints it), or the process's node when hwloc does not see that device (containers often
  // hide the PCI tree): the fallback is logged at info, since it is normal.
  int numa_node_near_pci(std::string_view pci_bus_id) const;
  // The node of the CPUs this process may run on (the first, if it spans several).
  int current_numa_node() const;
  // OS indices of the processing units of `node` that this process is allowed to use, in
  // order. Never empty: falls back to all allowed PUs if the node has none allowed.
  std::vector<int> cpus_of_numa_node(int node) const;
  // All PUs this process may run on.
  std::vector<int> allowed_cpus() const;
  // Physical cores (not hyperthreads) among allowed_cpus(), counted.
  int allowed_core_count() const;

  // Allocates page-aligned memory whose pages are bound to `node` (-1: no binding). Released
  // with free_bound(p, bytes). Throws OutOfMemory (with the numbers) when the mapping fails.
  void* allocate_bound(std::size_t bytes, int node) const;
  void free_bound(void* p, std::size_t bytes) const noexcept;

  // Binds the calling thread to one PU (OS index). Throws BackendError when hwloc refuses.
  void bind_current_thread_to_cpu(int os_cpu) const;

  // A one-line summary for logs and bench headers ("1 NUMA node, 2 PUs, 2 cores").
  std::string describe() const;

 private:
  Topology();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zoro::device
