// The CUDA twins of the reference kernels (kernels/ref/kernels.h): one function here for each
// function there, same name, same argument order, same math; read the ref header for what
// each computes and saves. What differs:
// - Pointers are device pointers; every function ends with the cudaStream_t it is enqueued on
//   (native_stream() gives it for a device::Stream). Functions only enqueue work: they return
//   before it runs, and throw zoro::BackendError if a launch fails (ZORO_CUDA_CHECK_LAUNCH
//   after every kernel), zoro::InvalidArgument for bad sizes. Sizes are checked on the host;
//   token ids and targets are device data and are NOT checked: out-of-range ids are undefined
//   behaviour (the data loader validates them; the ref kernels check them).
// - Elem is the activation and weight type: float or __nv_bfloat16. All arithmetic is fp32
//   (loads widen, stores round to nearest even).
// - Note [CUDA gradient types]: parameter gradients (dwte, dwpe, layernorm dweight/dbias,
//   matmul dweight/dbias) are fp32, because they land in the engine's fp32 gradient slots;
//   activation gradients (dinp, dqkv, dlogits) are Elem. Saved statistics (layernorm
//   mean/rstd, attention and cross-entropy lse) and per-token losses are fp32.
// - Accumulation follows the ref (Note [Gradient accumulation] there): backward adds into
//   every gradient except dlogits. Sums that several threads add into (dwte, layernorm's
//   dweight/dbias, matmul's dbias) use fp32 atomics, so their last bits vary run to run.
// - GEMMs run on cuBLAS (cublasGemmEx, CUBLAS_COMPUTE_32F, no TF32) through a CublasContext
//   that owns the handle and is bound to one stream.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/ref/kernels.h"

namespace zoro::device {
class Stream;
}

namespace zoro::kernels::cuda {

using bf16 = __nv_bfloat16;

// The cudaStream_t of a stream of the CUDA backend; throws InvalidArgument for a stream of
// another backend (whose native handle is null: launching on it would silently use the
// legacy default stream).
cudaStream_t native_stream(device::Stream& stream);

// The largest head size attention supports (each lane of a warp keeps hs / 32 values).
inline constexpr int kMaxHeadSize = 256;
inline constexpr std::int32_t kNoIgnoreIndex = -1;

// ---- embedding ---------------------------------------------------------------------------
template <class Elem>
void embedding_forward(Elem* out, const std::int32_t* tokens, const Elem* wte, const Elem* wpe,
                       int B, int T, int C, int V, cudaStream_t stream);
template <class Elem>
void embedding_backward(float* dwte, float* dwpe, const Elem* dout, const std::int32_t* tokens,
                        int B, int T, int C, int V, cudaStream_t stream);

// ---- layernorm (eps = 1e-5, as the ref) ------------------------------------------------
template <class Elem>
void layernorm_forward(Elem* out, float* mean, float* rstd, const Elem* inp, const Elem* weight,
                       const Elem* bias, int N, int C, cudaStream_t stream);
template <class Elem>
void layernorm_backward(Elem* dinp, float* dweight, float* dbias, const Elem* dout, const Elem* inp,
                        const Elem* weight, const float* mean, const float* rstd, int N, int C,
                        cudaStream_t stream);

// ---- GELU, residual ------------------------------------------------------------------------
template <class Elem>
void gelu_forward(Elem* out, const Elem* inp, std::size_t n, cudaStream_t stream);
template <class Elem>
void gelu_backward(Elem* dinp, const Elem* inp, const Elem* dout, std::size_t n,
                   cudaStream_t stream);
template <class Elem>
void residual_forward(Elem* out, const Elem* a, const Elem* b, std::size_t n, cudaStream_t stream);

// ---- causal self-attention (C / NH <= kMaxHeadSize) -----------------------------------
template <class Elem>
void attention_forward(Elem* out, float* lse, const Elem* qkv, int B, int T, int C, int NH,
                       cudaStream_t stream);
template <class Elem>
void attention_backward(Elem* dqkv, const Elem* dout, const Elem* qkv, const Elem* out,
                        const float* lse, int B, int T, int C, int NH, cudaStream_t stream);

// ---- fused softmax + cross-entropy -------------------------------------------------------
template <class Elem>
void softmax_cross_entropy_forward(float* losses, float* lse, const Elem* logits,
                                   const std::int32_t* targets, int N, int V,
                                   std::int32_t ignore_index, cudaStream_t stream);
template <class Elem>
void softmax_cross_entropy_backward(Elem* dlogits, const Elem* logits, const float* lse,
                                    const std::int32_t* targets, int N, int V, float scale,
                                    std::int32_t ignore_index, cudaStream_t stream);

// ---- linear layer on cuBLAS ----------------------------------------------------------------
// Owns a cuBLAS handle bound to one stream. Not thread-safe: one context per stream (and per
// host thread that enqueues on it). Destroy only when the stream's GEMMs are done or the
// stream is synchronised.
class CublasContext {
 public:
  explicit CublasContext(cudaStream_t stream);
  ~CublasContext();
  CublasContext(const CublasContext&) = delete;
  CublasContext& operator=(const CublasContext&) = delete;
  cublasHandle_t handle() const noexcept { return handle_; }
  cudaStream_t stream() const noexcept { return stream_; }

