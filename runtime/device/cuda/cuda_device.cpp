// PLACEHOLDER (the CUDA-backend helper replaces this)
#include "runtime/base/check.h"
#include "runtime/device/backends.h"
namespace zoro::device {
std::unique_ptr<Device> make_cuda_device(const CudaDeviceOptions&) { ZORO_THROW(Unsupported, "todo"); }
int cuda_runtime_device_count(std::string* reason) { if (reason) *reason = "todo"; return 0; }
}  // namespace zoro::device
