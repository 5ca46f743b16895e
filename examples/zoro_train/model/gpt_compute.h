// Internal to the model library: a compute backend of Gpt (gpt.h). Each implementation
// enqueues the whole forward and backward on the store's compute stream and hands every
// tensor's fp32 gradient to the store (Note [Gradient hand-off] in ref_gpt.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "examples/zoro_train/model/gpt.h"

namespace zoro::train::detail {

class GptCompute {
 public:
  virtual ~GptCompute() = default;
  // Enqueues a forward; with targets, the mean loss is kept for take_losses().
  virtual void forward(const DeviceBatch& batch) = 0;
  // Enqueues the backward of the last forward (same batch).
  virtual void backward(const DeviceBatch& batch, float dloss) = 0;
  // Synchronizes the compute stream; the kept losses in order, cleared.
  virtual std::vector<double> take_losses() = 0;
  // Enqueues argmax of each of `rows` rows of the last forward's logits into out (device).
  virtual void argmax(std::int32_t* out, int rows) = 0;
  // Synchronizes; row `row` of the last forward's logits, in fp32.
  virtual std::vector<float> logits_row(int row) = 0;
  virtual std::size_t device_bytes() const = 0;
};

// The reference kernels as host tasks (host backend).
std::unique_ptr<GptCompute> make_host_compute(const GptConfig& config, ParamStore& params,
                                              const GptOptions& options);
// kernels/cuda (gpt_cuda.cpp); in a build without CUDA, throws Unsupported.
std::unique_ptr<GptCompute> make_cuda_compute(const GptConfig& config, ParamStore& params,
                                              const GptOptions& options);

}  // namespace zoro::train::detail
