// The AVX-512 path without AVX512-BF16 (Skylake-X, Cascade Lake, Zen 4 with it disabled...):
// compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c, called only when
// cpuid reports them.
#include "offload/optim/kernels_avx512_impl.h"

namespace zoro::optim::detail {

const KernelTable kAvx512Kernels = make_table<Avx512V<false>>();

}  // namespace zoro::optim::detail
