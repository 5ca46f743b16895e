// PLACEHOLDER — being replaced by the host backend implementation.
#include "runtime/base/check.h"
#include "runtime/device/backends.h"

namespace zoro::device {
std::unique_ptr<Device> make_host_device(const HostDeviceOptions&) {
  ZORO_THROW(Unsupported, "host backend not built yet");
}
}  // namespace zoro::device
