// DeviceOps on the host backend: each call one host task on the stream running the
// reference kernels (kernels/ref) or offload/'s deterministic sum of squares.
#include <cmath>
#include <cstring>

#include "examples/zoro_train/model/device_ops.h"
#include "offload/grad_fold.h"
#include "runtime/base/check.h"

namespace zoro::train::detail {

namespace {

class HostOps final : public DeviceOps {
 public:
  void cast_from_f32(void* dst, DType dtype, const float* src, std::size_t n,
                     device::Stream& stream) override {
    stream.launch_host_fn("cast f32->" + std::string(to_string(dtype)), [=] {
      auto* d = static_cast<std::uint16_t*>(dst);
      switch (dtype) {
        case DType::kF32:
          std::memcpy(dst, src, n * 4);
          break;
        case DType::kBF16:
          kernels::ref::cast_f32_to_bf16(d, src, n);
          break;
        case DType::kF16:
          kernels::ref::cast_f32_to_f16(d, src, n);
          break;
      }
    });
  }

  void cast_to_f32(float* dst, const void* src, DType dtype, std::size_t n,
                   device::Stream& stream) override {
    stream.launch_host_fn("cast " + std::string(to_string(dtype)) + "->f32", [=] {
      const auto* s = static_cast<const std::uint16_t*>(src);
      switch (dtype) {
        case DType::kF32:
          std::memcpy(dst, src, n * 4);
          break;
        case DType::kBF16:
          kernels::ref::cast_bf16_to_f32(dst, s, n);
          break;
        case DType::kF16:
          kernels::ref::cast_f16_to_f32(dst, s, n);
          break;
      }
    });
  }

  void accumulate(float* acc, const float* g, std::size_t n, bool first, int* non_finite,
                  device::Stream& stream) override {
    stream.launch_host_fn("accumulate gradient", [=] {
      bool bad = false;
      if (first) {
        for (std::size_t i = 0; i < n; ++i) {
          acc[i] = g[i];
          bad |= !std::isfinite(g[i]);
        }
      } else {
        for (std::size_t i = 0; i < n; ++i) {
          acc[i] += g[i];
          bad |= !std::isfinite(g[i]);
        }
      }
      if (bad) *non_finite = 1;
    });
  }

  void sum_squares(double* out, const float* x, std::size_t n, device::Stream& stream) override {
    stream.launch_host_fn("sum of squares", [=] { *out = offload::sum_squares(x, n); });
  }

  void adamw(float* master, float* m, float* v, const float* grad, std::uint16_t* bf16_out,
             std::size_t n, const kernels::ref::AdamWConfig& config, std::int64_t step,
             float grad_scale, device::Stream& stream) override {
    // Checked now, on the caller's thread, so a bad value throws here and not in the task.
    (void)kernels::ref::adamw_coefficients(config, step, grad_scale);
    stream.launch_host_fn("adamw", [=] {
      kernels::ref::adamw_step(master, m, v, grad, bf16_out, n, config, step, grad_scale);
    });
  }
};

}  // namespace

std::unique_ptr<DeviceOps> make_host_ops() { return std::make_unique<HostOps>(); }

std::unique_ptr<DeviceOps> DeviceOps::create(device::Device& device) {
  if (device.backend() == device::BackendKind::kHost) return make_host_ops();
  return make_cuda_ops();
}

}  // namespace zoro::train::detail
