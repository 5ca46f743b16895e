// Gpt's host-backend compute: RefGpt<float> on the store's compute stream, reading fp32
// working weights in place, or an fp32 copy of 16-bit ones widened at every forward.
#include <cstring>
#include <mutex>
#include <utility>

#include "examples/zoro_train/model/device_ops.h"
#include "examples/zoro_train/model/gpt_compute.h"
#include "examples/zoro_train/model/ref_gpt.h"
#include "runtime/base/check.h"

namespace zoro::train::detail {

namespace {

class HostCompute final : public GptCompute {
 public:
  HostCompute(const GptConfig& config, ParamStore& params, const GptOptions& options)
      : params_(params),
        stream_(params.compute_stream()),
        ops_(make_host_ops()),
        ref_(config, options.max_batch * options.seq_len, options.recompute, params.device(),
             params.compute_stream()) {
    const auto& tensors = params.tensors();
    std::vector<const float*> weights(tensors.size());
    if (params.dtype() == DType::kF32) {
      for (std::size_t t = 0; t < tensors.size(); ++t) {
        weights[t] = static_cast<const float*>(params.param_data(t));
      }
    } else {
      std::size_t total = 0;
      for (const auto& s : tensors) total += (s.numel() + 63) / 64 * 64;
      mirror_ = params.device().allocate(device::MemoryKind::kDevice, total * 4);
      float* at = mirror_.as<float>();
      for (std::size_t t = 0; t < tensors.size(); ++t) {
        mirror_at_.push_back(at);
        weights[t] = at;
        at += (tensors[t].numel() + 63) / 64 * 64;
      }
    }
    ref_.set_weights(std::move(weights));
  }

  ~HostCompute() override {
    try {
      stream_.synchronize();  // the "keep loss" tasks use this object
    } catch (const std::exception& e) {
      ZORO_LOG(kError) << "Gpt shutdown: " << e.what();
    }
  }

  void forward(const DeviceBatch& batch) override {
    if (mirror_) {
      // The working weights as of this forward (in stream order after the store's uploads).
      const auto& tensors = params_.tensors();
      for (std::size_t t = 0; t < tensors.size(); ++t) {
        ops_->cast_to_f32(mirror_at_[t], params_.param_data(t), params_.dtype(), tensors[t].numel(),
                          stream_);
      }
    }
    ref_.forward(batch.inputs, batch.targets, batch.B, batch.T);
    if (batch.targets != nullptr) {
      stream_.launch_host_fn("keep loss", [this] {
        std::lock_guard lock(mutex_);
        losses_.push_back(ref_.loss());
      });
    }
  }

  void backward(const DeviceBatch& batch, float dloss) override {
    ref_.backward(batch.inputs, batch.targets, batch.B, batch.T, dloss,
                  [this](std::size_t t, const float* grad) { params_.hand_grad(t, grad); });
  }

  std::vector<double> take_losses() override {
    stream_.synchronize();
    std::lock_guard lock(mutex_);
    return std::exchange(losses_, {});
  }

  void argmax(std::int32_t* out, int rows) override { ref_.argmax(out, rows); }

  std::vector<float> logits_row(int row) override {
    stream_.synchronize();
    const std::size_t V = params_.tensors()[kWte].shape[0];
    std::vector<float> out(V);
    params_.device().copy(out.data(), ref_.logits() + static_cast<std::size_t>(row) * V, V * 4);
    return out;
  }

  std::size_t device_bytes() const override { return ref_.device_bytes() + mirror_.bytes(); }

 private:
  ParamStore& params_;
  device::Stream& stream_;
  std::unique_ptr<DeviceOps> ops_;
  device::Buffer mirror_;          // fp32 copy of 16-bit working weights
  std::vector<float*> mirror_at_;  // per tensor, into mirror_
  RefGpt<float> ref_;
  std::mutex mutex_;
  std::vector<double> losses_;
};

}  // namespace

std::unique_ptr<GptCompute> make_host_compute(const GptConfig& config, ParamStore& params,
                                              const GptOptions& options) {
  return std::make_unique<HostCompute>(config, params, options);
}

}  // namespace zoro::train::detail
