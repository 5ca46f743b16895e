// The reference AdamW: one element at a time, in the operation order of offload/optim's Adam
// (Note [Device AdamW order] in kernels.h). Compiled with -ffp-contract=off (CMakeLists.txt):
// the one fused multiply-add is the explicit std::fma, as in optim's scalar path.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/ref/kernels.h"
#include "runtime/base/check.h"
#include "runtime/base/half.h"

namespace zoro::kernels::ref {

AdamWCoefficients adamw_coefficients(const AdamWConfig& c, std::int64_t step, float grad_scale) {
  const auto nonnegative = [](float x) { return std::isfinite(x) && x >= 0.f; };
  ZORO_CHECK(nonnegative(c.lr), "lr=" << c.lr << " must be finite and >= 0");
  ZORO_CHECK(c.beta1 >= 0.f && c.beta1 < 1.f, "beta1=" << c.beta1 << " must be in [0, 1)");
  ZORO_CHECK(c.beta2 >= 0.f && c.beta2 < 1.f, "beta2=" << c.beta2 << " must be in [0, 1)");
  ZORO_CHECK(nonnegative(c.eps), "eps=" << c.eps << " must be finite and >= 0");
  ZORO_CHECK(nonnegative(c.weight_decay),
             "weight_decay=" << c.weight_decay << " must be finite and >= 0");
  ZORO_CHECK(step >= 1, "step=" << step << " must be >= 1 (the first update is 1)");
  ZORO_CHECK(std::isfinite(grad_scale) && grad_scale > 0.f,
             "grad_scale=" << grad_scale << " must be finite and > 0");
  // As offload/optim/cpu_optimizer.cpp computes them.
  const double lr = c.lr, beta1 = c.beta1, beta2 = c.beta2;
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  AdamWCoefficients k{};
  k.grad_scale = grad_scale;
  k.weight_decay = c.weight_decay;
  k.decay = c.decoupled_weight_decay
                ? static_cast<float>(1.0 - lr * static_cast<double>(c.weight_decay))
                : 1.f;
  k.beta1 = c.beta1;
  k.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  k.beta2 = c.beta2;
  k.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  k.neg_step = static_cast<float>(-lr / bc1);
  k.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  k.eps = c.eps;
  k.l2 = !c.decoupled_weight_decay && c.weight_decay > 0.f;
  return k;
}

void adamw_step(float* master, float* m, float* v, const float* grad, std::uint16_t* bf16_out,
                std::size_t n, const AdamWConfig& config, std::int64_t step, float grad_scale) {
  const AdamWCoefficients k = adamw_coefficients(config, step, grad_scale);
  ZORO_CHECK(n == 0 || (master != nullptr && m != nullptr && v != nullptr && grad != nullptr),
             "adamw_step: a buffer of " << n << " elements is null");
  for (std::size_t i = 0; i < n; ++i) {
    float g = grad[i] * k.grad_scale;
    float w = master[i];
    if (k.l2) g = std::fma(k.weight_decay, w, g);
    const float mi = std::fma(k.beta1, m[i], k.one_minus_beta1 * g);
    const float vi = std::fma(k.beta2, v[i], (k.one_minus_beta2 * g) * g);
    const float d = std::fma(std::sqrt(vi), k.inv_sqrt_bc2, k.eps);
    w = w * k.decay;  // also when decay is 1, as optim does (a NaN is quietened the same way)
    w = std::fma(k.neg_step, mi / d, w);
    master[i] = w;
    m[i] = mi;
    v[i] = vi;
    if (bf16_out != nullptr) bf16_out[i] = float_to_bf16(w);
  }
}

}  // namespace zoro::kernels::ref
