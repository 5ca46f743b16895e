// The "GPU compute" of bench/pipeline's synthetic model: per layer l, one square weight W_l
// (dim x dim), a forward and a backward that writes W_l's gradient (bf16) into a buffer the
// caller hands in. Both run on one stream: the engine's compute stream in the offload modes.
// And the "optimizer on the device" baseline that runs the same chain without offload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device/device.h"
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
// slot). The weights are the engine's working weights (read at each call: the engine may move
// them). Throws Unsupported in a build without CUDA.
std::unique_ptr<ComputeChain> make_gpu_chain(Engine& engine, const std::vector<ParamId>& weights,
                                             int dim, int tokens);

// Device bytes the GEMM chain allocates for itself: layers + 1 activations and two activation
// gradients (bf16, tokens x dim each), and the fp32 dW scratch (dim x dim).
inline std::size_t gpu_chain_bytes(int layers, int dim, int tokens) {
  const std::size_t act = static_cast<std::size_t>(tokens) * dim * 2;
  return (static_cast<std::size_t>(layers) + 3) * act + static_cast<std::size_t>(dim) * dim * 4;
}

// ---- the optimizer on the device, no offload ----------------------------------------------
// The whole training state lives in device memory: per layer, the bf16 working weight, the
// fp32 master weight, Adam's fp32 m and v, and a bf16 gradient buffer of its own. One step on
// one stream: the GEMM chain's forward, its backward (layer l's gradient into layer l's
// buffer), then kernels/cuda's adamw_step per layer (bf16 gradient in, fp32 state updated,
// new bf16 working weight out). No gradient clipping (the offload modes clip to norm 1).
class DeviceOptimizerModel {
 public:
  virtual ~DeviceOptimizerModel() = default;
  // Enqueues training step `step` (>= 1) and returns before it runs.
  virtual void enqueue_step(std::int64_t step) = 0;
  // Blocks until every enqueued step is done.
  virtual void synchronize() = 0;
  // Device-measured milliseconds of the last completed step's optimizer part (all layers'
  // adamw_step), and of the whole step; call after synchronize().
  virtual double last_update_ms() const = 0;
  virtual double last_step_ms() const = 0;
  virtual std::string describe() const = 0;
};

// Device bytes the model allocates: 16 per parameter (bf16 weight and gradient, fp32 master,
// m, v) and the GEMM chain's own.
inline std::size_t device_optimizer_bytes(int layers, int dim, int tokens) {
  const std::size_t params = static_cast<std::size_t>(layers) * dim * dim;
  return params * (2 + 2 + 4 + 4 + 4) + gpu_chain_bytes(layers, dim, tokens);
}

// Master weights start at 0.01, as the offload modes' parameters; AdamW with lr and the
// defaults otherwise. `device` must be a CUDA device; throws Unsupported in a build without
// CUDA, OutOfMemory when the allocations do not fit.
std::unique_ptr<DeviceOptimizerModel> make_device_optimizer_model(device::Device& device,
                                                                  int layers, int dim, int tokens,
                                                                  float lr);

}  // namespace zoro::bench
