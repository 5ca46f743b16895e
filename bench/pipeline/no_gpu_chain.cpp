// A build without CUDA: the GEMM chain and the optimizer-on-device model do not exist.
#include "bench/pipeline/chain.h"
#include "runtime/base/check.h"

namespace zoro::bench {

std::unique_ptr<ComputeChain> make_gpu_chain(Engine&, const std::vector<ParamId>&, int, int) {
  ZORO_THROW(Unsupported, "the GEMM chain needs a CUDA build (this one has ZORO_CUDA off)");
}

std::unique_ptr<DeviceOptimizerModel> make_device_optimizer_model(device::Device&, int, int, int,
                                                                  float) {
  ZORO_THROW(Unsupported,
             "the optimizer-on-device model needs a CUDA build (this one has ZORO_CUDA off)");
}

}  // namespace zoro::bench
