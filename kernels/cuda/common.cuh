// Internal to kernels/cuda: element loads/stores in fp32, warp and block reductions, launch
// geometry, and the column-sum kernel that layernorm's and matmul's parameter gradients share.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "runtime/base/cuda_check.h"

namespace zoro::kernels::cuda::detail {

inline constexpr int kWarpSize = 32;
inline constexpr unsigned kFullMask = 0xFFFFFFFFu;

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// Every lane gets the sum (max) over the warp's 32 lanes.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}

// Blocks for a grid-stride loop over n items: enough to fill the GPU, capped so that the
// count fits gridDim.x for any n.
inline unsigned grid_for(std::size_t n, unsigned block) {
  const std::size_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(std::clamp<std::size_t>(blocks, 1, std::size_t{1} << 20));
}
inline unsigned ceil_div(std::size_t n, std::size_t d) {
  return static_cast<unsigned>((n + d - 1) / d);
}

// Column sums over rows, for parameter gradients: dbias[c] += sum_r dout[r,c] and, when
// kWithNorm, dweight[c] += sum_r dout[r,c] * (inp[r,c] - mean[r]) * rstd[r] (layernorm).
// Block (32, kColBlockY): x walks 32 adjacent columns (coalesced), y splits the
// block's kColRowsPerBlock rows; the y partials meet in shared memory and one fp32 atomic per
// column and block lands in global memory.
inline constexpr int kColBlockY = 8;
inline constexpr int kColRowsPerBlock = 256;

template <bool kWithNorm, class Elem>
__global__ void column_sums_kernel(float* dweight, float* dbias, const Elem* dout, const Elem* inp,
                                   const float* mean, const float* rstd, int N, int C) {
  __shared__ float s_w[kColBlockY][kWarpSize];
  __shared__ float s_b[kColBlockY][kWarpSize];
  const int c = blockIdx.x * kWarpSize + threadIdx.x;
  const int r0 = blockIdx.y * kColRowsPerBlock;
  const int r1 = min(N, r0 + kColRowsPerBlock);
  float acc_w = 0.f;
  float acc_b = 0.f;
  if (c < C) {
    for (int r = r0 + static_cast<int>(threadIdx.y); r < r1; r += kColBlockY) {
      const std::size_t i = static_cast<std::size_t>(r) * C + c;
      const float g = load(dout + i);
      acc_b += g;
      if constexpr (kWithNorm) acc_w += g * (load(inp + i) - mean[r]) * rstd[r];
    }
  }
  s_w[threadIdx.y][threadIdx.x] = acc_w;
  s_b[threadIdx.y][threadIdx.x] = acc_b;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float w = 0.f;
    float b = 0.f;
#pragma unroll
    for (int y = 0; y < kColBlockY; ++y) {
      w += s_w[y][threadIdx.x];
      b += s_b[y][threadIdx.x];
    }
    if (dbias != nullptr) atomicAdd(dbias + c, b);
    if constexpr (kWithNorm) {
      if (dweight != nullptr) atomicAdd(dweight + c, w);
    }
  }
}

template <bool kWithNorm, class Elem>
void launch_column_sums(float* dweight, float* dbias, const Elem* dout, const Elem* inp,
                        const float* mean, const float* rstd, int N, int C, cudaStream_t stream) {
  const dim3 block(kWarpSize, kColBlockY);
  const dim3 grid(ceil_div(C, kWarpSize), ceil_div(N, kColRowsPerBlock));
  ZORO_CHECK(grid.y <= 65535, "column sums: N=" << N << " rows exceed the grid's y limit");
  column_sums_kernel<kWithNorm, Elem>
      <<<grid, block, 0, stream>>>(dweight, dbias, dout, inp, mean, rstd, N, C);
  ZORO_CUDA_CHECK_LAUNCH();
}

}  // namespace zoro::kernels::cuda::detail
