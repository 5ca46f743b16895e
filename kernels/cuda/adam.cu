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

template <bool kL2, bool kOut, class Elem>
__global__ void adamw_kernel(float* __restrict__ master, float* __restrict__ m,
                             float* __restrict__ v, const Elem* __restrict__ grad,
                             __nv_bfloat16* __restrict__ out, std::size_t n,
                             ref::AdamWCoefficients k) {
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

}  // namespace

template <class Elem>
void adamw_step(float* master, float* m, float* v, const Elem* grad, bf16* working_out,
                std::size_t n, const AdamWConfig& config, std::int64_t step, float grad_scale,
                cudaStream_t stream) {
  const ref::AdamWCoefficients k = ref::adamw_coefficients(config, step, grad_scale);
  if (n == 0) return;
  ZORO_CHECK(master != nullptr && m != nullptr && v != nullptr && grad != nullptr,
             "adamw_step: a buffer of " << n << " elements is null");
  const bool l2 = k.l2;
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
