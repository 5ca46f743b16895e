// The reference kernels of a GPT-2 layer, forward and backward: plain C++ (oneTBB where a
// loop is large, OpenBLAS for the GEMMs). They are the host backend's kernels and the oracle
// every CUDA twin (kernels/cuda/kernels.h) is tested against.
//
// Contract, for every function here:
// - Layout is row-major. Activations are (B, T, C) = (N rows, C columns) with N = B * T; a
//   weight of a linear layer is (OC, IC) as in PyTorch's nn.Linear (GPT-2's Conv1D weights are
//   stored transposed in its checkpoints: the loader transposes them).
// - R is float (the trainer) or double (the finite-difference tests); both are instantiated.
// - Note [Gradient accumulation]: every backward *adds* into the gradients it outputs
//   (dinp += ..., dweight += ...), so that a residual stream, tied embeddings and gradient
//   accumulation need no extra pass; zero them first. The one exception is
//   softmax_cross_entropy_backward, which *writes* dlogits (it starts the backward pass, and
//   dlogits is the largest buffer of a step). A gradient pointer may be nullptr where noted:
//   that gradient is then not computed.
// - Outputs must not alias inputs unless noted. Sizes are checked (> 0, token ids in range)
//   with ZORO_CHECK, which throws zoro::InvalidArgument.
// - Functions block until done: loops run on the caller plus oneTBB's workers, GEMMs on
//   OpenBLAS's threads (single-threaded under ThreadSanitizer: Note [OpenBLAS under
//   ThreadSanitizer] in gemm.cpp). They keep no state and may be called from several threads
//   at once on distinct outputs. Results do not depend on the thread count: each output is
//   summed by one task in a fixed order (OpenBLAS's own blocking aside).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace zoro::kernels::ref {

// A pointer that may be nullptr (an optional bias, a gradient not wanted). Not deduced, so
// that passing a literal nullptr compiles: R comes from the other arguments.
template <class R>
using Nullable = std::type_identity_t<R>*;

// ---- embedding -------------------------------------------------------------------------
// out (B,T,C) = wte[tokens[b,t]] (V,C) + wpe[t] (maxT,C). tokens (B,T) in [0, V).
// Saves nothing: backward needs only the tokens.
template <class R>
void embedding_forward(R* out, const std::int32_t* tokens, const R* wte, const R* wpe, int B, int T,
                       int C, int V);
// dwte (V,C) += scatter of dout by token; dwpe (maxT,C) += sum over b of dout. Either may be
// nullptr.
template <class R>
void embedding_backward(Nullable<R> dwte, Nullable<R> dwpe, const R* dout,
                        const std::int32_t* tokens, int B, int T, int C, int V);

// ---- layernorm -------------------------------------------------------------------------
// out (N,C) = (inp - mean) * rstd * weight + bias, per row; rstd = 1 / sqrt(var + eps) with
// the biased variance (as PyTorch). Saves mean (N) and rstd (N) for backward.
inline constexpr double kLayerNormEps = 1e-5;
template <class R>
void layernorm_forward(R* out, R* mean, R* rstd, const R* inp, const R* weight, const R* bias,
                       int N, int C);
// dinp (N,C) +=, dweight (C) +=, dbias (C) += ; mean/rstd as saved by forward. dweight and
// dbias may be nullptr.
template <class R>
void layernorm_backward(R* dinp, Nullable<R> dweight, Nullable<R> dbias, const R* dout,
                        const R* inp, const R* weight, const R* mean, const R* rstd, int N, int C);

// ---- GELU (tanh approximation, as GPT-2) -----------------------------------------------
// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise over n values. out may
// alias inp. Saves nothing: backward recomputes from inp.
template <class R>
void gelu_forward(R* out, const R* inp, std::size_t n);
// dinp += gelu'(inp) * dout.
template <class R>
void gelu_backward(R* dinp, const R* inp, const R* dout, std::size_t n);

// ---- residual ----------------------------------------------------------------------------
// out = a + b, elementwise; out may alias a or b. Its backward is the identity into both
// branches: the caller adds dout into each branch's gradient (Note [Gradient accumulation]).
template <class R>
void residual_forward(R* out, const R* a, const R* b, std::size_t n);

// ---- causal self-attention ---------------------------------------------------------------
// qkv (B,T,3C) is GPT-2's c_attn output: per row [q (C) | k (C) | v (C)], each split into NH
// heads of hs = C / NH columns (head h is columns [h*hs, (h+1)*hs)). For each (b, h, t):
//   p(t,s) = softmax_s<=t( q_t . k_s / sqrt(hs) ),  out (B,T,C)[b,t,h*hs..] = sum_s p(t,s) v_s
// Saves lse (B,NH,T): the log-sum-exp of the scaled scores of each row, so backward recomputes
// p(t,s) = exp(score - lse) without storing the (T,T) matrix (as FlashAttention does).
template <class R>
void attention_forward(R* out, R* lse, const R* qkv, int B, int T, int C, int NH);
// dqkv (B,T,3C) += ; dout (B,T,C); out, lse as produced by forward (out gives D_t = dout_t .
// out_t, the softmax backward's row term).
template <class R>
void attention_backward(R* dqkv, const R* dout, const R* qkv, const R* out, const R* lse, int B,
                        int T, int C, int NH);

