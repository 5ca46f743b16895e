// CUDA twin of the reference fused softmax + cross-entropy (kernels/ref/softmax_ce.cpp).
// One block per row: each thread keeps an online (max, sum of exp) over its strided share of
// the vocabulary, then the pairs merge across the warp (shuffles) and the block (shared
// memory). One pass over the logits in forward, one in backward.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"
#include "runtime/base/check.h"

namespace zoro::kernels::cuda {

using namespace detail;

namespace {

constexpr int kBlock = 512;
constexpr int kWarps = kBlock / kWarpSize;

// Merges two (max, sum) pairs: sum of exp(x - max) over the union of both sets.
struct MaxSum {
  float m;
  float s;
};
__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.f};  // both empty: avoid (-inf) - (-inf) = NaN
  return {m, a.s * __expf(a.m - m) + b.s * __expf(b.m - m)};
}

template <class Elem>
__global__ void softmax_ce_forward_kernel(float* losses, float* lse, const Elem* logits,
                                          const std::int32_t* targets, int V,
                                          std::int32_t ignore_index) {
  __shared__ MaxSum s_part[kWarps];
  const std::size_t row = blockIdx.x;
  const Elem* x = logits + row * V;
  MaxSum acc{-INFINITY, 0.f};
  for (int v = threadIdx.x; v < V; v += kBlock) acc = merge(acc, MaxSum{load(x + v), 1.f});
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const MaxSum other{__shfl_xor_sync(kFullMask, acc.m, offset),
                       __shfl_xor_sync(kFullMask, acc.s, offset)};
    acc = merge(acc, other);
  }
  const int warp = threadIdx.x / kWarpSize;
  if (threadIdx.x % kWarpSize == 0) s_part[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    MaxSum total = s_part[0];
    for (int w = 1; w < kWarps; ++w) total = merge(total, s_part[w]);
    const float l = total.m + logf(total.s);
    lse[row] = l;
    const std::int32_t target = targets[row];
    losses[row] = target == ignore_index ? 0.f : l - load(x + target);
  }
}

template <class Elem>
__global__ void softmax_ce_backward_kernel(Elem* dlogits, const Elem* logits, const float* lse,
                                           const std::int32_t* targets, int V, float scale,
                                           std::int32_t ignore_index) {
  const std::size_t row = blockIdx.x;
  const Elem* x = logits + row * V;
  Elem* dx = dlogits + row * V;  // may alias x: each element is read, then written, by one thread
  const std::int32_t target = targets[row];
  const float l = lse[row];
  const bool ignored = target == ignore_index;
  for (int v = threadIdx.x; v < V; v += kBlock) {
    const float p = __expf(load(x + v) - l);
    store(dx + v, ignored ? 0.f : scale * (p - (v == target ? 1.f : 0.f)));
  }
}

void check_shape(int N, int V) {
  ZORO_CHECK(N > 0 && V > 0, "softmax_cross_entropy: N=" << N << " V=" << V);
}

}  // namespace

template <class Elem>
void softmax_cross_entropy_forward(float* losses, float* lse, const Elem* logits,
                                   const std::int32_t* targets, int N, int V,
                                   std::int32_t ignore_index, cudaStream_t stream) {
  check_shape(N, V);
  softmax_ce_forward_kernel<<<N, kBlock, 0, stream>>>(losses, lse, logits, targets, V,
                                                      ignore_index);
  ZORO_CUDA_CHECK_LAUNCH();
}

template <class Elem>
void softmax_cross_entropy_backward(Elem* dlogits, const Elem* logits, const float* lse,
                                    const std::int32_t* targets, int N, int V, float scale,
                                    std::int32_t ignore_index, cudaStream_t stream) {
  check_shape(N, V);
  softmax_ce_backward_kernel<<<N, kBlock, 0, stream>>>(dlogits, logits, lse, targets, V, scale,
                                                       ignore_index);
  ZORO_CUDA_CHECK_LAUNCH();
}

template void softmax_cross_entropy_forward<float>(float*, float*, const float*,
                                                   const std::int32_t*, int, int, std::int32_t,
                                                   cudaStream_t);
template void softmax_cross_entropy_forward<bf16>(float*, float*, const bf16*, const std::int32_t*,
                                                  int, int, std::int32_t, cudaStream_t);
template void softmax_cross_entropy_backward<float>(float*, const float*, const float*,
                                                    const std::int32_t*, int, int, float,
                                                    std::int32_t, cudaStream_t);
template void softmax_cross_entropy_backward<bf16>(bf16*, const bf16*, const float*,
                                                   const std::int32_t*, int, int, float,
                                                   std::int32_t, cudaStream_t);

}  // namespace zoro::kernels::cuda
