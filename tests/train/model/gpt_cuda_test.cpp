// The model's CUDA compute (gpt_cuda.cpp) against its host-backend twin: the same weights and
// batches on "cuda:0" and on the host backend, both parameter stores, fp32 and bf16; losses of
// a few training steps within the dtype's tolerance, and generation. Skips visibly without a
// usable GPU (and in builds without CUDA).
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>

#include "model_test_util.h"
#include "tests/support/backends.h"
#include "tests/support/random.h"

namespace zoro::train {
namespace {

using testing::Batches;
using testing::Rig;

constexpr const char* kCudaSpec = "cuda:0:mem=1GiB";

struct CudaCase {
  DType dtype;
  bool offload;
  bool recompute;
};

void PrintTo(const CudaCase& c, std::ostream* os) {
  *os << to_string(c.dtype) << (c.offload ? " offload" : " no-offload")
      << (c.recompute ? " recompute" : "");
}

class GptCuda : public ::testing::TestWithParam<CudaCase> {};

TEST_P(GptCuda, TrainsLikeTheHostModel) {
  ZORO_SKIP_IF_UNAVAILABLE(kCudaSpec);
  ZORO_TRACE_SEED();
  const auto [dtype, offload, recompute] = GetParam();
  const std::uint64_t seed = zoro::testing::test_seed();
  const GptConfig model{97, 32, 2, 4, 64};
  Config config = testing::store_config(dtype);
  config.grad_accum_steps = 2;
  const GptOptions options{.max_batch = 3, .seq_len = 32, .recompute = recompute};
  Rig host(model, config, offload, seed, options);
  Rig gpu(model, config, offload, seed, options, kCudaSpec);
  const int steps = 3;
  Batches bh(*host.device, model.vocab, 3, 32, 2 * steps, seed + 1);
  Batches bg(*gpu.device, model.vocab, 3, 32, 2 * steps, seed + 1);
  // fp32: GEMM and reduction order only; bf16: bf16 activations on the GPU vs float on the host.
  const double tol = dtype == DType::kF32 ? 1e-4 : 3e-2;
  for (int s = 0; s < steps; ++s) {
    const DeviceBatch mh[] = {bh[2 * s], bh[2 * s + 1]};
    const DeviceBatch mg[] = {bg[2 * s], bg[2 * s + 1]};
    const StepResult rh = host.trainer->step(mh);
    const StepResult rg = gpu.trainer->step(mg);
    EXPECT_NEAR(rg.loss, rh.loss, tol * rh.loss) << "step " << s;
    EXPECT_NEAR(rg.grad_norm, rh.grad_norm, 10 * tol * rh.grad_norm) << "step " << s;
    EXPECT_EQ(rg.applied, rh.applied);
  }
  const double eh = host.trainer->eval_loss(bh[0]);
  const double eg = gpu.trainer->eval_loss(bg[0]);
  EXPECT_NEAR(eg, eh, tol * eh);
  const auto ph = host.gpt->predictions();
  const auto pg = gpu.gpt->predictions();
  ASSERT_EQ(ph.size(), pg.size());
  int same = 0;
  for (std::size_t i = 0; i < ph.size(); ++i) same += ph[i] == pg[i];
  EXPECT_GT(same, static_cast<int>(ph.size()) * 8 / 10);
  const std::int32_t prompt[] = {1, 2, 3};
  EXPECT_EQ(gpu.gpt->generate(prompt, 4, {.seed = 3}).size(), 4u);
}

INSTANTIATE_TEST_SUITE_P(Cuda, GptCuda,
                         ::testing::Values(CudaCase{DType::kF32, true, false},
                                           CudaCase{DType::kBF16, true, false},
                                           CudaCase{DType::kBF16, true, true},
                                           CudaCase{DType::kF32, false, false},
                                           CudaCase{DType::kBF16, false, false}),
                         [](const auto& param_info) {
                           const CudaCase& c = param_info.param;
                           return std::string(to_string(c.dtype)) +
                                  (c.offload ? "_offload" : "_no_offload") +
                                  (c.recompute ? "_recompute" : "");
                         });

}  // namespace
}  // namespace zoro::train
