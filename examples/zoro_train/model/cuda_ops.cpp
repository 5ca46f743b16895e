// DeviceOps on CUDA: kernels/cuda launches on the stream's cudaStream_t (CUDA builds only).
#include "examples/zoro_train/model/device_ops.h"
#include "kernels/cuda/kernels.h"
#include "runtime/base/check.h"

namespace zoro::train::detail {

namespace {

namespace kc = kernels::cuda;

class CudaOps final : public DeviceOps {
 public:
  void cast_from_f32(void* dst, DType dtype, const float* src, std::size_t n,
                     device::Stream& stream) override {
    switch (dtype) {
      case DType::kF32:
        stream.copy_async(dst, src, n * 4);
        break;
      case DType::kBF16:
        kc::cast_f32_to_bf16(static_cast<kc::bf16*>(dst), src, n, kc::native_stream(stream));
        break;
      case DType::kF16:
        kc::cast_f32_to_f16(static_cast<__half*>(dst), src, n, kc::native_stream(stream));
        break;
    }
  }

  void cast_to_f32(float* dst, const void* src, DType dtype, std::size_t n,
                   device::Stream& stream) override {
    switch (dtype) {
      case DType::kF32:
        stream.copy_async(dst, src, n * 4);
        break;
      case DType::kBF16:
        kc::cast_bf16_to_f32(dst, static_cast<const kc::bf16*>(src), n, kc::native_stream(stream));
        break;
      case DType::kF16:
        kc::cast_f16_to_f32(dst, static_cast<const __half*>(src), n, kc::native_stream(stream));
        break;
    }
  }

  void accumulate(float* acc, const float* g, std::size_t n, bool first, int* non_finite,
                  device::Stream& stream) override {
    kc::grad_accumulate(acc, g, n, first, non_finite, kc::native_stream(stream));
  }

  void sum_squares(double* out, const float* x, std::size_t n, device::Stream& stream) override {
    kc::sum_squares(out, x, n, kc::native_stream(stream));
  }

  void adamw(float* master, float* m, float* v, const float* grad, std::uint16_t* bf16_out,
             std::size_t n, const kernels::ref::AdamWConfig& config, std::int64_t step,
             float grad_scale, device::Stream& stream) override {
    kc::adamw_step<float>(master, m, v, grad, reinterpret_cast<kc::bf16*>(bf16_out), n, config,
                          step, grad_scale, kc::native_stream(stream));
  }
};

}  // namespace

std::unique_ptr<DeviceOps> make_cuda_ops() { return std::make_unique<CudaOps>(); }

}  // namespace zoro::train::detail
