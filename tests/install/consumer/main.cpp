// Links zoro from its install tree and uses the public API end to end: open the host
// backend, allocate device and pinned memory from a pinned pool, copy on a stream, check.
#include <cstdio>
#include <cstring>
#include <vector>

#include "offload/pinned_pool.h"
#include "runtime/base/error.h"
#include "runtime/device/device.h"

int main() {
  try {
    auto device = zoro::device::open_device("host:mem=16MiB");
    zoro::offload::PinnedPool pool(*device, {.budget_bytes = 8u << 20, .chunk_bytes = 4u << 20});
    auto pinned = pool.allocate(4096);
    auto on_device = device->allocate(zoro::device::MemoryKind::kDevice, 4096);
    auto stream = device->create_stream({.name = "copy"});
    std::memset(pinned.data(), 0x5a, 4096);
    stream->copy_async(on_device.data(), pinned.data(), 4096);
    std::vector<unsigned char> back(4096);
    stream->synchronize();
    device->copy(back.data(), on_device.data(), 4096);
    for (unsigned char b : back) {
      if (b != 0x5a) {
        std::fprintf(stderr, "consumer: copy mismatch\n");
        return 1;
      }
    }
    try {
      (void)zoro::device::open_device("host:mem=0");
      std::fprintf(stderr, "consumer: bad spec accepted\n");
      return 1;
    } catch (const zoro::InvalidArgument&) {
    }
    std::printf("consumer: linked zoro from the install tree, copy verified\n");
    return 0;
  } catch (const zoro::Error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
