// A build without CUDA: the GEMM chain does not exist.
#include "bench/pipeline/chain.h"
#include "runtime/base/check.h"

namespace zoro::bench {

std::unique_ptr<ComputeChain> make_gpu_chain(Engine&, const std::vector<ParamId>&, int, int) {
  ZORO_THROW(Unsupported, "the GEMM chain needs a CUDA build (this one has ZORO_CUDA off)");
}

}  // namespace zoro::bench
