// The backend registry: parses device specs and opens the backend they name. The only place
// in the device layer (besides test support) that asks whether this build has CUDA.
#include <charconv>
#include <string>
#include <vector>

#include "runtime/base/check.h"
#include "runtime/base/units.h"
#include "runtime/device/backends.h"

namespace zoro::device {

const char* to_string(BackendKind kind) {
  switch (kind) {
    case BackendKind::kHost:
      return "host";
    case BackendKind::kCuda:
      return "cuda";
  }
  return "?";
}

const char* to_string(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::kDevice:
      return "device";
    case MemoryKind::kPinnedHost:
      return "pinned host";
    case MemoryKind::kPageableHost:
      return "pageable host";
  }
  return "?";
}

int cuda_device_count() {
#if ZORO_HAS_CUDA
  return cuda_runtime_device_count(nullptr);
#else
  return 0;
#endif
}

std::string cuda_unavailable_reason() {
#if ZORO_HAS_CUDA
  std::string reason;
  if (cuda_runtime_device_count(&reason) > 0) return {};
  return reason;
#else
  return "zoro was built without CUDA (ZORO_CUDA=OFF or no CUDA toolkit at configure time)";
#endif
}

namespace {

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const auto pos = text.find(sep, start);
    parts.push_back(text.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return parts;
}

// A device-memory cap: non-zero, and no more than the machine could ever back (host: its
// physical memory; CUDA: checked against the GPU's memory when the device opens).
std::size_t parse_capacity(std::string_view spec, std::string_view value, bool host) {
  const std::size_t bytes = parse_bytes(value, "mem");
  ZORO_CHECK(bytes > 0, "device spec '" << spec << "': mem must be greater than zero");
  if (host) {
    const std::size_t ram = physical_memory_bytes();
    ZORO_CHECK(bytes <= ram, "device spec '" << spec << "': mem=" << format_bytes(bytes)
                                             << " exceeds this machine's physical memory ("
                                             << format_bytes(ram) << ")");
  }
  return bytes;
}

}  // namespace

std::unique_ptr<Device> open_device(std::string_view spec) {
  ZORO_CHECK(!spec.empty(), "empty device spec (expected auto, host[:mem=SIZE], cuda[:N])");
  if (spec == "auto") {
    return cuda_device_count() > 0 ? open_device("cuda:0") : open_device("host");
  }
  const auto parts = split(spec, ':');
  const std::string_view backend = parts[0];
  if (backend == "host") {
    HostDeviceOptions options;
    for (std::size_t i = 1; i < parts.size(); ++i) {
      const auto part = parts[i];
      const auto eq = part.find('=');
      const auto key = part.substr(0, eq);
      if (key == "mem" && eq != std::string_view::npos) {
        options.memory_capacity_bytes = parse_capacity(spec, part.substr(eq + 1), true);
      } else if (key == "trace" && eq == std::string_view::npos) {
        options.trace = true;
      } else {
        ZORO_THROW(InvalidArgument, "device spec '" << spec << "': unknown option '" << part
                                                    << "' for host (known: mem=SIZE, trace)");
      }
    }
    options.spec = "host:mem=" + std::to_string(options.memory_capacity_bytes) +
                   (options.trace ? ":trace" : "");
    return make_host_device(options);
  }
  if (backend == "cuda") {
    CudaDeviceOptions options;
    for (std::size_t i = 1; i < parts.size(); ++i) {
      const auto part = parts[i];
      const auto eq = part.find('=');
      if (i == 1 && eq == std::string_view::npos) {
        int ordinal = -1;
        auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), ordinal);
        ZORO_CHECK(ec == std::errc() && ptr == part.data() + part.size() && ordinal >= 0,
                   "device spec '" << spec << "': '" << part << "' is not a device index");
        options.ordinal = ordinal;
      } else if (part.substr(0, eq) == "mem" && eq != std::string_view::npos) {
        options.memory_capacity_bytes = parse_capacity(spec, part.substr(eq + 1), false);
      } else {
        ZORO_THROW(InvalidArgument, "device spec '" << spec << "': unknown option '" << part
                                                    << "' for cuda (known: N, mem=SIZE)");
      }
    }
    options.spec = "cuda:" + std::to_string(options.ordinal);
#if ZORO_HAS_CUDA
    return make_cuda_device(options);
#else
    ZORO_THROW(Unsupported, "device spec '" << spec << "': " << cuda_unavailable_reason());
#endif
  }
  ZORO_THROW(InvalidArgument, "device spec '" << spec << "': unknown backend '" << backend
                                              << "' (expected auto, host or cuda)");
}

// --- Buffer and Device::allocate: shared by every backend ---------------------------------

Buffer::~Buffer() { reset(); }

Buffer::Buffer(Buffer&& other) noexcept
    : owner_(other.owner_), data_(other.data_), bytes_(other.bytes_), kind_(other.kind_) {
  other.owner_ = nullptr;
  other.data_ = nullptr;
  other.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    reset();
    owner_ = other.owner_;
    data_ = other.data_;
    bytes_ = other.bytes_;
    kind_ = other.kind_;
    other.owner_ = nullptr;
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void Buffer::reset() noexcept {
  if (data_ != nullptr && owner_ != nullptr) owner_->do_deallocate(data_, bytes_, kind_);
  owner_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

Buffer Device::allocate(MemoryKind kind, std::size_t bytes) {
  ZORO_CHECK(bytes > 0, "cannot allocate 0 bytes of " << to_string(kind) << " memory");
  void* p = do_allocate(kind, bytes);
  ZORO_ASSERT(p != nullptr);
  return Buffer(this, p, bytes, kind);
}

}  // namespace zoro::device
