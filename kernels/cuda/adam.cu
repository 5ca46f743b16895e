// The CUDA twin of ref::adamw_step (kernels/ref/adam.cpp): Note [Device AdamW order] in
// kernels/ref/kernels.h. Every operation is an explicitly rounded intrinsic, in the ref's
// order: nvcc may contract a plain a * b + c into an FMA (its default, -fmad=true), which would
// change last bits; the intrinsics are never contracted nor reassociated.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"
#include "runtime/base/check.h"

namespace zoro::kernels::cuda {

using namespace detail;

namespace {

constexpr unsigned kBlock = 256;

// The per-call constants, computed on the host (in double, rounded once) as the ref does.
struct AdamCoefficients {
  float grad_scale, weight_decay, decay;
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float neg_step, inv_sqrt_bc2, eps;
};

template <bool kL2, bool kOut, class Elem>
__global__ void adamw_kernel(float* __restrict__ master, float* __restrict__ m,
                             float* __restrict__ v, const Elem* __restrict__ grad,
                             __nv_bfloat16* __restrict__ out, std::size_t n, AdamCoefficients k) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    float g = __fmul_rn(load(grad + i), k.grad_scale);
    float w = master[i];
    if constexpr (kL2) g = __fmaf_rn(k.weight_decay, w, g);
    const float mi = __fmaf_rn(k.beta1, m[i], __fmul_rn(k.one_minus_beta1, g));
    const float vi = __fmaf_rn(k.beta2, v[i], __fmul_rn(__fmul_rn(k.one_minus_beta2, g), g));
    const float d = __fmaf_rn(__fsqrt_rn(vi), k.inv_sqrt_bc2, k.eps);
    w = __fmul_rn(w, k.decay);
    w = __fmaf_rn(k.neg_step, __fdiv_rn(mi, d), w);
    master[i] = w;
    m[i] = mi;
    v[i] = vi;
    if constexpr (kOut) out[i] = __float2bfloat16_rn(w);
  }
}

AdamCoefficients coefficients(const AdamWConfig& c, std::int64_t step, float grad_scale) {
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
  const double lr = c.lr, beta1 = c.beta1, beta2 = c.beta2;
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  AdamCoefficients k{};
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
  return k;
}

}  // namespace

template <class Elem>
void adamw_step(float* master, float* m, float* v, const Elem* grad, bf16* working_out,
                std::size_t n, const AdamWConfig& config, std::int64_t step, float grad_scale,
                cudaStream_t stream) {
  const AdamCoefficients k = coefficients(config, step, grad_scale);
  if (n == 0) return;
  ZORO_CHECK(master != nullptr && m != nullptr && v != nullptr && grad != nullptr,
             "adamw_step: a buffer of " << n << " elements is null");
  const bool l2 = !config.decoupled_weight_decay && config.weight_decay > 0.f;
  const unsigned grid = grid_for(n, kBlock);
  // Four instantiations, so that the per-element loop carries no branch on either flag.
  if (l2 && working_out != nullptr) {
    adamw_kernel<true, true><<<grid, kBlock, 0, stream>>>(master, m, v, grad, working_out, n, k);
  } else if (l2) {
    adamw_kernel<true, false><<<grid, kBlock, 0, stream>>>(master, m, v, grad, working_out, n, k);
  } else if (working_out != nullptr) {
    adamw_kernel<false, true><<<grid, kBlock, 0, stream>>>(master, m, v, grad, working_out, n, k);
  } else {
    adamw_kernel<false, false><<<grid, kBlock, 0, stream>>>(master, m, v, grad, working_out, n, k);
  }
  ZORO_CUDA_CHECK_LAUNCH();
}

template void adamw_step<float>(float*, float*, float*, const float*, bf16*, std::size_t,
                                const AdamWConfig&, std::int64_t, float, cudaStream_t);
template void adamw_step<bf16>(float*, float*, float*, const bf16*, bf16*, std::size_t,
                               const AdamWConfig&, std::int64_t, float, cudaStream_t);

}  // namespace zoro::kernels::cuda
