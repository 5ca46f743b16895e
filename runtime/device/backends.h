// Private to runtime/device: the factories the registry (registry.cpp) dispatches to.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "runtime/device/device.h"

namespace zoro::device {

struct HostDeviceOptions {
  std::size_t memory_capacity_bytes = std::size_t{1} << 30;
  bool trace = false;
  std::string spec;  // normalised, for DeviceInfo::spec
};
std::unique_ptr<Device> make_host_device(const HostDeviceOptions& options);

struct CudaDeviceOptions {
  int ordinal = 0;
  std::size_t memory_capacity_bytes = 0;  // 0: the GPU's total memory
  std::string spec;
};
// Defined in cuda/ (CUDA builds only).
std::unique_ptr<Device> make_cuda_device(const CudaDeviceOptions& options);
int cuda_runtime_device_count(std::string* reason);

}  // namespace zoro::device