 private:
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

// out (N,OC) = inp (N,IC) . weight (OC,IC)^T + bias (OC); bias may be nullptr.
template <class Elem>
void matmul_forward(CublasContext& ctx, Elem* out, const Elem* inp, const Elem* weight,
                    const Elem* bias, int N, int IC, int OC);
// dinp += dout . weight (Elem); dweight += dout^T . inp (fp32); dbias += column sums (fp32).
// Any of the three may be nullptr.
template <class Elem>
void matmul_backward(CublasContext& ctx, Elem* dinp, float* dweight, float* dbias, const Elem* dout,
                     const Elem* inp, const Elem* weight, int N, int IC, int OC);

// ---- mixed-precision casts (round to nearest even) -----------------------------------
void cast_f32_to_bf16(bf16* out, const float* in, std::size_t n, cudaStream_t stream);
void cast_bf16_to_f32(float* out, const bf16* in, std::size_t n, cudaStream_t stream);
void cast_f32_to_f16(__half* out, const float* in, std::size_t n, cudaStream_t stream);
void cast_f16_to_f32(float* out, const __half* in, std::size_t n, cudaStream_t stream);

// ---- AdamW on the device (no offload) -------------------------------------------------
// The twin of ref::adamw_step: the same config and checks (ref::adamw_coefficients), and per
// element the same sequence of IEEE operations (Note [Device AdamW order] in
// kernels/ref/kernels.h), written with explicitly rounded intrinsics (__fmul_rn, __fmaf_rn,
// __fdiv_rn, __fsqrt_rn) so that nvcc contracts nothing; the coefficients are computed on the
// host in double exactly as the ref does. Results are therefore bit-identical to the ref for
// an fp32 grad, and for a bf16 grad to the ref given that grad widened to fp32 (exact); the
// one latitude is a NaN result, NaN on both sides but with the GPU's canonical payload.
// One fused grid-stride kernel: master, m, v (fp32) and grad (Elem = float or bf16) are device
// buffers of n elements, updated in place; working_out (bf16, may be nullptr) receives the new
// weights rounded to nearest even. Buffers must not overlap.
using AdamWConfig = ref::AdamWConfig;
template <class Elem>
void adamw_step(float* master, float* m, float* v, const Elem* grad, bf16* working_out,
                std::size_t n, const AdamWConfig& config, std::int64_t step, float grad_scale,
                cudaStream_t stream);

// ---- around the layer kernels (model_ops.cu) -----------------------------------------
// acc (fp32, n) = grad (first) or acc += grad (round to nearest, as the host fold of
// offload/grad_fold.h); *non_finite (device int) is set to 1 when any grad value is Inf or
// NaN and never cleared here. For gradient accumulation without offload.
void grad_accumulate(float* acc, const float* grad, std::size_t n, bool first, int* non_finite,
                     cudaStream_t stream);
// *out (device double) = sum of x[i]^2 in double, written (not added). Block partials meet in
// double atomics: the last bits may vary run to run (the host engine's norm is the
// deterministic one). For global-norm clipping without offload.
void sum_squares(double* out, const float* x, std::size_t n, cudaStream_t stream);
// out[r] (device int32) = argmax over v of logits[r, v], the lowest index among equal maxima;
// for accuracy metrics. Elem = float or bf16.
template <class Elem>
void argmax_rows(std::int32_t* out, const Elem* logits, int rows, int V, cudaStream_t stream);

}  // namespace zoro::kernels::cuda
