// CUDA twin of the reference causal self-attention (kernels/ref/attention.cpp), saving only
// the log-sum-exp of each score row (Note [Attention saves lse] there).
//
// One warp per (b, h, t) row: the head's hs columns are spread over the lanes (lane l holds
// columns l, l+32, ...), each score q.k is a warp reduction, and the softmax is online (a
// running max and sum, rescaling the partial output when the max grows), so nothing of size
// T is stored. Backward is two kernels that each own what they write, so no atomics:
//   queries: dq_t  = scale * sum_{s<=t} ds(t,s) k_s
//   keys:    dk_s  = scale * sum_{t>=s} ds(t,s) q_t,   dv_s = sum_{t>=s} p(t,s) dout_t
// with p = exp(scale q.k - lse_t), ds = p (dout_t.v_s - D_t), D_t = dout_t.out_t.
// Straightforward rather than fast (every pair costs warp reductions): correctness first.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"
#include "runtime/base/check.h"

namespace zoro::kernels::cuda {

using namespace detail;

namespace {

constexpr int kPerLane = kMaxHeadSize / kWarpSize;  // head columns each lane keeps
constexpr int kWarpsPerBlock = 4;

struct Geometry {
  int T, C, NH, hs;
  std::size_t rows;  // B * NH * T: the (b, h, t) rows, t fastest (neighbouring warps share k/v)
  float scale;
};

// The (b, h, t) of a row index, and offsets into qkv (B,T,3C) and out (B,T,C).
struct Row {
  std::size_t qkv;  // offset of q_t of head h; k is +C, v is +2C
  std::size_t out;  // offset of out_t of head h
  int t;
};
__device__ __forceinline__ Row row_of(const Geometry& g, std::size_t i) {
  const int t = static_cast<int>(i % g.T);
  const int h = static_cast<int>((i / g.T) % g.NH);
  const std::size_t b = i / (static_cast<std::size_t>(g.T) * g.NH);
  const std::size_t bt = b * g.T + t;
  return {bt * 3 * g.C + static_cast<std::size_t>(h) * g.hs,
          bt * g.C + static_cast<std::size_t>(h) * g.hs, t};
}
// Offset of position t2 in the same batch and head as `r`.
__device__ __forceinline__ std::size_t qkv_at(const Geometry& g, const Row& r, int t2) {
  return r.qkv + static_cast<std::ptrdiff_t>(t2 - r.t) * 3 * g.C;
}
__device__ __forceinline__ std::size_t out_at(const Geometry& g, const Row& r, int t2) {
  return r.out + static_cast<std::ptrdiff_t>(t2 - r.t) * g.C;
}

template <class Elem>
__device__ __forceinline__ void load_head(float (&dst)[kPerLane], const Elem* src, int hs,
                                          int lane) {
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int d = lane + j * kWarpSize;
    dst[j] = d < hs ? load(src + d) : 0.f;
  }
}

// The lane's share of a . src (the warp sums the shares).
template <class Elem>
__device__ __forceinline__ float partial_dot(const float (&a)[kPerLane], const Elem* src, int hs,
                                             int lane) {
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int d = lane + j * kWarpSize;
    if (d < hs) s += a[j] * load(src + d);
  }
  return s;
}

template <class Elem>
__global__ void attention_forward_kernel(Elem* out, float* lse, const Elem* qkv, Geometry g) {
  const int lane = threadIdx.x % kWarpSize;
  const std::size_t i =
      static_cast<std::size_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (i >= g.rows) return;  // whole warps leave together
  const Row r = row_of(g, i);
  float q[kPerLane];
  load_head(q, qkv + r.qkv, g.hs, lane);
  float acc[kPerLane] = {};
  float m = -INFINITY;
  float l = 0.f;
  for (int s = 0; s <= r.t; ++s) {
    const std::size_t ks = qkv_at(g, r, s);
    const float score = warp_sum(partial_dot(q, qkv + ks + g.C, g.hs, lane)) * g.scale;
    const float m_new = fmaxf(m, score);
    const float correction = __expf(m - m_new);  // 0 on the first key (m = -inf)
    const float p = __expf(score - m_new);
    l = l * correction + p;
    const Elem* v = qkv + ks + 2 * g.C;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + j * kWarpSize;
      acc[j] = acc[j] * correction + (d < g.hs ? p * load(v + d) : 0.f);
    }
    m = m_new;
  }
  const float inv_l = 1.f / l;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int d = lane + j * kWarpSize;
    if (d < g.hs) store(out + r.out + d, acc[j] * inv_l);
  }
  if (lane == 0) lse[i] = m + logf(l);
}

