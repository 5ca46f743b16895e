// The GEMM chain on CUDA (CUDA builds only): cuBLAS through kernels/cuda. And the optimizer-on-
// the-device baseline built on it (kernels/cuda's adamw_step).
#include <cuda_bf16.h>

#include <algorithm>
#include <functional>
#include <utility>

#include "bench/pipeline/chain.h"
#include "kernels/cuda/kernels.h"
#include "runtime/base/check.h"

namespace zoro::bench {

namespace {
using kernels::cuda::bf16;

// Layer l's working weight (device, bf16, dim x dim), asked at each use.
using WeightFn = std::function<const bf16*(std::size_t layer)>;

class GpuChain final : public ComputeChain {
 public:
  GpuChain(device::Device& dev, device::Stream& stream, WeightFn weight, int layers, int dim,
           int tokens)
      : stream_(stream),
        weight_(std::move(weight)),
        layers_(layers),
        dim_(dim),
        tokens_(tokens),
        native_(kernels::cuda::native_stream(stream)),
        ctx_(native_) {
    const std::size_t act = static_cast<std::size_t>(tokens) * dim * sizeof(bf16);
    for (int l = 0; l <= layers; ++l) {
      acts_.push_back(dev.allocate(device::MemoryKind::kDevice, act));
      // bf16 0x3c3c = 0.0115 everywhere: finite, and the chain neither explodes nor vanishes
      // to zero over a few layers with the engine's small weights.
      stream.memset_async(acts_.back().data(), 0x3c, act);
    }
    for (auto& g : grad_act_) {
      g = dev.allocate(device::MemoryKind::kDevice, act);
      stream.memset_async(g.data(), 0, act);
    }
    dw32_ = dev.allocate(device::MemoryKind::kDevice, static_cast<std::size_t>(dim) * dim * 4);
  }

  void forward(int layer) override {
    const auto l = static_cast<std::size_t>(layer);
    kernels::cuda::matmul_forward<bf16>(ctx_, acts_[l + 1].as<bf16>(), acts_[l].as<bf16>(),
                                        weight_(l), nullptr, tokens_, dim_, dim_);
  }

  void backward(int layer, void* grad_slot) override {
    const auto l = static_cast<std::size_t>(layer);
    // dout of the top layer: its own output stands in for dL/dy.
    const bf16* dout =
        layer == layers_ - 1 ? acts_[l + 1].as<bf16>() : grad_act_[current_].as<bf16>();
    bf16* dinp = grad_act_[1 - current_].as<bf16>();
    const std::size_t act = static_cast<std::size_t>(tokens_) * dim_ * sizeof(bf16);
    stream_.memset_async(dinp, 0, act);  // matmul_backward accumulates
    stream_.memset_async(dw32_.data(), 0, dw32_.bytes());
    kernels::cuda::matmul_backward<bf16>(ctx_, dinp, dw32_.as<float>(), nullptr, dout,
                                         acts_[l].as<bf16>(), weight_(l), tokens_, dim_, dim_);
    kernels::cuda::cast_f32_to_bf16(static_cast<bf16*>(grad_slot), dw32_.as<float>(),
                                    static_cast<std::size_t>(dim_) * dim_, native_);
    current_ = 1 - current_;
  }

  std::string describe() const override {
    return "cuBLAS bf16 GEMMs, " + std::to_string(tokens_) + " tokens x " + std::to_string(dim_) +
           " x " + std::to_string(dim_) + " per layer (fwd + 2 bwd)";
  }

