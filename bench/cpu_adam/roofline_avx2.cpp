// Compiled with -mavx2 -mfma -mf16c (CMakeLists.txt); called only on CPUs that have them.
#include "bench/cpu_adam/roofline_impl.h"
#include "offload/optim/kernels_avx2_impl.h"

namespace zoro::bench {

void roofline_avx2(const optim::detail::KernelArgs& args, std::size_t begin, std::size_t end) {
  roofline_entry<optim::detail::Avx2V>(args, begin, end);
}

}  // namespace zoro::bench
