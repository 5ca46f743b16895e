// The model's CUDA compute (gpt_cuda.cpp) against its host-backend twin: the same weights and
// batches on "cuda:0" and on the host backend, both parameter stores, fp32 and bf16.
//   - First step, where both see the same weights: every tensor's gradient of every
//     micro-batch (captured as the model hands it to the store), within a per-dtype tolerance
//     relative to that tensor's gradient, naming the tensor; and every tensor's update of the
//     master weights (Adam's first step moves each element by lr * sign(g) plus weight decay,
//     so where the two gradients agree in sign the updates must agree to rounding).
//   - A few training steps: losses and gradient norms within the dtype's tolerance; then
//     evaluation, predictions and generation.
// Skips visibly without a usable GPU (and in builds without CUDA).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "model_test_util.h"
#include "tests/support/backends.h"
#include "tests/support/random.h"

namespace zoro::train {
namespace {

using testing::Batches;

constexpr const char* kCudaSpec = "cuda:0:mem=1GiB";

// A ParamStore that forwards everything to `inner` and, while capturing, keeps a copy of every
// gradient handed to it: tensor t's fp32 gradient of micro-step k, as the model computed it.
// The copy is enqueued on the compute stream before the store consumes the gradient, so it
// sees exactly what the store sees (Note [Store semantics]).
class GradTap final : public ParamStore {
 public:
  GradTap(ParamStore& inner, int micro_steps) : inner_(inner), micro_steps_(micro_steps) {
    for (int k = 0; k < micro_steps; ++k) {
      auto& row = grads_.emplace_back();
      for (const auto& s : inner_.tensors()) {
        row.push_back(inner_.device().allocate(device::MemoryKind::kDevice, s.numel() * 4));
      }
    }
    seen_.assign(static_cast<std::size_t>(micro_steps) * inner_.tensors().size(), 0);
  }

  // Captures the gradients of the next `micro_steps` micro-steps (the next optimizer step).
  void capture_next_step() {
    capturing_ = true;
    micro_ = -1;
    std::fill(seen_.begin(), seen_.end(), 0);
  }
  // Tensor t's gradient of captured micro-step k (synchronizes); empty when none was handed.
  std::vector<float> grad(int k, std::size_t t) {
    if (seen_[static_cast<std::size_t>(k) * inner_.tensors().size() + t] == 0) return {};
    inner_.compute_stream().synchronize();
    std::vector<float> out(inner_.tensors()[t].numel());
    inner_.device().copy(out.data(), grads_[static_cast<std::size_t>(k)][t].data(), out.size() * 4);
    return out;
  }

  const std::vector<TensorSpec>& tensors() const override { return inner_.tensors(); }
  const Config& config() const override { return inner_.config(); }
  device::Device& device() override { return inner_.device(); }
  device::Stream& compute_stream() override { return inner_.compute_stream(); }
  bool offloaded() const override { return inner_.offloaded(); }
  const void* param_data(std::size_t t) override { return inner_.param_data(t); }
  void begin_micro_step() override {
    inner_.begin_micro_step();
    if (capturing_) ++micro_;
  }
  void hand_grad(std::size_t t, const float* grad) override {
    if (capturing_ && micro_ < micro_steps_) {
      const auto k = static_cast<std::size_t>(micro_);
      inner_.compute_stream().copy_async(grads_[k][t].data(), grad, tensors()[t].numel() * 4);
      seen_[k * tensors().size() + t] = 1;
    }
    inner_.hand_grad(t, grad);
  }
  StepReport end_micro_step() override {
    StepReport r = inner_.end_micro_step();
    if (r.boundary) capturing_ = false;
    return r;
  }
  double loss_scale() const override { return inner_.loss_scale(); }
  void set_lr(double lr) override { inner_.set_lr(lr); }
  std::int64_t step() const override { return inner_.step(); }
  void flush() override { inner_.flush(); }
  std::vector<float> master(std::size_t t) override { return inner_.master(t); }
  std::vector<float> working(std::size_t t) override { return inner_.working(t); }
  void save(const std::string& dir) override { inner_.save(dir); }
  void load(const std::string& dir) override { inner_.load(dir); }
  Engine* engine() override { return inner_.engine(); }

