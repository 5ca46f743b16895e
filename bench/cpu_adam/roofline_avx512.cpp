// Compiled with the AVX-512 flags of offload/optim (CMakeLists.txt); called only on CPUs that
// have them.
#include "bench/cpu_adam/roofline_impl.h"
#include "offload/optim/kernels_avx512_impl.h"

namespace zoro::bench {

void roofline_avx512(const optim::detail::KernelArgs& args, std::size_t begin, std::size_t end) {
  roofline_entry<optim::detail::Avx512V<false>>(args, begin, end);
}

}  // namespace zoro::bench
