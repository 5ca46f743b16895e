// The device layer from Python: open_device, memory statistics, and host memory allocated
// through it (pinned on CUDA, bound to the GPU's NUMA node) or through a PinnedPool, exposed
// with the buffer protocol (1-D bytes) so that numpy.frombuffer / torch.frombuffer view it
// without a copy. A view keeps its buffer alive; a buffer keeps its pool and device alive.
// Device memory is only a pointer and a size here (no buffer protocol: the host cannot read
// it on CUDA).
#include "runtime/device/device.h"

#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "offload/pinned_pool.h"
#include "python_stub/src/bindings.h"
#include "runtime/base/units.h"

namespace zoro::python {
namespace {

using device::Buffer;
using device::Device;
using device::MemoryKind;

// Device.allocate's result: host memory (exports the buffer protocol) or device memory.
struct HostBuffer {
  Buffer buffer;
};
struct DeviceBuffer {
  Buffer buffer;
};

std::uintptr_t address(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

py::buffer_info bytes_view(void* data, std::size_t bytes) {
  return py::buffer_info(data, 1, py::format_descriptor<std::uint8_t>::format(), 1,
                         {static_cast<py::ssize_t>(bytes)}, {1});
}

}  // namespace

void bind_device(py::module_& m) {
  py::enum_<device::BackendKind>(m, "BackendKind")
      .value("HOST", device::BackendKind::kHost)
      .value("CUDA", device::BackendKind::kCuda);
  py::enum_<MemoryKind>(m, "MemoryKind")
      .value("DEVICE", MemoryKind::kDevice)
      .value("PINNED_HOST", MemoryKind::kPinnedHost)
      .value("PAGEABLE_HOST", MemoryKind::kPageableHost);

  py::class_<device::DeviceInfo>(m, "DeviceInfo")
      .def_readonly("backend", &device::DeviceInfo::backend)
      .def_readonly("name", &device::DeviceInfo::name)
      .def_readonly("spec", &device::DeviceInfo::spec)
      .def_readonly("ordinal", &device::DeviceInfo::ordinal)
      .def_readonly("pci_bus_id", &device::DeviceInfo::pci_bus_id)
      .def_readonly("numa_node", &device::DeviceInfo::numa_node)
      .def_readonly("memory_capacity_bytes", &device::DeviceInfo::memory_capacity_bytes)
      .def("__repr__", [](const device::DeviceInfo& i) {
        return "DeviceInfo(spec='" + i.spec + "', name='" + i.name + "')";
      });

  py::class_<device::MemoryStats>(m, "MemoryStats")
      .def_readonly("used_bytes", &device::MemoryStats::used_bytes)
      .def_readonly("peak_bytes", &device::MemoryStats::peak_bytes)
      .def_readonly("capacity_bytes", &device::MemoryStats::capacity_bytes)
      .def_readonly("allocations", &device::MemoryStats::allocations);

  py::class_<HostBuffer>(m, "HostBuffer", py::buffer_protocol())
      .def_property_readonly("data_ptr",
                             [](const HostBuffer& b) { return address(b.buffer.data()); })
      .def_property_readonly("bytes", [](const HostBuffer& b) { return b.buffer.bytes(); })
      .def_property_readonly("kind", [](const HostBuffer& b) { return b.buffer.kind(); })
      .def_buffer([](HostBuffer& b) { return bytes_view(b.buffer.data(), b.buffer.bytes()); });
  py::class_<DeviceBuffer>(m, "DeviceBuffer")
      .def_property_readonly("data_ptr",
                             [](const DeviceBuffer& b) { return address(b.buffer.data()); })
      .def_property_readonly("bytes", [](const DeviceBuffer& b) { return b.buffer.bytes(); })
      .def_property_readonly("kind", [](const DeviceBuffer& b) { return b.buffer.kind(); });

  py::class_<Device>(m, "Device")
      .def_property_readonly("info", &Device::info, py::return_value_policy::reference_internal)
      .def_property_readonly("backend", &Device::backend)
      .def("memory_stats", &Device::memory_stats, py::arg("kind"))
      .def("reset_peak", &Device::reset_peak, py::arg("kind"))
      .def(
          "allocate",
          [](Device& d, MemoryKind kind, std::size_t bytes) -> py::object {
            Buffer buffer = d.allocate(kind, bytes);
            if (kind == MemoryKind::kDevice) return py::cast(DeviceBuffer{std::move(buffer)});
            return py::cast(HostBuffer{std::move(buffer)});
          },
          py::arg("kind"), py::arg("bytes"), py::keep_alive<0, 1>())
      .def("synchronize", &Device::synchronize, py::call_guard<py::gil_scoped_release>())
      .def("__repr__", [](const Device& d) { return "Device('" + d.info().spec + "')"; });

  m.def("open_device", &device::open_device, py::arg("spec") = "auto",
        "Opens 'auto', 'host[:mem=SIZE][:trace]' or 'cuda[:N][:mem=SIZE]'.");
  m.def("cuda_device_count", &device::cuda_device_count);
  m.def("cuda_unavailable_reason", &device::cuda_unavailable_reason);
  m.def(
      "parse_bytes", [](const std::string& text) { return parse_bytes(text); }, py::arg("text"),
      "'256MiB' -> 268435456 (B, KiB/K, MiB/M, GiB/G, TiB/T; binary units).");
  m.def("format_bytes", &format_bytes, py::arg("bytes"));
  m.def("physical_memory_bytes", &physical_memory_bytes);

  // ---- pinned pool ----
  py::class_<offload::PinnedPoolStats>(m, "PinnedPoolStats")
      .def_readonly("budget_bytes", &offload::PinnedPoolStats::budget_bytes)
      .def_readonly("reserved_bytes", &offload::PinnedPoolStats::reserved_bytes)
      .def_readonly("in_use_bytes", &offload::PinnedPoolStats::in_use_bytes)
      .def_readonly("peak_in_use_bytes", &offload::PinnedPoolStats::peak_in_use_bytes)
      .def_readonly("chunks", &offload::PinnedPoolStats::chunks)
      .def_readonly("dedicated", &offload::PinnedPoolStats::dedicated)
      .def_readonly("blocks", &offload::PinnedPoolStats::blocks);

  py::class_<offload::PinnedBlock>(m, "PinnedBlock", py::buffer_protocol())
      .def_property_readonly("data_ptr",
                             [](const offload::PinnedBlock& b) { return address(b.data()); })
      .def_property_readonly("bytes", &offload::PinnedBlock::bytes)
      .def_property_readonly("dedicated", &offload::PinnedBlock::dedicated)
      .def_buffer([](offload::PinnedBlock& b) { return bytes_view(b.data(), b.bytes()); });

  py::class_<offload::PinnedPool>(m, "PinnedPool")
      .def(py::init([](Device& device, std::size_t budget_bytes, std::size_t chunk_bytes) {
             return std::make_unique<offload::PinnedPool>(
                 device, offload::PinnedPoolOptions{budget_bytes, chunk_bytes});
           }),
           py::arg("device"), py::kw_only(), py::arg("budget_bytes"),
           py::arg("chunk_bytes") = 256 * kMiB, py::keep_alive<1, 2>())
      .def("allocate", &offload::PinnedPool::allocate, py::arg("bytes"),
           py::arg("alignment") = offload::PinnedPool::kDefaultAlignment, py::keep_alive<0, 1>())
      .def("trim", &offload::PinnedPool::trim)
      .def("stats", &offload::PinnedPool::stats)
      .def("reset_peak", &offload::PinnedPool::reset_peak)
      .def_property_readonly("numa_node", &offload::PinnedPool::numa_node)
      .def_property_readonly("budget_bytes", &offload::PinnedPool::budget_bytes)
      .def_property_readonly("chunk_bytes", &offload::PinnedPool::chunk_bytes);
}

}  // namespace zoro::python
