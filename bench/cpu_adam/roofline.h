// The benchmark's reference kernels, each over the same KernelArgs as the optimizer:
// - roofline_*: the optimizer's exact access pattern (reads master, gradient, state; writes
//   master, state and the half copy, in place) with trivial arithmetic, vectorised with the
//   same vector types and run on the same executor: a memory-speed bound for that variant.
// - plain_adam: the same math as the Adam kernel as a plain scalar loop at the default flags
//   (no explicit SIMD, one thread): the baseline a straightforward implementation gives.
#pragma once

#include <cstddef>

#include "offload/optim/kernels.h"

namespace zoro::bench {

using RooflineFn = void (*)(const optim::detail::KernelArgs& args, std::size_t begin,
                            std::size_t end);

// Defined in roofline_avx2.cpp / roofline_avx512.cpp (each compiled with its own flags: call
// only when optim::isa_supported says so).
void roofline_avx2(const optim::detail::KernelArgs& args, std::size_t begin, std::size_t end);
void roofline_avx512(const optim::detail::KernelArgs& args, std::size_t begin, std::size_t end);

// Adam (L2 or decoupled per args) as a plain loop.
void plain_adam(const optim::detail::KernelArgs& args, std::size_t begin, std::size_t end);

}  // namespace zoro::bench
