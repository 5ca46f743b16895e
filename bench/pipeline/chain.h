// The "GPU compute" of bench/pipeline's synthetic model: per layer l, one square weight W_l
// (dim x dim) held by the Engine, a forward and a backward that writes W_l's gradient into the
// slot the engine hands out. Both run on the engine's compute stream.
#pragma once

#include <memory>
#include <string>

#include "runtime/engine.h"

namespace zoro::bench {

class ComputeChain {
 public:
  virtual ~ComputeChain() = default;
  virtual void forward(int layer) = 0;
  // Writes the gradient of layer `layer`'s weight (bf16, dim x dim) into `grad_slot`.
  virtual void backward(int layer, void* grad_slot) = 0;
  virtual std::string describe() const = 0;
};

// Host backend: each layer's forward and backward are compute-stream tasks that sleep (a GPU
// computes without using the host's cores), 1/3 and 2/3 of layer_ms; gradients are memsets.
std::unique_ptr<ComputeChain> make_host_chain(Engine& engine, int dim, double layer_ms);

// CUDA backend: cuBLAS bf16 GEMMs with fp32 accumulation over `tokens` rows: forward
// y = x W^T, backward dX = dY W and dW = dY^T X (into an fp32 scratch, then cast into the
// slot). Throws Unsupported in a build without CUDA.
std::unique_ptr<ComputeChain> make_gpu_chain(Engine& engine, const std::vector<ParamId>& weights,
                                             int dim, int tokens);

}  // namespace zoro::bench
