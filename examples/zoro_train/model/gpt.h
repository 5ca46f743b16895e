// Gpt: GPT-2 (pre-LN blocks, tied embeddings) trained on zoro: forward and backward of a
// micro-batch on the parameter store's compute stream, each tensor's gradient handed to the
// store (ParamStore::hand_grad) as soon as backward has computed it.
//
//   block:  x -> ln_1 -> c_attn (qkv) -> causal attention -> c_proj -> + x
//             -> ln_2 -> c_fc (4C) -> GELU -> c_proj -> + ;   logits = ln_f(x_L) . wte^T
//
// Two compute backends behind this one class, picked by the store's device:
// - host backend: the reference kernels in float (RefGpt<float>, ref_gpt.h), each kernel a
//   host task on the compute stream. fp32 working weights are read in place; bf16/fp16 ones
//   are widened into an fp32 copy on the device at the start of every forward.
// - CUDA (gpt_cuda.cpp, CUDA builds): kernels/cuda with bf16 activations (fp32 for fp32
//   weights), cuBLAS bound to the compute stream.
//
// Contract: the model allocates its activations once, on the device, for options.max_batch
// sequences of options.seq_len tokens (OutOfMemory from the device naming the numbers when
// they do not fit). Batches are device pointers (DeviceBatch). Every method is called from
// the store's driving thread. Errors raised by a kernel (a token id out of range on the host
// backend) surface at the next synchronising call (loss(), the trainer's step).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "examples/zoro_train/model/gpt_config.h"
#include "examples/zoro_train/model/param_store.h"

namespace zoro::train {

// One micro-batch in device memory: inputs and targets (B, T) int32 token ids, row-major.
struct DeviceBatch {
  const std::int32_t* inputs = nullptr;
  const std::int32_t* targets = nullptr;  // may be null for a forward without loss
  int B = 0;
  int T = 0;
};

struct GptOptions {
  int max_batch = 1;       // sequences per micro-batch the activations are sized for
  int seq_len = 0;         // tokens per sequence they are sized for; 0: config.max_seq
  bool recompute = false;  // per-block activation recomputation (Note [Activation recomputation])
};

struct SampleOptions {
  float temperature = 1.f;  // > 0; ignored when greedy
  bool greedy = false;      // argmax instead of sampling
  int top_k = 0;            // sample among the k most likely tokens; 0: all
  std::uint64_t seed = 0;
};

namespace detail {
class GptCompute;  // the backend's forward/backward (internal)
}

class Gpt {
 public:
  // Validates config and options (InvalidArgument naming the field), checks that the store
  // holds gpt_tensors(config), and allocates the activations.
  Gpt(GptConfig config, ParamStore& params, GptOptions options = {});
  ~Gpt();
  Gpt(const Gpt&) = delete;
  Gpt& operator=(const Gpt&) = delete;

  const GptConfig& config() const { return config_; }
  const GptOptions& options() const { return options_; }
  ParamStore& params() { return params_; }

  // Enqueues forward and backward of one micro-batch inside the store's open micro-step
  // (begin_micro_step() called): the gradient of dloss * mean loss is handed to the store.
  void forward_backward(const DeviceBatch& batch, float dloss);
  // Enqueues a forward pass only (evaluation, generation); the loss when targets are given.
  void forward(const DeviceBatch& batch);
  // The mean losses of the forwards with targets since the last call, in order (synchronizes
  // the compute stream, rethrowing a kernel's error). At most kMaxPendingLosses forwards may
  // run between two calls (the CUDA compute keeps that many losses on the device).
  static constexpr int kMaxPendingLosses = 16;
  std::vector<double> take_losses();
  // Argmax over the vocabulary at each of the last forward's B*T positions (synchronizes).
  std::vector<std::int32_t> predictions();
  // Continues `prompt` (token ids in [0, vocab), at least one) by n tokens, sampled from the
  // last position's logits (a forward over the last max_seq tokens per new token).
  std::vector<std::int32_t> generate(std::span<const std::int32_t> prompt, int n,
                                     const SampleOptions& sample = {});

  // Device bytes of activations and scratch the model allocated.
  std::size_t activation_bytes() const;

 private:
  GptConfig config_;
  ParamStore& params_;
  GptOptions options_;
  std::unique_ptr<detail::GptCompute> compute_;
  device::Buffer tokens_;       // generate(): the context
  device::Buffer predictions_;  // predictions(): argmax per position
  int last_rows_ = 0;
};

}  // namespace zoro::train