 private:
  device::Stream& stream_;
  WeightFn weight_;
  int layers_, dim_, tokens_;
  cudaStream_t native_;
  kernels::cuda::CublasContext ctx_;
  std::vector<device::Buffer> acts_;
  device::Buffer grad_act_[2];
  device::Buffer dw32_;
  int current_ = 0;
};

class GpuDeviceOptimizerModel final : public DeviceOptimizerModel {
 public:
  GpuDeviceOptimizerModel(device::Device& dev, int layers, int dim, int tokens, float lr)
      : layer_count_(layers),
        elems_(static_cast<std::size_t>(dim) * dim),
        stream_(dev.create_stream({"no-offload compute"})),
        native_(kernels::cuda::native_stream(*stream_)),
        step_start_(dev.create_event({.timing = true})),
        update_start_(dev.create_event({.timing = true})),
        step_end_(dev.create_event({.timing = true})) {
    config_.lr = lr;
    // Everything is allocated before any work is enqueued: an OutOfMemory leaves no copy or
    // memset in flight on a buffer being freed.
    auto init = dev.allocate(device::MemoryKind::kPinnedHost, elems_ * 4);
    for (int l = 0; l < layers; ++l) {
      Layer& s = layers_.emplace_back();
      s.weight = dev.allocate(device::MemoryKind::kDevice, elems_ * 2);
      s.grad = dev.allocate(device::MemoryKind::kDevice, elems_ * 2);
      s.master = dev.allocate(device::MemoryKind::kDevice, elems_ * 4);
      s.m = dev.allocate(device::MemoryKind::kDevice, elems_ * 4);
      s.v = dev.allocate(device::MemoryKind::kDevice, elems_ * 4);
    }
    chain_ = std::make_unique<GpuChain>(
        dev, *stream_, [this](std::size_t l) { return layers_[l].weight.as<const bf16>(); }, layers,
        dim, tokens);
    // Master weights 0.01 (as the offload modes' parameters), uploaded from pinned memory; the
    // working weights are their bf16 rounding; m, v and the gradients start at zero.
    std::fill_n(init.as<float>(), elems_, 0.01f);
    for (Layer& s : layers_) {
      stream_->copy_async(s.master.data(), init.data(), elems_ * 4);
      kernels::cuda::cast_f32_to_bf16(s.weight.as<bf16>(), s.master.as<float>(), elems_, native_);
      stream_->memset_async(s.grad.data(), 0, elems_ * 2);
      stream_->memset_async(s.m.data(), 0, elems_ * 4);
      stream_->memset_async(s.v.data(), 0, elems_ * 4);
    }
    stream_->synchronize();  // `init` is freed on return
  }
  // The buffers are freed after this body: let the stream's last step finish first. A failed
  // step surfaces in the caller's synchronize(); a destructor must not throw.
  ~GpuDeviceOptimizerModel() override {
    try {
      stream_->synchronize();
    } catch (const std::exception&) {
    }
  }
  GpuDeviceOptimizerModel(const GpuDeviceOptimizerModel&) = delete;
  GpuDeviceOptimizerModel& operator=(const GpuDeviceOptimizerModel&) = delete;

  void enqueue_step(std::int64_t step) override {
    step_start_->record(*stream_);
    for (int l = 0; l < layer_count_; ++l) chain_->forward(l);
    for (int l = layer_count_; l-- > 0;) {
      chain_->backward(l, layers_[static_cast<std::size_t>(l)].grad.data());
    }
    update_start_->record(*stream_);
    for (Layer& s : layers_) {
      kernels::cuda::adamw_step<bf16>(s.master.as<float>(), s.m.as<float>(), s.v.as<float>(),
                                      s.grad.as<const bf16>(), s.weight.as<bf16>(), elems_, config_,
                                      step, 1.f, native_);
    }
    step_end_->record(*stream_);
  }

  void synchronize() override { stream_->synchronize(); }
  double last_update_ms() const override { return step_end_->elapsed_ms_since(*update_start_); }
  double last_step_ms() const override { return step_end_->elapsed_ms_since(*step_start_); }

  std::string describe() const override {
    return chain_->describe() + "; then kernels/cuda adamw_step per layer (bf16 grad, fp32 state)";
  }

 private:
  struct Layer {
    device::Buffer weight, grad;  // bf16
    device::Buffer master, m, v;  // fp32
  };
  int layer_count_;
  std::size_t elems_;
  kernels::cuda::AdamWConfig config_;
  std::unique_ptr<device::Stream> stream_;
  cudaStream_t native_;
  std::unique_ptr<device::Event> step_start_, update_start_, step_end_;
  std::vector<Layer> layers_;
  std::unique_ptr<GpuChain> chain_;
};

}  // namespace

std::unique_ptr<ComputeChain> make_gpu_chain(Engine& engine, const std::vector<ParamId>& weights,
                                             int dim, int tokens) {
  return std::make_unique<GpuChain>(
      engine.device(), engine.compute_stream(),
      [&engine, weights](std::size_t l) {
        return static_cast<const bf16*>(engine.param_data(weights[l]));
      },
      static_cast<int>(weights.size()), dim, tokens);
}

std::unique_ptr<DeviceOptimizerModel> make_device_optimizer_model(device::Device& device,
                                                                  int layers, int dim, int tokens,
                                                                  float lr) {
  ZORO_CHECK_T(Unsupported, device.backend() == device::BackendKind::kCuda,
               "the optimizer-on-device model needs a CUDA device, not " << device.info().spec);
  return std::make_unique<GpuDeviceOptimizerModel>(device, layers, dim, tokens, lr);
}

}  // namespace zoro::bench
