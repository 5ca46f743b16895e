// CUDA twins of the row- and element-wise reference kernels: embedding, layernorm, GELU,
// residual, casts. Contracts in kernels.h and kernels/ref/kernels.h.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"
#include "runtime/base/check.h"
#include "runtime/device/device.h"

namespace zoro::kernels::cuda {

using namespace detail;

cudaStream_t native_stream(device::Stream& stream) {
  void* handle = stream.native_handle();
  ZORO_CHECK(handle != nullptr,
             "stream '" << stream.name() << "' is not a CUDA stream (no native handle)");
  return static_cast<cudaStream_t>(handle);
}

namespace {

constexpr unsigned kBlock = 256;

// ---- embedding ---------------------------------------------------------------------------

template <class Elem>
__global__ void embedding_forward_kernel(Elem* out, const std::int32_t* tokens, const Elem* wte,
                                         const Elem* wpe, std::size_t rows, int T, int C) {
  const std::size_t n = rows * C;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t r = i / C;
    const std::size_t c = i % C;
    const std::size_t t = r % T;
    const float v = load(wte + static_cast<std::size_t>(tokens[r]) * C + c) + load(wpe + t * C + c);
    store(out + i, v);
  }
}

template <class Elem>
__global__ void embedding_backward_wte_kernel(float* dwte, const Elem* dout,
                                              const std::int32_t* tokens, std::size_t rows, int C) {
  const std::size_t n = rows * C;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t r = i / C;
    const std::size_t c = i % C;
    atomicAdd(dwte + static_cast<std::size_t>(tokens[r]) * C + c, load(dout + i));
  }
}

// One thread per (t, c): it alone owns dwpe[t, c], so no atomics.
template <class Elem>
__global__ void embedding_backward_wpe_kernel(float* dwpe, const Elem* dout, int B, int T, int C) {
  const std::size_t n = static_cast<std::size_t>(T) * C;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    float acc = 0.f;
    for (int b = 0; b < B; ++b) acc += load(dout + static_cast<std::size_t>(b) * n + i);
    dwpe[i] += acc;
  }
}

// ---- layernorm: one warp per row -------------------------------------------------------

constexpr int kRowsPerBlock = kBlock / kWarpSize;

template <class Elem>
__global__ void layernorm_forward_kernel(Elem* out, float* mean, float* rstd, const Elem* inp,
                                         const Elem* weight, const Elem* bias, int N, int C) {
  const int lane = threadIdx.x % kWarpSize;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= N) return;  // a whole warp leaves together: the shuffles below stay full-warp
  const Elem* x = inp + static_cast<std::size_t>(row) * C;
  float sum = 0.f;
  for (int c = lane; c < C; c += kWarpSize) sum += load(x + c);
  const float m = warp_sum(sum) / C;
  float var = 0.f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float d = load(x + c) - m;
    var += d * d;
  }
  const float s = rsqrtf(warp_sum(var) / C + 1e-5f);
  Elem* o = out + static_cast<std::size_t>(row) * C;
  for (int c = lane; c < C; c += kWarpSize) {
    store(o + c, (load(x + c) - m) * s * load(weight + c) + load(bias + c));
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

template <class Elem>
__global__ void layernorm_backward_kernel(Elem* dinp, const Elem* dout, const Elem* inp,
                                          const Elem* weight, const float* mean, const float* rstd,
                                          int N, int C) {
  const int lane = threadIdx.x % kWarpSize;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= N) return;
  const std::size_t base = static_cast<std::size_t>(row) * C;
  const float m = mean[row];
  const float s = rstd[row];
  float g_sum = 0.f;
  float gx_sum = 0.f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float g = load(dout + base + c) * load(weight + c);
    g_sum += g;
    gx_sum += g * (load(inp + base + c) - m) * s;
  }
  const float g_mean = warp_sum(g_sum) / C;
  const float gx_mean = warp_sum(gx_sum) / C;
  for (int c = lane; c < C; c += kWarpSize) {
    const float xhat = (load(inp + base + c) - m) * s;
    const float g = load(dout + base + c) * load(weight + c);
    store(dinp + base + c, load(dinp + base + c) + s * (g - g_mean - xhat * gx_mean));
  }
}

