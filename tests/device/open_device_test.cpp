// open_device: the spec grammar, its normalisation, and every way a spec can be wrong.
#include <ostream>
#include <string>

#include "runtime/base/error.h"
#include "runtime/base/units.h"
#include "runtime/device/trace.h"
#include "tests/device/device_test_util.h"
#include "tests/support/backends.h"

namespace zoro::testing {
namespace {

using zoro::device::BackendKind;
using zoro::device::open_device;

struct BadSpec {
  const char* spec;
  const char* problem;  // what the message must name
};

// Shown by gtest (and ctest's test list) instead of the struct's raw bytes.
void PrintTo(const BadSpec& bad, std::ostream* out) { *out << "'" << bad.spec << "'"; }

class BadSpecTest : public ::testing::TestWithParam<BadSpec> {};

TEST_P(BadSpecTest, IsRefusedNamingTheProblem) {
  const BadSpec& bad = GetParam();
  const std::string what =
      thrown_message<zoro::InvalidArgument>([&] { (void)open_device(bad.spec); });
  EXPECT_CONTAINS(what, bad.problem);
}

INSTANTIATE_TEST_SUITE_P(
    Specs, BadSpecTest,
    ::testing::Values(BadSpec{"gpu", "unknown backend 'gpu'"}, BadSpec{"", "empty device spec"},
                      BadSpec{"host:mem=0", "mem must be greater than zero"},
                      BadSpec{"host:mem=1000TiB", "exceeds this machine's physical memory"},
                      BadSpec{"host:bogus=1", "unknown option 'bogus=1'"},
                      BadSpec{"host:mem=12XB", "unknown unit"}, BadSpec{"host:mem=", "is empty"},
                      BadSpec{"host:trace=1", "unknown option 'trace=1'"},
                      BadSpec{"cuda:x", "'x' is not a device index"},
                      BadSpec{"cuda:-1", "'-1' is not a device index"},
                      BadSpec{"cuda:0:mem=0", "mem must be greater than zero"},
                      BadSpec{"cuda:0:bogus", "unknown option 'bogus'"}),
    [](const ::testing::TestParamInfo<BadSpec>& param_info) {
      return "spec" + std::to_string(param_info.index);
    });

TEST(OpenDeviceTest, HostDefaultsAndNormalisedSpec) {
  auto device = open_device("host");
  EXPECT_EQ(device->backend(), BackendKind::kHost);
  EXPECT_EQ(device->info().name, "host");
  EXPECT_EQ(device->info().memory_capacity_bytes, zoro::kGiB);
  EXPECT_EQ(device->info().spec, "host:mem=" + std::to_string(zoro::kGiB));
  EXPECT_EQ(device->info().ordinal, 0);
  EXPECT_TRUE(device->info().pci_bus_id.empty());
  EXPECT_GE(device->info().numa_node, 0);
  ASSERT_NE(device->trace(), nullptr);
  EXPECT_FALSE(device->trace()->enabled()) << "tracing is opt-in";
}

TEST(OpenDeviceTest, HostWithCapacityAndTrace) {
  auto device = open_device("host:mem=256MiB:trace");
  EXPECT_EQ(device->info().memory_capacity_bytes, 256 * zoro::kMiB);
  EXPECT_EQ(device->info().spec, "host:mem=" + std::to_string(256 * zoro::kMiB) + ":trace");
  EXPECT_EQ(device->memory_stats(zoro::device::MemoryKind::kDevice).capacity_bytes,
            256 * zoro::kMiB);
  ASSERT_NE(device->trace(), nullptr);
  EXPECT_TRUE(device->trace()->enabled());
}

TEST(OpenDeviceTest, AutoPicksCudaOnlyWhenUsable) {
  auto device = open_device("auto");
  EXPECT_EQ(device->backend(),
            zoro::device::cuda_device_count() > 0 ? BackendKind::kCuda : BackendKind::kHost);
}

TEST(OpenDeviceTest, CudaWithoutAGpuIsUnsupportedWithTheReason) {
  if (zoro::device::cuda_device_count() > 0) {
    GTEST_SKIP() << "this machine has a usable GPU; the CUDA instances of the device tests "
                    "cover opening it";
  }
  const std::string reason = zoro::device::cuda_unavailable_reason();
  EXPECT_FALSE(reason.empty());
  for (const char* spec : {"cuda", "cuda:0", "cuda:1:mem=1GiB"}) {
    SCOPED_TRACE(spec);
    const std::string what = thrown_message<zoro::Unsupported>([&] { (void)open_device(spec); });
    EXPECT_CONTAINS(what, reason);
  }
}

TEST(OpenDeviceTest, ToStringNamesKinds) {
  EXPECT_STREQ(zoro::device::to_string(BackendKind::kHost), "host");
  EXPECT_STREQ(zoro::device::to_string(BackendKind::kCuda), "cuda");
  EXPECT_STREQ(zoro::device::to_string(zoro::device::MemoryKind::kPinnedHost), "pinned host");
}

TEST(BackendSpecsTest, CoverBothBackendsWithReadableNames) {
  const auto& specs = backend_specs();
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[0], "host:mem=64MiB");
  EXPECT_EQ(specs[1], "cuda:0:mem=64MiB");
  EXPECT_EQ(backend_spec_name({specs[0], 0}), "host_mem_64MiB");
  EXPECT_EQ(backend_spec_name({specs[1], 1}), "cuda_0_mem_64MiB");
  EXPECT_TRUE(backend_unavailable_reason(specs[0]).empty());
  EXPECT_EQ(backend_unavailable_reason(specs[1]).empty(), zoro::device::cuda_device_count() > 0);
}

}  // namespace
}  // namespace zoro::testing
