#include "runtime/device/topology.h"

#include <hwloc.h>
#include <sys/mman.h>

#include <cstring>
#include <sstream>

#include "runtime/base/check.h"
#include "runtime/base/units.h"

namespace zoro::device {

struct Topology::Impl {
  hwloc_topology_t topo = nullptr;
  hwloc_bitmap_t allowed = nullptr;  // PUs this process may run on
};

namespace {
std::vector<int> bitmap_to_vector(hwloc_const_bitmap_t set) {
  std::vector<int> out;
  for (int i = hwloc_bitmap_first(set); i != -1; i = hwloc_bitmap_next(set, i)) out.push_back(i);
  return out;
}
}  // namespace

Topology& Topology::instance() {
  static Topology topology;
  return topology;
}

Topology::Topology() : impl_(std::make_unique<Impl>()) {
  ZORO_HWLOC_CHECK(hwloc_topology_init(&impl_->topo));
  // PCI devices are needed to find the GPU's node; keep only the important ones (cheap).
  ZORO_HWLOC_CHECK(
      hwloc_topology_set_io_types_filter(impl_->topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT));
  if (hwloc_topology_load(impl_->topo) < 0) {
    const int err = errno;
    hwloc_topology_destroy(impl_->topo);
    detail::throw_backend_error(__FILE__, __LINE__, "hwloc_topology_load", "hwloc", err,
                                std::strerror(err));
  }
  impl_->allowed = hwloc_bitmap_alloc();
  if (hwloc_get_proc_cpubind(impl_->topo, 0, impl_->allowed, HWLOC_CPUBIND_PROCESS) < 0 ||
      hwloc_bitmap_iszero(impl_->allowed)) {
    hwloc_bitmap_copy(impl_->allowed, hwloc_topology_get_allowed_cpuset(impl_->topo));
  }
  ZORO_LOG(kInfo) << "topology: " << describe();
}

Topology::~Topology() {
  hwloc_bitmap_free(impl_->allowed);
  hwloc_topology_destroy(impl_->topo);
}

int Topology::numa_node_count() const {
  const int n = hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_NUMANODE);
  return n > 0 ? n : 1;
}

int Topology::current_numa_node() const {
  hwloc_obj_t node = nullptr;
  while ((node = hwloc_get_next_obj_by_type(impl_->topo, HWLOC_OBJ_NUMANODE, node)) != nullptr) {
    if (hwloc_bitmap_intersects(node->cpuset, impl_->allowed))
      return static_cast<int>(node->logical_index);
  }
  return 0;
}

int Topology::numa_node_near_pci(std::string_view pci_bus_id) const {
  unsigned domain = 0, bus = 0, dev = 0, func = 0;
  const std::string id(pci_bus_id);
  if (std::sscanf(id.c_str(), "%x:%x:%x.%x", &domain, &bus, &dev, &func) == 4) {
    hwloc_obj_t pci = hwloc_get_pcidev_by_busid(impl_->topo, domain, bus, dev, func);
    if (pci != nullptr) {
      hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(impl_->topo, pci);
      if (anc != nullptr && anc->nodeset != nullptr) {
        hwloc_obj_t node = nullptr;
        while ((node = hwloc_get_next_obj_by_type(impl_->topo, HWLOC_OBJ_NUMANODE, node))) {
          if (hwloc_bitmap_intersects(node->nodeset, anc->nodeset)) {
            return static_cast<int>(node->logical_index);
          }
        }
      }
    }
  }
  ZORO_LOG(kInfo) << "topology: PCI device '" << pci_bus_id
                  << "' not visible to hwloc; using the process's NUMA node";
  return current_numa_node();
}

std::vector<int> Topology::allowed_cpus() const { return bitmap_to_vector(impl_->allowed); }

std::vector<int> Topology::cpus_of_numa_node(int node) const {
  hwloc_obj_t obj =
      hwloc_get_obj_by_type(impl_->topo, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(node));
  if (obj == nullptr || obj->cpuset == nullptr) return allowed_cpus();
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  hwloc_bitmap_and(set, obj->cpuset, impl_->allowed);
  std::vector<int> cpus = bitmap_to_vector(set);
  hwloc_bitmap_free(set);
  return cpus.empty() ? allowed_cpus() : cpus;
}

int Topology::allowed_core_count() const {
  int cores = 0;
  hwloc_obj_t core = nullptr;
  while ((core = hwloc_get_next_obj_by_type(impl_->topo, HWLOC_OBJ_CORE, core)) != nullptr) {
    if (hwloc_bitmap_intersects(core->cpuset, impl_->allowed)) ++cores;
  }
  return cores > 0 ? cores : hwloc_bitmap_weight(impl_->allowed);
}

void* Topology::allocate_bound(std::size_t bytes, int node) const {
  ZORO_CHECK(bytes > 0, "cannot allocate 0 bytes");
  void* p = nullptr;
  hwloc_obj_t obj = node >= 0 ? hwloc_get_obj_by_type(impl_->topo, HWLOC_OBJ_NUMANODE,
                                                      static_cast<unsigned>(node))
                              : nullptr;
  if (obj != nullptr && numa_node_count() > 1) {
    // Binding on a one-node machine is a no-op; skip it so that kernels without mbind work.
    p = hwloc_alloc_membind(impl_->topo, bytes, obj->nodeset, HWLOC_MEMBIND_BIND,
                            HWLOC_MEMBIND_BYNODESET);
  } else {
    p = hwloc_alloc(impl_->topo, bytes);
  }
  if (p == nullptr) {
    ZORO_THROW(OutOfMemory, "cannot map " << format_bytes(bytes) << " of host memory on NUMA node "
                                          << node << ": " << std::strerror(errno));
  }
  return p;
}

void Topology::free_bound(void* p, std::size_t bytes) const noexcept {
  if (p != nullptr) hwloc_free(impl_->topo, p, bytes);
}

void Topology::bind_current_thread_to_cpu(int os_cpu) const {
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  hwloc_bitmap_only(set, static_cast<unsigned>(os_cpu));
  const int rc = hwloc_set_cpubind(impl_->topo, set, HWLOC_CPUBIND_THREAD);
  const int err = errno;
  hwloc_bitmap_free(set);
  if (rc < 0) {
    detail::throw_backend_error(
        __FILE__, __LINE__, "hwloc_set_cpubind(thread)", "hwloc", err,
        std::string(std::strerror(err)) + " (cpu " + std::to_string(os_cpu) + ")");
  }
}

std::string Topology::describe() const {
  std::ostringstream out;
  out << numa_node_count() << " NUMA node(s), " << hwloc_bitmap_weight(impl_->allowed)
      << " allowed PUs, " << allowed_core_count() << " cores";
  return out.str();
}

}  // namespace zoro::device
