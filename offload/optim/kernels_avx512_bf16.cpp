// The AVX-512 path with AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4/5): the same flags
// as kernels_avx512.cpp plus -mavx512bf16, called only when cpuid reports all of them.
#include "offload/optim/kernels_avx512_impl.h"

namespace zoro::optim::detail {

const KernelTable kAvx512Bf16Kernels = make_table<Avx512V<true>>();

}  // namespace zoro::optim::detail