 private:
  ParamStore& inner_;
  int micro_steps_;
  std::vector<std::vector<device::Buffer>> grads_;  // [micro-step][tensor]
  std::vector<std::uint8_t> seen_;                  // [micro-step * tensors + tensor]
  bool capturing_ = false;
  int micro_ = -1;
};

// testing::Rig with a GradTap between the store and the model.
struct TapRig {
  TapRig(const GptConfig& model, const Config& config, bool offload, std::uint64_t seed,
         GptOptions options, const std::string& spec)
      : device(device::open_device(spec)) {
    auto tensors = gpt_tensors(model);
    if (offload) {
      store = std::make_unique<EngineParams>(config, *device, tensors, gpt2_init(model, seed));
    } else {
      store = std::make_unique<DeviceParams>(config, *device, tensors, gpt2_init(model, seed));
    }
    tap = std::make_unique<GradTap>(*store, config.grad_accum_steps);
    gpt = std::make_unique<Gpt>(model, *tap, options);
    trainer = std::make_unique<Trainer>(*gpt);
  }
  ~TapRig() {
    trainer.reset();
    gpt.reset();
    tap.reset();
    store.reset();
  }
  std::unique_ptr<device::Device> device;
  std::unique_ptr<ParamStore> store;
  std::unique_ptr<GradTap> tap;
  std::unique_ptr<Gpt> gpt;
  std::unique_ptr<Trainer> trainer;
};

double l2(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

// Per-dtype tolerances of the GPU against the host model. A tensor's gradient passes when
// ||g_gpu - g_host|| <= rtol * ||g_host|| + atol * ||all of g_host||: relative to the tensor,
// with a floor for tensors whose exact gradient is (nearly) zero, such as the key bias (a
// softmax does not see a constant added to every key), where only rounding noise is left.
struct Tolerance {
  double rtol;  // gradients, relative to the tensor's norm
  double atol;  // gradients, relative to the whole gradient's norm
  double loss;  // losses, relative
};
Tolerance tolerance(DType dtype) {
  // fp32: no TF32 (kernels/cuda/gemm.cu), so only summation order differs. bf16: the GPU keeps
  // activations and activation gradients in bf16 (2^-9 relative rounding each), the host in
  // float; a wrong gradient term differs at O(1), far above either.
  return dtype == DType::kF32 ? Tolerance{2e-4, 2e-5, 1e-4} : Tolerance{5e-2, 5e-3, 3e-2};
}

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
  TapRig host(model, config, offload, seed, options, "host:mem=64MiB");
  TapRig gpu(model, config, offload, seed, options, kCudaSpec);
  const auto specs = gpt_tensors(model);
  const Tolerance tol = tolerance(dtype);
  const int steps = 3;
  Batches bh(*host.device, model.vocab, 3, 32, 2 * steps, seed + 1);
  Batches bg(*gpu.device, model.vocab, 3, 32, 2 * steps, seed + 1);

  // The same initial master weights on both (gpt2_init from one seed).
  std::vector<std::vector<float>> initial(specs.size());
  for (std::size_t t = 0; t < specs.size(); ++t) {
    initial[t] = host.tap->master(t);
    ASSERT_EQ(gpu.tap->master(t), initial[t]) << specs[t].name;
  }

  for (int s = 0; s < steps; ++s) {
    const DeviceBatch mh[] = {bh[2 * s], bh[2 * s + 1]};
    const DeviceBatch mg[] = {bg[2 * s], bg[2 * s + 1]};
    if (s == 0) {
      host.tap->capture_next_step();
      gpu.tap->capture_next_step();
    }
    const StepResult rh = host.trainer->step(mh);
    const StepResult rg = gpu.trainer->step(mg);
    EXPECT_NEAR(rg.loss, rh.loss, tol.loss * rh.loss) << "step " << s;
    EXPECT_NEAR(rg.grad_norm, rh.grad_norm, 10 * tol.loss * rh.grad_norm) << "step " << s;
    EXPECT_EQ(rg.applied, rh.applied);
    if (s != 0) continue;
    ASSERT_TRUE(rh.applied && rg.applied);

    // Every tensor's gradient of both micro-batches; per element, their sum and the sum of
    // their magnitudes (for the update check below).
    std::vector<std::vector<double>> sum_h(specs.size()), sum_g(specs.size());
    std::vector<std::vector<double>> abs_h(specs.size()), abs_g(specs.size());
    double worst = 0;  // largest error / allowed, printed to calibrate the tolerances
    std::string worst_at;
    for (int k = 0; k < config.grad_accum_steps; ++k) {
      std::vector<std::vector<float>> gh(specs.size()), gg(specs.size());
      double total_sq = 0;
      for (std::size_t t = 0; t < specs.size(); ++t) {
        gh[t] = host.tap->grad(k, t);
        gg[t] = gpu.tap->grad(k, t);
        ASSERT_EQ(gh[t].size(), specs[t].numel()) << specs[t].name << ": no host gradient";
        ASSERT_EQ(gg[t].size(), specs[t].numel()) << specs[t].name << ": no GPU gradient";
        const double n = l2(gh[t]);
        total_sq += n * n;
      }
      const double total = std::sqrt(total_sq);
      ASSERT_GT(total, 0);
      for (std::size_t t = 0; t < specs.size(); ++t) {
        std::vector<float> diff(gh[t].size());
        std::size_t at = 0;
        for (std::size_t i = 0; i < diff.size(); ++i) {
          diff[i] = gg[t][i] - gh[t][i];
          if (std::abs(diff[i]) > std::abs(diff[at])) at = i;
        }
        const double err = l2(diff);
        const double ref = l2(gh[t]);
        const double allowed = tol.rtol * ref + tol.atol * total;
        EXPECT_LE(err, allowed) << "micro-batch " << k << ", tensor '" << specs[t].name
                                << "': |g_gpu - g_host| = " << err << ", |g_host| = " << ref
                                << " (all tensors: " << total << "); largest difference at " << at
                                << ": gpu " << gg[t][at] << ", host " << gh[t][at];
        if (err / allowed > worst) {
          worst = err / allowed;
          worst_at = specs[t].name;
        }
        if (k == 0) {
          sum_h[t].assign(diff.size(), 0);
          sum_g[t].assign(diff.size(), 0);
          abs_h[t].assign(diff.size(), 0);
          abs_g[t].assign(diff.size(), 0);
        }
        for (std::size_t i = 0; i < diff.size(); ++i) {
          sum_h[t][i] += gh[t][i];
          sum_g[t][i] += gg[t][i];
          abs_h[t][i] += std::abs(gh[t][i]);
          abs_g[t][i] += std::abs(gg[t][i]);
        }
      }
    }
    std::cout << "[ gradients ] worst error / allowed: " << worst << " ('" << worst_at << "')\n";

    // Every tensor's update. Adam's first step moves an element by
    // -lr * gc / (|gc| + eps) - lr * wd * w, where gc is the store's summed gradient times the
    // clip factor (the loss scale is 1 for fp32 and bf16): -lr * sign(g) up to
    // lr * eps / |gc|. So where each side's gradient has a certain sign, and the signs agree,
    // the two updates agree within lr * eps / min |gc| plus the fp32 rounding of the master,
    // however much the gradients differ. The engine rounds each micro-batch's gradient to
    // grad_dtype on its way to the host (Note [Store semantics]): with bf16, its sum is known
    // only within 2^-8 of the sum of magnitudes, which bounds |gc| from below.
    ASSERT_EQ(rh.loss_scale, 1.0);
    const double lr = config.lr;
    const double rounding = offload && config.grad_dtype == DType::kBF16 ? 0x1p-8 : 1e-6;
    const double ulps = 4 * std::numeric_limits<float>::epsilon();
    std::size_t compared = 0, elements = 0;
    for (std::size_t t = 0; t < specs.size(); ++t) {
      const auto wh = host.tap->master(t);
      const auto wg = gpu.tap->master(t);
      double worst_excess = 0;  // largest difference beyond what is allowed
      std::size_t worst_i = 0;
      for (std::size_t i = 0; i < wh.size(); ++i) {
        ++elements;
        const double sh = sum_h[t][i], sg = sum_g[t][i];
        // The smallest magnitude each store's summed gradient can have.
        const double least_h = std::abs(sh) - rounding * abs_h[t][i];
        const double least_g = std::abs(sg) - rounding * abs_g[t][i];
        if ((sh > 0) != (sg > 0) || least_h <= 0 || least_g <= 0) continue;  // sign not certain
        const double eps_term =
            lr * config.eps / std::min(rh.clip_factor * least_h, rg.clip_factor * least_g);
        if (eps_term > 1e-3 * lr) continue;  // too close to zero to say much
        ++compared;
        const double w0 = initial[t][i];
        const double d = std::abs((static_cast<double>(wg[i]) - w0) - (wh[i] - w0));
        const double excess = d - (eps_term + ulps * (std::abs(w0) + lr));
        if (excess > worst_excess) {
          worst_excess = excess;
          worst_i = i;
        }
      }
      EXPECT_EQ(worst_excess, 0.0)
          << "tensor '" << specs[t].name << "': the update of element " << worst_i
          << " differs: gpu " << wg[worst_i] - initial[t][worst_i] << ", host "
          << wh[worst_i] - initial[t][worst_i] << " (summed gradients: gpu " << sum_g[t][worst_i]
          << ", host " << sum_h[t][worst_i] << ")";
    }
    // Near-zero gradients aside (such as the key bias's), the check covered most of the model.
    EXPECT_GT(compared, elements / 4) << compared << " of " << elements << " elements compared";
  }
  const double eh = host.trainer->eval_loss(bh[0]);
  const double eg = gpu.trainer->eval_loss(bg[0]);
  EXPECT_NEAR(eg, eh, tol.loss * eh);
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
