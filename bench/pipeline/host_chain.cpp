#include <chrono>
#include <thread>

#include "bench/pipeline/chain.h"

namespace zoro::bench {

namespace {
class HostChain final : public ComputeChain {
 public:
  HostChain(Engine& engine, int dim, double layer_ms)
      : engine_(engine), dim_(dim), fwd_(layer_ms / 3), bwd_(layer_ms * 2 / 3) {}

  void forward(int layer) override {
    const auto t = fwd_;
    engine_.compute_stream().launch_host_fn("fwd " + std::to_string(layer),
                                            [t] { std::this_thread::sleep_for(t); });
  }

  void backward(int layer, void* grad_slot) override {
    const auto t = bwd_;
    engine_.compute_stream().launch_host_fn("bwd " + std::to_string(layer),
                                            [t] { std::this_thread::sleep_for(t); });
    // bf16 0x3c3c = 0.0115: finite gradients.
    engine_.compute_stream().memset_async(grad_slot, 0x3c,
                                          static_cast<std::size_t>(dim_) * dim_ * 2);
  }

  std::string describe() const override {
    return "host tasks sleeping " + std::to_string((fwd_ + bwd_).count()) + " ms per layer";
  }

 private:
  Engine& engine_;
  int dim_;
  std::chrono::duration<double, std::milli> fwd_, bwd_;
};
}  // namespace

std::unique_ptr<ComputeChain> make_host_chain(Engine& engine, int dim, double layer_ms) {
  return std::make_unique<HostChain>(engine, dim, layer_ms);
}

}  // namespace zoro::bench
