// Internal to the model library: the elementwise device work the parameter stores and the
// model need besides the layer kernels (casts, gradient accumulation, squared norms, AdamW),
// behind one interface with two implementations: host tasks running kernels/ref and
// offload/ (the host backend), and kernels/cuda launches (CUDA builds only; cuda_ops.cpp).
//
// Contract: every function only enqueues work on `stream` (in stream order with the rest of
// the model's work) and returns; pointers are device memory of the stream's device. Results
// are those of the engine's host pipeline bit for bit on the host backend (casts round to
// nearest even as runtime/base/half.h, sums of squares as offload::sum_squares, AdamW as
// offload/optim's Adam with fp32 moments).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/ref/kernels.h"
#include "runtime/base/dtype.h"
#include "runtime/device/device.h"

namespace zoro::train::detail {

class DeviceOps {
 public:
  virtual ~DeviceOps() = default;
  // The implementation for `device`'s backend (Unsupported for CUDA in a build without it).
  static std::unique_ptr<DeviceOps> create(device::Device& device);

  // dst (dtype) = src rounded; a plain copy for fp32.
  virtual void cast_from_f32(void* dst, DType dtype, const float* src, std::size_t n,
                             device::Stream& stream) = 0;
  // dst = src (dtype) widened (exact).
  virtual void cast_to_f32(float* dst, const void* src, DType dtype, std::size_t n,
                           device::Stream& stream) = 0;
  // acc = g (first) or acc += g, in fp32; *non_finite |= any g is Inf/NaN (an int flag in
  // device memory that only ever goes from 0 to 1).
  virtual void accumulate(float* acc, const float* g, std::size_t n, bool first, int* non_finite,
                          device::Stream& stream) = 0;
  // *out (device memory) = sum of squares of x[0, n) in double (Note [Deterministic norm]
  // on the host backend; a tree order on CUDA).
  virtual void sum_squares(double* out, const float* x, std::size_t n, device::Stream& stream) = 0;
  // ref::adamw_step / cuda::adamw_step over n elements; bf16_out may be null.
  virtual void adamw(float* master, float* m, float* v, const float* grad, std::uint16_t* bf16_out,
                     std::size_t n, const kernels::ref::AdamWConfig& config, std::int64_t step,
                     float grad_scale, device::Stream& stream) = 0;
};

std::unique_ptr<DeviceOps> make_host_ops();
// cuda_ops.cpp in CUDA builds; otherwise throws Unsupported.
std::unique_ptr<DeviceOps> make_cuda_ops();

}  // namespace zoro::train::detail
