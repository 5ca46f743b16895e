// The baseline: Adam's math as the plain loop anyone would write first — one loop, no
// explicit SIMD, default compiler flags, half conversions by runtime/base/half.h.
#include <cmath>
#include <cstdint>

#include "bench/cpu_adam/roofline.h"
#include "runtime/base/half.h"

namespace zoro::bench {
namespace {

float load(const void* base, std::size_t i, DType t) {
  if (t == DType::kF32) return static_cast<const float*>(base)[i];
  const std::uint16_t h = static_cast<const std::uint16_t*>(base)[i];
  return t == DType::kBF16 ? bf16_to_float(h) : fp16_to_float(h);
}

void store(void* base, std::size_t i, DType t, float v) {
  if (t == DType::kF32) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<std::uint16_t*>(base)[i] = t == DType::kBF16 ? float_to_bf16(v) : float_to_fp16(v);
  }
}

}  // namespace

void plain_adam(const optim::detail::KernelArgs& a, std::size_t begin, std::size_t end) {
  for (std::size_t i = begin; i < end; ++i) {
    float g = load(a.grad, i, a.grad_dtype) * a.grad_scale;
    float p = a.master[i];
    if (a.l2) g += a.weight_decay * p;
    const float m = a.beta1 * load(a.state1, i, a.state_dtype) + a.one_minus_beta1 * g;
    const float v = a.beta2 * load(a.state2, i, a.state_dtype) + a.one_minus_beta2 * g * g;
    const float d = std::sqrt(v) * a.inv_sqrt_bc2 + a.eps;
    p = p * a.decay + a.neg_step * (m / d);
    a.master[i] = p;
    store(a.state1, i, a.state_dtype, m);
    store(a.state2, i, a.state_dtype, v);
    if (a.half_out != nullptr) store(a.half_out, i, a.half_dtype, p);
  }
}

}  // namespace zoro::bench