template <class Elem>
__global__ void attention_backward_query_kernel(Elem* dqkv, const Elem* dout, const Elem* qkv,
                                                const Elem* out, const float* lse, Geometry g) {
  const int lane = threadIdx.x % kWarpSize;
  const std::size_t i =
      static_cast<std::size_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (i >= g.rows) return;
  const Row r = row_of(g, i);
  float q[kPerLane];
  float dy[kPerLane];
  load_head(q, qkv + r.qkv, g.hs, lane);
  load_head(dy, dout + r.out, g.hs, lane);
  const float D = warp_sum(partial_dot(dy, out + r.out, g.hs, lane));
  const float l = lse[i];
  float dq[kPerLane] = {};
  for (int s = 0; s <= r.t; ++s) {
    const std::size_t ks = qkv_at(g, r, s);
    const Elem* k = qkv + ks + g.C;
    const float qk = warp_sum(partial_dot(q, k, g.hs, lane));
    const float dp = warp_sum(partial_dot(dy, qkv + ks + 2 * g.C, g.hs, lane));
    const float ds = __expf(qk * g.scale - l) * (dp - D);
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + j * kWarpSize;
      if (d < g.hs) dq[j] += ds * load(k + d);
    }
  }
  Elem* dst = dqkv + r.qkv;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int d = lane + j * kWarpSize;
    if (d < g.hs) store(dst + d, load(dst + d) + g.scale * dq[j]);
  }
}

template <class Elem>
__global__ void attention_backward_key_kernel(Elem* dqkv, const Elem* dout, const Elem* qkv,
                                              const Elem* out, const float* lse, Geometry g) {
  const int lane = threadIdx.x % kWarpSize;
  const std::size_t i =
      static_cast<std::size_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (i >= g.rows) return;
  const Row r = row_of(g, i);  // r.t is the key position s
  float k[kPerLane];
  float v[kPerLane];
  load_head(k, qkv + r.qkv + g.C, g.hs, lane);
  load_head(v, qkv + r.qkv + 2 * g.C, g.hs, lane);
  float dk[kPerLane] = {};
  float dv[kPerLane] = {};
  const std::size_t row0 = i - r.t;  // lse index of position 0 in this (b, h)
  for (int t = r.t; t < g.T; ++t) {
    const Elem* q = qkv + qkv_at(g, r, t);
    const Elem* dy = dout + out_at(g, r, t);
    const Elem* o = out + out_at(g, r, t);
    // Three reductions per pair, their shuffles interleaved by the compiler.
    float qk = 0.f, dyv = 0.f, dyo = 0.f;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + j * kWarpSize;
      if (d < g.hs) {
        const float dyd = load(dy + d);
        qk += k[j] * load(q + d);
        dyv += v[j] * dyd;
        dyo += dyd * load(o + d);
      }
    }
    qk = warp_sum(qk);
    dyv = warp_sum(dyv);
    dyo = warp_sum(dyo);
    const float p = __expf(qk * g.scale - lse[row0 + t]);
    const float ds = p * (dyv - dyo);
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + j * kWarpSize;
      if (d < g.hs) {
        dk[j] += ds * load(q + d);
        dv[j] += p * load(dy + d);
      }
    }
  }
  Elem* dst_k = dqkv + r.qkv + g.C;
  Elem* dst_v = dst_k + g.C;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int d = lane + j * kWarpSize;
    if (d < g.hs) {
      store(dst_k + d, load(dst_k + d) + g.scale * dk[j]);
      store(dst_v + d, load(dst_v + d) + dv[j]);
    }
  }
}

Geometry make_geometry(int B, int T, int C, int NH) {
  ZORO_CHECK(B > 0 && T > 0 && C > 0 && NH > 0 && C % NH == 0,
             "attention: B=" << B << " T=" << T << " C=" << C << " NH=" << NH
                             << " (C must be a positive multiple of NH)");
  const int hs = C / NH;
  ZORO_CHECK(hs <= kMaxHeadSize,
             "attention: head size " << hs << " exceeds the CUDA kernels' " << kMaxHeadSize);
  return {T, C, NH, hs, static_cast<std::size_t>(B) * NH * T, 1.f / std::sqrt(float(hs))};
}

}  // namespace

template <class Elem>
void attention_forward(Elem* out, float* lse, const Elem* qkv, int B, int T, int C, int NH,
                       cudaStream_t stream) {
  const Geometry g = make_geometry(B, T, C, NH);
  attention_forward_kernel<<<ceil_div(g.rows, kWarpsPerBlock), kWarpsPerBlock * kWarpSize, 0,
                             stream>>>(out, lse, qkv, g);
  ZORO_CUDA_CHECK_LAUNCH();
}

template <class Elem>
void attention_backward(Elem* dqkv, const Elem* dout, const Elem* qkv, const Elem* out,
                        const float* lse, int B, int T, int C, int NH, cudaStream_t stream) {
  const Geometry g = make_geometry(B, T, C, NH);
  const unsigned grid = ceil_div(g.rows, kWarpsPerBlock);
  attention_backward_query_kernel<<<grid, kWarpsPerBlock * kWarpSize, 0, stream>>>(dqkv, dout, qkv,
                                                                                   out, lse, g);
  ZORO_CUDA_CHECK_LAUNCH();
  attention_backward_key_kernel<<<grid, kWarpsPerBlock * kWarpSize, 0, stream>>>(dqkv, dout, qkv,
                                                                                 out, lse, g);
  ZORO_CUDA_CHECK_LAUNCH();
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int,
                                       cudaStream_t);
template void attention_forward<bf16>(bf16*, float*, const bf16*, int, int, int, int, cudaStream_t);
template void attention_backward<float>(float*, const float*, const float*, const float*,
                                        const float*, int, int, int, int, cudaStream_t);
template void attention_backward<bf16>(bf16*, const bf16*, const bf16*, const bf16*, const float*,
                                       int, int, int, int, cudaStream_t);

}  // namespace zoro::kernels::cuda