// ---- fused softmax + cross-entropy over the vocabulary ----------------------------------
// For each of N rows of logits (N,V): lse[i] = log sum_v exp(logits[i,v]) and losses[i] =
// lse[i] - logits[i, targets[i]]; a row whose target equals ignore_index gets losses[i] = 0
// (and its lse is still written). Targets other than ignore_index must be in [0, V). The
// training loss is the mean of losses over rows not ignored: mean_loss().
inline constexpr std::int32_t kNoIgnoreIndex = -1;
template <class R>
void softmax_cross_entropy_forward(R* losses, R* lse, const R* logits, const std::int32_t* targets,
                                   int N, int V, std::int32_t ignore_index = kNoIgnoreIndex);
// dlogits (N,V) = scale * (softmax(logits) - onehot(target)), written (not added; see Note
// [Gradient accumulation]); ignored rows get 0. For the gradient of the mean loss, scale =
// dloss / count_valid_targets(); a loss scale for fp16 multiplies in here too. dlogits may
// alias logits (the row is read before it is written).
template <class R>
void softmax_cross_entropy_backward(R* dlogits, const R* logits, const R* lse,
                                    const std::int32_t* targets, int N, int V, R scale,
                                    std::int32_t ignore_index = kNoIgnoreIndex);
// Rows whose target is not ignore_index.
int count_valid_targets(const std::int32_t* targets, int N,
                        std::int32_t ignore_index = kNoIgnoreIndex);
// The mean of losses over those rows (0 when there are none), accumulated in double.
template <class R>
double mean_loss(const R* losses, const std::int32_t* targets, int N,
                 std::int32_t ignore_index = kNoIgnoreIndex);

// ---- linear layer (GEMM) -----------------------------------------------------------------
// out (N,OC) = inp (N,IC) . weight (OC,IC)^T + bias (OC); bias may be nullptr. By OpenBLAS
// (cblas_sgemm / cblas_dgemm).
template <class R>
void matmul_forward(R* out, const R* inp, const R* weight, Nullable<const R> bias, int N, int IC,
                    int OC);
// dinp (N,IC) += dout . weight; dweight (OC,IC) += dout^T . inp; dbias (OC) += column sums of
// dout. Any of the three may be nullptr.
template <class R>
void matmul_backward(Nullable<R> dinp, Nullable<R> dweight, Nullable<R> dbias, const R* dout,
                     const R* inp, const R* weight, int N, int IC, int OC);

// ---- mixed-precision casts ---------------------------------------------------------------
// Round to nearest even, as runtime/base/half.h (bit-exact with it). 16-bit values travel as
// their bit patterns.
void cast_f32_to_bf16(std::uint16_t* out, const float* in, std::size_t n);
void cast_bf16_to_f32(float* out, const std::uint16_t* in, std::size_t n);
void cast_f32_to_f16(std::uint16_t* out, const float* in, std::size_t n);
void cast_f16_to_f32(float* out, const std::uint16_t* in, std::size_t n);

// ---- AdamW (the optimizer on the device, without offload) ------------------------------
// Hyper-parameters, as zoro::optim::AdamConfig (offload/optim/cpu_optimizer.h): lr >= 0,
// beta1 and beta2 in [0, 1), eps >= 0, weight_decay >= 0, all finite. decoupled_weight_decay:
// true is AdamW (p *= 1 - lr * wd), false is Adam with L2 (g += wd * p when wd > 0).
struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.f;
  bool decoupled_weight_decay = true;
};
// The per-call constants of an update, computed once on the host in double and rounded once
// to fp32, as offload/optim does; shared by the ref and its CUDA twin, so the two cannot drift.
struct AdamWCoefficients {
  float grad_scale, weight_decay, decay;
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float neg_step, inv_sqrt_bc2, eps;
  bool l2;  // Adam with L2: g += weight_decay * p
};
// Checks the hyper-parameters, step (>= 1) and grad_scale (finite, > 0), naming the bad value
// (InvalidArgument), and computes the constants.
AdamWCoefficients adamw_coefficients(const AdamWConfig& config, std::int64_t step,
                                     float grad_scale);

// One update of n elements, fp32 master weights and moments m, v, updated in place; when
// bf16_out is not nullptr, the new weights rounded to bf16 (half.h's float_to_bf16) are
// written there. step >= 1 is the update count (bias correction); grad_scale (finite, > 0)
// multiplies each gradient first. Note [Device AdamW order]: exactly the per-element sequence
// of IEEE operations of zoro::optim::adam_step (its Adam formula block), coefficients computed
// in double and rounded once to fp32 as there, std::fma where it fuses; so the result is
// bit-identical to adam_step with fp32 moments, and the CUDA twin follows the same sequence
// with explicitly rounded intrinsics. A plain serial loop (the oracle); buffers must not
// overlap. Bad hyper-parameters, step or null buffers throw before anything is written.
void adamw_step(float* master, float* m, float* v, const float* grad, std::uint16_t* bf16_out,
                std::size_t n, const AdamWConfig& config, std::int64_t step, float grad_scale);

}  // namespace zoro::kernels::ref
