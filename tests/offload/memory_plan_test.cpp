#include "offload/memory_plan.h"

#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "runtime/base/units.h"

namespace zoro::offload {
namespace {

PlanOptions gpt_like() {
  PlanOptions o;
  o.total_elems = 1'000'000;
  o.working = DType::kBF16;
  o.grad_wire = DType::kBF16;
  o.bucket_bytes = 4 * kMiB;
  o.bucket_count = 4;
  return o;
}

TEST(MemoryPlan, BytesPerCategoryFollowTheDesignTable) {
  const MemoryPlan plan(gpt_like());
  const std::size_t p = 1'000'000;
  EXPECT_EQ(plan.bytes_of("working weights (bf16)"), 2 * p);
  EXPECT_EQ(plan.bytes_of("gradient bucket ring"), 16 * kMiB);
  EXPECT_EQ(plan.bytes_of("fp32 master weights"), 4 * p);
  EXPECT_EQ(plan.bytes_of("optimizer state (fp32 x2)"), 8 * p);
  EXPECT_EQ(plan.bytes_of("fp32 gradient accumulator"), 4 * p);
  EXPECT_EQ(plan.bytes_of("half-precision staging"), 2 * p);
  EXPECT_EQ(plan.total(Place::kDevice), 2 * p + 16 * kMiB);
  EXPECT_EQ(plan.total(Place::kPinnedHost), 18 * p + 16 * kMiB);
}

TEST(MemoryPlan, OptionsChangeTheLines) {
  PlanOptions o = gpt_like();
  o.moments = DType::kBF16;
  o.dpu = true;
  o.staging_chunk_elems = 1000;
  o.staging_chunks = 3;
  o.device_reserve_bytes = 123;
  const MemoryPlan plan(o);
  EXPECT_EQ(plan.bytes_of("optimizer state (bf16 x2)"), 4'000'000u);
  EXPECT_EQ(plan.bytes_of("fp32 gradient accumulators (x2, DPU)"), 8'000'000u);
  EXPECT_EQ(plan.bytes_of("half-precision staging"), 6000u);
  EXPECT_EQ(plan.bytes_of("trainer reserve (activations, workspace)"), 123u);
  EXPECT_NE(plan.to_string().find("total"), std::string::npos);
}

TEST(MemoryPlan, RefusesWhatDoesNotFitWithTheNumbers) {
  const MemoryPlan plan(gpt_like());
  const std::size_t dev = plan.total(Place::kDevice);
  const std::size_t host = plan.total(Place::kPinnedHost);
  EXPECT_NO_THROW(plan.check_fits(dev, host));
  try {
    plan.check_fits(dev - 1, host);
    ADD_FAILURE() << "a device one byte too small was accepted";
  } catch (const OutOfMemory& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("does not fit the device"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(dev) + " B"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(dev - 1) + " B"), std::string::npos) << msg;
  }
  try {
    plan.check_fits(dev, host - 1);
    ADD_FAILURE() << "a host budget one byte too small was accepted";
  } catch (const OutOfMemory& e) {
    EXPECT_NE(std::string(e.what()).find("host budget"), std::string::npos) << e.what();
  }
}

TEST(MemoryPlan, BadOptionsNameTheField) {
  auto expect_error = [](PlanOptions o, const std::string& fragment) {
    try {
      MemoryPlan plan(o);
      ADD_FAILURE() << "accepted; expected an error mentioning " << fragment;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  PlanOptions o = gpt_like();
  o.total_elems = 0;
  expect_error(o, "total_elems");
  o = gpt_like();
  o.bucket_count = 0;
  expect_error(o, "bucket_count");
  o = gpt_like();
  o.grad_wire = DType::kF32;
  expect_error(o, "grad_wire fp32 needs fp32 working weights");
  o = gpt_like();
  o.moments = DType::kF16;
  expect_error(o, "moments");
  o = gpt_like();
  o.total_elems = SIZE_MAX / 2;
  expect_error(o, "overflows");
}

}  // namespace
}  // namespace zoro::offload
