#include "tests/support/backends.h"

#include <cctype>

namespace zoro::testing {

const std::vector<std::string>& backend_specs() {
  static const std::vector<std::string> specs = {
      "host:mem=" + std::to_string(kTestDeviceCapacity / kMiB) + "MiB",
      "cuda:0:mem=" + std::to_string(kTestDeviceCapacity / kMiB) + "MiB",
  };
  return specs;
}

::testing::internal::ParamGenerator<std::string> all_backend_specs() {
  return ::testing::ValuesIn(backend_specs());
}

std::string backend_spec_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0) c = '_';
  }
  // '=' next to ':' would give "__"; collapse runs so names stay readable.
  std::string out;
  for (char c : name) {
    if (c == '_' && !out.empty() && out.back() == '_') continue;
    out += c;
  }
  return out;
}

bool is_cuda_spec(std::string_view spec) { return spec.substr(0, 4) == "cuda"; }

std::string backend_unavailable_reason(std::string_view spec) {
  if (!is_cuda_spec(spec)) return {};
#if ZORO_HAS_CUDA
  if (zoro::device::cuda_device_count() > 0) return {};
#endif
  return "no usable CUDA device for '" + std::string(spec) +
         "': " + zoro::device::cuda_unavailable_reason();
}

void skip_if_unavailable(std::string_view spec) {
  if (const std::string reason = backend_unavailable_reason(spec); !reason.empty()) {
    GTEST_SKIP() << reason;
  }
}

void BackendTest::SetUp() {
  skip_if_unavailable(GetParam());
  if (IsSkipped()) return;
  device_ = zoro::device::open_device(GetParam());
}

void BackendTest::TearDown() { device_.reset(); }

}  // namespace zoro::testing

// LeakSanitizer (the ZORO_SANITIZER=address build) reports ~1 KiB that a discovery plugin of hwloc
// allocates while Topology loads (once per process) and never frees. It is not ours to fix;
// suppressing exactly that keeps every real leak of a test binary that opens a device visible.
// The suppression matches a frame below the plugin, which was unloaded by exit, so the stack
// must be unwound without frame pointers (slower mallocs; ASAN_OPTIONS can still override).
// Sanitizers call these hooks by name; other builds never do.
extern "C" const char* __lsan_default_suppressions();
//
// oneTBB: unregistering a task_scheduler_observer (observe(false), which CpuExecutor does before
// its arena dies) drops oneTBB's internal proxy by reference count; a worker still parked
// inside the arena's observer list may hold the last reference at exit, so LSan sometimes
// sees that 40-byte proxy as lost. Ours is unregistered; the proxy is oneTBB's to free.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:hwloc_topology_load\nleak:tbb::detail::r1::observe\n";
}
extern "C" const char* __asan_default_options();
extern "C" const char* __asan_default_options() { return "fast_unwind_on_malloc=0"; }
