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
