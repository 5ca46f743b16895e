// Fused CPU optimizers: Adam/AdamW, Adagrad and Lion over fp32 master weights in host memory,
// one pass per element, at memory speed (../shared/DESIGN.md section 2).
//
// Contract of every *_step function:
// - One pass per element i of `range`: read master[i], grad[i] (fp32, fp16 or bf16) and the
//   optimizer state; compute g = grad[i] * grad_scale (grad_scale = clip_factor / loss_scale,
//   computed by the caller: unscale and clipping in one multiply); update; write master[i],
//   the state, and — when half_out is given — the new weight rounded to bf16 or fp16 (round
//   to nearest even, NaN/Inf preserved, exactly runtime/base/half.h) into half_out[i], the
//   staging buffer for the copy back to the GPU. Elements outside `range` are not touched.
// - The update is the one of PyTorch (torch.optim.Adam / AdamW / Adagrad, and lion-pytorch),
//   spelled out per optimizer below, evaluated in fp32 with the operation order given there.
// - Buffers are the caller's (pinned pool memory in the engine). Each must hold exactly
//   master.size() elements, be non-null when non-empty, and be aligned to its element size
//   (4 bytes for fp32, 2 for 16-bit); any start offset is otherwise fine. Buffers must not
//   overlap each other. Violations, hyper-parameters out of range, a step count of 0 and a
//   range outside [0, n) throw zoro::InvalidArgument naming the value, before anything is
//   written.
// - Chunks: the range is updated in chunks of chunk_elems (0: one chunk) and on_chunk_done
//   is called on the calling thread after each, in order; see CpuExecutor's contract
//   (offload/optim/cpu_executor.h). The copy of chunk k can thus overlap the update of k+1.
//
// Note [Bit-identical paths]
// Each output element is a function of that element's inputs only, computed by the same
// sequence of IEEE operations (mul, fma, div, sqrt — never an approximation such as rsqrt or
// rcp, never a reassociated or contracted expression: the optimizer's files are compiled with
// -ffp-contract=off, and the scalar path calls std::fma where the SIMD paths use an FMA).
// Vector tails are computed by the same vector code on a zero-padded copy. So the results are
// bit-identical across thread counts, chunkings, range splits and start alignments (same
// path: every bit, NaN payloads included), and across instruction sets (scalar, AVX2,
// AVX-512, AVX-512 BF16) for every input, with one IEEE latitude: where two NaN operands meet
// in one operation the result is a NaN on every path, but which operand's payload it carries
// may differ. The tests check all of these bit for bit, special values included.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "offload/optim/cpu_executor.h"
#include "offload/optim/isa.h"
#include "runtime/base/dtype.h"

