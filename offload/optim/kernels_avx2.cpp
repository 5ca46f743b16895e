// The AVX2 path: AVX2 + FMA + F16C (compiled with exactly those flags, see CMakeLists.txt;
// called only when cpuid reports them). bf16 is converted with integer shifts, so AMD and
// pre-AVX-512 Intel CPUs get the fast path too.
#include "offload/optim/kernels_avx2_impl.h"

namespace zoro::optim::detail {

const KernelTable kAvx2Kernels = make_table<Avx2V>();

}  // namespace zoro::optim::detail
