// The GEMM chain on CUDA (CUDA builds only): cuBLAS through kernels/cuda.
#include <cuda_bf16.h>

#include "bench/pipeline/chain.h"
#include "kernels/cuda/kernels.h"
#include "runtime/base/check.h"

namespace zoro::bench {

namespace {
using kernels::cuda::bf16;

class GpuChain final : public ComputeChain {
 public:
  GpuChain(Engine& engine, std::vector<ParamId> weights, int dim, int tokens)
      : engine_(engine),
        weights_(std::move(weights)),
        dim_(dim),
        tokens_(tokens),
        stream_(kernels::cuda::native_stream(engine.compute_stream())),
        ctx_(stream_) {
    auto& dev = engine.device();
    const std::size_t act = static_cast<std::size_t>(tokens) * dim * sizeof(bf16);
    for (std::size_t l = 0; l <= weights_.size(); ++l) {
      acts_.push_back(dev.allocate(device::MemoryKind::kDevice, act));
      // bf16 0x3c3c = 0.0115 everywhere: finite, and the chain neither explodes nor vanishes
      // to zero over a few layers with the engine's small weights.
      engine.compute_stream().memset_async(acts_.back().data(), 0x3c, act);
    }
    for (auto& g : grad_act_) {
      g = dev.allocate(device::MemoryKind::kDevice, act);
      engine.compute_stream().memset_async(g.data(), 0, act);
    }
    dw32_ = dev.allocate(device::MemoryKind::kDevice, static_cast<std::size_t>(dim) * dim * 4);
  }

  void forward(int layer) override {
    const auto l = static_cast<std::size_t>(layer);
    kernels::cuda::matmul_forward<bf16>(ctx_, acts_[l + 1].as<bf16>(), acts_[l].as<bf16>(),
                                        static_cast<const bf16*>(engine_.param_data(weights_[l])),
                                        nullptr, tokens_, dim_, dim_);
  }

  void backward(int layer, void* grad_slot) override {
    const auto l = static_cast<std::size_t>(layer);
    // dout of the top layer: its own output stands in for dL/dy.
    const bf16* dout = layer == static_cast<int>(weights_.size()) - 1
                           ? acts_[l + 1].as<bf16>()
                           : grad_act_[current_].as<bf16>();
    bf16* dinp = grad_act_[1 - current_].as<bf16>();
    const std::size_t act = static_cast<std::size_t>(tokens_) * dim_ * sizeof(bf16);
    auto& s = engine_.compute_stream();
    s.memset_async(dinp, 0, act);  // matmul_backward accumulates
    s.memset_async(dw32_.data(), 0, dw32_.bytes());
    kernels::cuda::matmul_backward<bf16>(ctx_, dinp, dw32_.as<float>(), nullptr, dout,
                                         acts_[l].as<bf16>(),
                                         static_cast<const bf16*>(engine_.param_data(weights_[l])),
                                         tokens_, dim_, dim_);
    kernels::cuda::cast_f32_to_bf16(static_cast<bf16*>(grad_slot), dw32_.as<float>(),
                                    static_cast<std::size_t>(dim_) * dim_, stream_);
    current_ = 1 - current_;
  }

  std::string describe() const override {
    return "cuBLAS bf16 GEMMs, " + std::to_string(tokens_) + " tokens x " +
           std::to_string(dim_) + " x " + std::to_string(dim_) + " per layer (fwd + 2 bwd)";
  }

 private:
  Engine& engine_;
  std::vector<ParamId> weights_;
  int dim_, tokens_;
  cudaStream_t stream_;
  kernels::cuda::CublasContext ctx_;
  std::vector<device::Buffer> acts_;
  device::Buffer grad_act_[2];
  device::Buffer dw32_;
  int current_ = 0;
};
}  // namespace

std::unique_ptr<ComputeChain> make_gpu_chain(Engine& engine, const std::vector<ParamId>& weights,
                                             int dim, int tokens) {
  return std::make_unique<GpuChain>(engine, weights, dim, tokens);
}

}  // namespace zoro::bench