// ---- GELU, residual, casts -------------------------------------------------------------

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

template <class Elem>
__global__ void gelu_forward_kernel(Elem* out, const Elem* inp, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float x = load(inp + i);
    const float u = kGeluScale * (x + kGeluCubic * x * x * x);
    store(out + i, 0.5f * x * (1.f + tanhf(u)));
  }
}

template <class Elem>
__global__ void gelu_backward_kernel(Elem* dinp, const Elem* inp, const Elem* dout, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float x = load(inp + i);
    const float u = kGeluScale * (x + kGeluCubic * x * x * x);
    const float th = tanhf(u);
    const float du = kGeluScale * (1.f + 3.f * kGeluCubic * x * x);
    const float grad = 0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * du;
    store(dinp + i, load(dinp + i) + grad * load(dout + i));
  }
}

template <class Elem>
__global__ void residual_forward_kernel(Elem* out, const Elem* a, const Elem* b, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    store(out + i, load(a + i) + load(b + i));
  }
}

template <class Out, class In, class Fn>
__global__ void cast_kernel(Out* out, const In* in, std::size_t n, Fn fn) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    out[i] = fn(in[i]);
  }
}

struct ToBf16 {
  __device__ __nv_bfloat16 operator()(float v) const { return __float2bfloat16_rn(v); }
};
struct FromBf16 {
  __device__ float operator()(__nv_bfloat16 v) const { return __bfloat162float(v); }
};
struct ToF16 {
  __device__ __half operator()(float v) const { return __float2half_rn(v); }
};
struct FromF16 {
  __device__ float operator()(__half v) const { return __half2float(v); }
};

template <class Out, class In, class Fn>
void launch_cast(Out* out, const In* in, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  cast_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(out, in, n, Fn{});
  ZORO_CUDA_CHECK_LAUNCH();
}

void check_rows(int N, int C, const char* what) {
  ZORO_CHECK(N > 0 && C > 0, what << ": N=" << N << " C=" << C);
}

}  // namespace

template <class Elem>
void embedding_forward(Elem* out, const std::int32_t* tokens, const Elem* wte, const Elem* wpe,
                       int B, int T, int C, int V, cudaStream_t stream) {
  ZORO_CHECK(B > 0 && T > 0 && C > 0 && V > 0,
             "embedding: B=" << B << " T=" << T << " C=" << C << " V=" << V);
  const std::size_t rows = static_cast<std::size_t>(B) * T;
  embedding_forward_kernel<<<grid_for(rows * C, kBlock), kBlock, 0, stream>>>(out, tokens, wte, wpe,
                                                                              rows, T, C);
  ZORO_CUDA_CHECK_LAUNCH();
}

template <class Elem>
void embedding_backward(float* dwte, float* dwpe, const Elem* dout, const std::int32_t* tokens,
                        int B, int T, int C, int V, cudaStream_t stream) {
  ZORO_CHECK(B > 0 && T > 0 && C > 0 && V > 0,
             "embedding: B=" << B << " T=" << T << " C=" << C << " V=" << V);
  const std::size_t rows = static_cast<std::size_t>(B) * T;
  if (dwte != nullptr) {
    embedding_backward_wte_kernel<<<grid_for(rows * C, kBlock), kBlock, 0, stream>>>(
        dwte, dout, tokens, rows, C);
    ZORO_CUDA_CHECK_LAUNCH();
  }
  if (dwpe != nullptr) {
    embedding_backward_wpe_kernel<<<grid_for(static_cast<std::size_t>(T) * C, kBlock), kBlock, 0,
                                    stream>>>(dwpe, dout, B, T, C);
    ZORO_CUDA_CHECK_LAUNCH();
  }
}

