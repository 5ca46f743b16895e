// The backends every device test runs on, and how a test skips one this machine lacks.
//
// Device tests are written once, as TEST_P over these specs:
//
//   class MyTest : public zoro::testing::BackendTest {};
//   TEST_P(MyTest, Works) { auto stream = device().create_stream(); ... }
//   INSTANTIATE_TEST_SUITE_P(AllBackends, MyTest, zoro::testing::all_backend_specs(),
//                            zoro::testing::backend_spec_name);
//
// Every spec caps the device heap at the same size (kTestDeviceCapacity), so that a capacity
// test means the same thing on each backend. A CUDA spec on a machine without a usable GPU (or
// in a build without CUDA) skips visibly, with the reason, and ctest reports it as skipped.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/units.h"
#include "runtime/device/device.h"

namespace zoro::testing {

// The device-memory cap every test spec sets.
inline constexpr std::size_t kTestDeviceCapacity = 64 * kMiB;

// {"host:mem=64MiB", "cuda:0:mem=64MiB"}: always both, so a CUDA build on a GPU machine
// runs every test on both, and a CPU-only run shows the CUDA instances as skipped.
const std::vector<std::string>& backend_specs();
// backend_specs() as a gtest parameter generator.
::testing::internal::ParamGenerator<std::string> all_backend_specs();
// "host_mem_64MiB", "cuda_0_mem_64MiB": the spec with every character gtest forbids as '_'.
std::string backend_spec_name(const ::testing::TestParamInfo<std::string>& info);

bool is_cuda_spec(std::string_view spec);
// Why `spec` cannot be opened on this machine and build; empty when it can.
std::string backend_unavailable_reason(std::string_view spec);
// GTEST_SKIP()s the current test when `spec` is unavailable. Returns normally either way, so
// in a test body use ZORO_SKIP_IF_UNAVAILABLE instead (or check IsSkipped() after it); from
// SetUp() it is enough, since gtest does not run the body of a test skipped in SetUp().
void skip_if_unavailable(std::string_view spec);

// A fixture for TEST_P over backend specs: SetUp skips an unavailable backend, else opens
// the device. Tear-down order: the test body's streams, events and buffers die before it.
class BackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override;
  void TearDown() override;
  zoro::device::Device& device() { return *device_; }
  bool is_host() const { return device_->backend() == zoro::device::BackendKind::kHost; }

 private:
  std::unique_ptr<zoro::device::Device> device_;
};

}  // namespace zoro::testing

// Skips the rest of the calling test body when `spec` is unavailable.
#define ZORO_SKIP_IF_UNAVAILABLE(spec)                                                      \
  do {                                                                                      \
    if (const std::string zoro_reason_ = ::zoro::testing::backend_unavailable_reason(spec); \
        !zoro_reason_.empty()) {                                                            \
      GTEST_SKIP() << zoro_reason_;                                                         \
    }                                                                                       \
  } while (0)
