// Internal: the per-ISA kernel entry points and the plain-data arguments they take. Not
// installed. Included by the SIMD translation units, so it includes nothing that could emit
// an inline function there (an inline function compiled with -mavx512f may be the copy the
// linker keeps for the whole program). The coefficients are computed once per call (in double,
// rounded once to fp32) by cpu_optimizer.cpp, so that every path sees the very same fp32 constants.
#pragma once

#include <cstddef>
#include <cstdint>

#include "offload/optim/isa.h"
#include "runtime/base/dtype.h"

namespace zoro::optim::detail {

struct KernelArgs {
  float* master = nullptr;
  void* state1 = nullptr;  // Adam m, Adagrad sum, Lion m
  void* state2 = nullptr;  // Adam v
  const void* grad = nullptr;
  void* half_out = nullptr;  // nullptr: no half copy
  DType grad_dtype = DType::kF32;
  DType state_dtype = DType::kF32;
  DType half_dtype = DType::kBF16;
  bool l2 = false;  // add weight_decay * p to the gradient
  float grad_scale = 1.f;
  float weight_decay = 0.f;  // the L2 coefficient (used when l2)
  float decay = 1.f;         // decoupled: p *= decay (1 - lr * wd), else 1
  float beta1 = 0.f, one_minus_beta1 = 1.f;
  float beta2 = 0.f, one_minus_beta2 = 1.f;
  float neg_step = 0.f;      // Adam: -lr / bc1; Adagrad, Lion: -lr
  float inv_sqrt_bc2 = 1.f;  // Adam
  float eps = 0.f;
};

using KernelFn = void (*)(const KernelArgs& args, std::size_t begin, std::size_t end);

struct KernelTable {
  KernelFn adam;
  KernelFn adagrad;
  KernelFn lion;
};

// One table per translation unit, each compiled with its own instruction-set flags. Only
// kernels_for() (isa.cpp) hands them out, and only for an ISA the CPU supports.
extern const KernelTable kScalarKernels;
extern const KernelTable kAvx2Kernels;
extern const KernelTable kAvx512Kernels;
extern const KernelTable kAvx512Bf16Kernels;

const KernelTable& kernels_for(Isa isa);

}  // namespace zoro::optim::detail