template <class Elem>
void layernorm_forward(Elem* out, float* mean, float* rstd, const Elem* inp, const Elem* weight,
                       const Elem* bias, int N, int C, cudaStream_t stream) {
  check_rows(N, C, "layernorm");
  layernorm_forward_kernel<<<ceil_div(N, kRowsPerBlock), kBlock, 0, stream>>>(out, mean, rstd, inp,
                                                                              weight, bias, N, C);
  ZORO_CUDA_CHECK_LAUNCH();
}

template <class Elem>
void layernorm_backward(Elem* dinp, float* dweight, float* dbias, const Elem* dout, const Elem* inp,
                        const Elem* weight, const float* mean, const float* rstd, int N, int C,
                        cudaStream_t stream) {
  check_rows(N, C, "layernorm");
  layernorm_backward_kernel<<<ceil_div(N, kRowsPerBlock), kBlock, 0, stream>>>(
      dinp, dout, inp, weight, mean, rstd, N, C);
  ZORO_CUDA_CHECK_LAUNCH();
  if (dweight != nullptr || dbias != nullptr) {
    launch_column_sums<true>(dweight, dbias, dout, inp, mean, rstd, N, C, stream);
  }
}

template <class Elem>
void gelu_forward(Elem* out, const Elem* inp, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_forward_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(out, inp, n);
  ZORO_CUDA_CHECK_LAUNCH();
}

template <class Elem>
void gelu_backward(Elem* dinp, const Elem* inp, const Elem* dout, std::size_t n,
                   cudaStream_t stream) {
  if (n == 0) return;
  gelu_backward_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(dinp, inp, dout, n);
  ZORO_CUDA_CHECK_LAUNCH();
}

template <class Elem>
void residual_forward(Elem* out, const Elem* a, const Elem* b, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  residual_forward_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(out, a, b, n);
  ZORO_CUDA_CHECK_LAUNCH();
}

void cast_f32_to_bf16(bf16* out, const float* in, std::size_t n, cudaStream_t stream) {
  launch_cast<bf16, float, ToBf16>(out, in, n, stream);
}
void cast_bf16_to_f32(float* out, const bf16* in, std::size_t n, cudaStream_t stream) {
  launch_cast<float, bf16, FromBf16>(out, in, n, stream);
}
void cast_f32_to_f16(__half* out, const float* in, std::size_t n, cudaStream_t stream) {
  launch_cast<__half, float, ToF16>(out, in, n, stream);
}
void cast_f16_to_f32(float* out, const __half* in, std::size_t n, cudaStream_t stream) {
  launch_cast<float, __half, FromF16>(out, in, n, stream);
}

#define ZORO_INSTANTIATE(E)                                                                      \
  template void embedding_forward<E>(E*, const std::int32_t*, const E*, const E*, int, int, int, \
                                     int, cudaStream_t);                                         \
  template void embedding_backward<E>(float*, float*, const E*, const std::int32_t*, int, int,   \
                                      int, int, cudaStream_t);                                   \
  template void layernorm_forward<E>(E*, float*, float*, const E*, const E*, const E*, int, int, \
                                     cudaStream_t);                                              \
  template void layernorm_backward<E>(E*, float*, float*, const E*, const E*, const E*,          \
                                      const float*, const float*, int, int, cudaStream_t);       \
  template void gelu_forward<E>(E*, const E*, std::size_t, cudaStream_t);                        \
  template void gelu_backward<E>(E*, const E*, const E*, std::size_t, cudaStream_t);             \
  template void residual_forward<E>(E*, const E*, const E*, std::size_t, cudaStream_t);
ZORO_INSTANTIATE(float)
ZORO_INSTANTIATE(bf16)
#undef ZORO_INSTANTIATE

}  // namespace zoro::kernels::cuda
