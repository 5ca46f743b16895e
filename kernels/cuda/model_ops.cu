// The small device kernels a trainer needs around the layer kernels: folding a gradient into
// an fp32 accumulator with an Inf/NaN flag, a squared norm for clipping without offload, and
// argmax over logits rows for accuracy metrics. Contracts in kernels.h.
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"
#include "runtime/base/check.h"

namespace zoro::kernels::cuda {

using namespace detail;

namespace {

constexpr unsigned kBlock = 256;
// sum_squares: a fixed grid, so each block's partial covers the same elements every run.
constexpr unsigned kNormBlocks = 256;

template <bool kFirst>
__global__ void grad_accumulate_kernel(float* acc, const float* grad, std::size_t n,
                                       int* non_finite) {
  bool bad = false;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float g = grad[i];
    bad |= !isfinite(g);
    if constexpr (kFirst) {
      acc[i] = g;
    } else {
      acc[i] = __fadd_rn(acc[i], g);
    }
  }
  if (bad) *non_finite = 1;  // a benign race: every writer writes 1
}

__global__ void sum_squares_kernel(double* out, const float* x, std::size_t n) {
  __shared__ double partial[kBlock];
  double sum = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const double v = x[i];
    sum += v * v;
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(out, partial[0]);
}

// One warp per row: lane-strided maximum, then a warp reduction keeping the lowest index
// among equal maxima (as std::max_element).
template <class Elem>
__global__ void argmax_rows_kernel(std::int32_t* out, const Elem* logits, int rows, int V) {
  const int lane = threadIdx.x % kWarpSize;
  const int row = blockIdx.x * (kBlock / kWarpSize) + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  const Elem* x = logits + static_cast<std::size_t>(row) * V;
  float best = -FLT_MAX;
  int at = V;
  for (int v = lane; v < V; v += kWarpSize) {
    const float f = load(x + v);
    if (f > best) {
      best = f;
      at = v;
    }
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const float ob = __shfl_xor_sync(kFullMask, best, offset);
    const int oa = __shfl_xor_sync(kFullMask, at, offset);
    if (ob > best || (ob == best && oa < at)) {
      best = ob;
      at = oa;
    }
  }
  if (lane == 0) out[row] = at < V ? at : 0;
}

}  // namespace

void grad_accumulate(float* acc, const float* grad, std::size_t n, bool first, int* non_finite,
                     cudaStream_t stream) {
  ZORO_CHECK(non_finite != nullptr, "grad_accumulate: null flag");
  if (n == 0) return;
  if (first) {
    grad_accumulate_kernel<true>
        <<<grid_for(n, kBlock), kBlock, 0, stream>>>(acc, grad, n, non_finite);
  } else {
    grad_accumulate_kernel<false>
        <<<grid_for(n, kBlock), kBlock, 0, stream>>>(acc, grad, n, non_finite);
  }
  ZORO_CUDA_CHECK_LAUNCH();
}

void sum_squares(double* out, const float* x, std::size_t n, cudaStream_t stream) {
  ZORO_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(double), stream));
  if (n == 0) return;
  const unsigned blocks = std::min(kNormBlocks, grid_for(n, kBlock));
  sum_squares_kernel<<<blocks, kBlock, 0, stream>>>(out, x, n);
  ZORO_CUDA_CHECK_LAUNCH();
}

template <class Elem>
void argmax_rows(std::int32_t* out, const Elem* logits, int rows, int V, cudaStream_t stream) {
  ZORO_CHECK(rows > 0 && V > 0, "argmax_rows: rows=" << rows << " V=" << V);
  constexpr int kRowsPerBlock = kBlock / kWarpSize;
  argmax_rows_kernel<<<ceil_div(rows, kRowsPerBlock), kBlock, 0, stream>>>(out, logits, rows, V);
  ZORO_CUDA_CHECK_LAUNCH();
}

template void argmax_rows<float>(std::int32_t*, const float*, int, int, cudaStream_t);
template void argmax_rows<bf16>(std::int32_t*, const bf16*, int, int, cudaStream_t);

}  // namespace zoro::kernels::cuda