namespace zoro::optim {

// A buffer of `elems` elements of `dtype` (zoro::DType; 16-bit values as raw bits, converted
// by runtime/base/half.h).
struct Tensor {
  void* data = nullptr;
  std::size_t elems = 0;
  DType dtype = DType::kF32;
};
struct ConstTensor {
  const void* data = nullptr;
  std::size_t elems = 0;
  DType dtype = DType::kF32;
};

// Per call: which step this is and how to scale the gradient.
struct StepInfo {
  // 1 for the first update (Adam's bias correction uses it); 0 is an error.
  std::int64_t step = 0;
  // Multiplies every gradient element first: clip_factor / loss_scale. Finite, > 0.
  float grad_scale = 1.f;
};

// ---- Adam / AdamW --------------------------------------------------------------------------
//
// With c1 = 1 - beta1, c2 = 1 - beta2, bc1 = 1 - beta1^step, bc2 = 1 - beta2^step (both in
// double, then step_size = float(lr / bc1) and inv_sqrt_bc2 = float(1 / sqrt(bc2))):
//   g  = grad * grad_scale
//   g  = fma(weight_decay, p, g)                 (Adam, L2 mode, only when weight_decay > 0)
//   m  = fma(beta1, m, c1 * g)
//   v  = fma(beta2, v, (c2 * g) * g)
//   d  = fma(sqrt(v), inv_sqrt_bc2, eps)         (eps added after the bias correction)
//   p  = p * float(1 - lr * weight_decay)        (AdamW, decoupled; 1 otherwise)
//   p  = fma(-step_size, m / d, p)
// which is PyTorch's p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps). With bf16 moments, m and v
// are read from bf16, the update uses their fp32 values, and they are stored rounded to bf16.
struct AdamConfig {
  float lr = 1e-3f;                     // >= 0, finite
  float beta1 = 0.9f;                   // [0, 1)
  float beta2 = 0.999f;                 // [0, 1)
  float eps = 1e-8f;                    // >= 0, finite
  float weight_decay = 0.f;             // >= 0, finite
  bool decoupled_weight_decay = false;  // false: Adam (L2 into the gradient); true: AdamW
};

struct AdamBuffers {
  std::span<float> master;
  Tensor exp_avg;     // m: kF32 or kBF16
  Tensor exp_avg_sq;  // v: the same dtype as exp_avg
  ConstTensor grad;   // kF32, kF16 or kBF16
  Tensor half_out;    // kBF16 or kF16; data == nullptr (and elems 0) for no copy
};

void adam_step(CpuExecutor& executor, const AdamConfig& config, const StepInfo& info,
               const AdamBuffers& buffers, Range range, std::size_t chunk_elems = 0,
               const ChunkDone& on_chunk_done = {});
// The whole buffer, one chunk.
void adam_step(CpuExecutor& executor, const AdamConfig& config, const StepInfo& info,
               const AdamBuffers& buffers);

// ---- Adagrad -------------------------------------------------------------------------------
//
// torch.optim.Adagrad with lr_decay = 0 (the state sum starts at the caller's
// initial_accumulator_value: the buffer's contents):
//   g = grad * grad_scale
//   g = fma(weight_decay, p, g)                  (only when weight_decay > 0)
//   s = fma(g, g, s)
//   p = fma(-lr, g / (sqrt(s) + eps), p)
struct AdagradConfig {
  float lr = 1e-2f;          // >= 0, finite
  float eps = 1e-10f;        // >= 0, finite
  float weight_decay = 0.f;  // >= 0, finite
};

struct AdagradBuffers {
  std::span<float> master;
  Tensor state_sum;  // kF32 or kBF16
  ConstTensor grad;  // kF32, kF16 or kBF16
  Tensor half_out;   // kBF16 or kF16, or none
};

void adagrad_step(CpuExecutor& executor, const AdagradConfig& config, const StepInfo& info,
                  const AdagradBuffers& buffers, Range range, std::size_t chunk_elems = 0,
                  const ChunkDone& on_chunk_done = {});

// ---- Lion ----------------------------------------------------------------------------------
//
// Chen et al. 2023, as lion-pytorch implements it (sign(0) = 0):
//   g = grad * grad_scale
//   c = fma(beta1, m, (1 - beta1) * g)
//   p = p * float(1 - lr * weight_decay)         (decoupled)
//   p = fma(-lr, sign(c), p)
//   m = fma(beta2, m, (1 - beta2) * g)
struct LionConfig {
  float lr = 1e-4f;          // >= 0, finite
  float beta1 = 0.9f;        // [0, 1]
  float beta2 = 0.99f;       // [0, 1]
  float weight_decay = 0.f;  // >= 0, finite
};

struct LionBuffers {
  std::span<float> master;
  Tensor exp_avg;    // kF32 or kBF16
  ConstTensor grad;  // kF32, kF16 or kBF16
  Tensor half_out;   // kBF16 or kF16, or none
};

void lion_step(CpuExecutor& executor, const LionConfig& config, const StepInfo& info,
               const LionBuffers& buffers, Range range, std::size_t chunk_elems = 0,
               const ChunkDone& on_chunk_done = {});

}  // namespace zoro::optim
