// RefGpt<R>: GPT-2's forward and backward on the reference kernels (kernels/ref), as the
// host backend runs them. R = float is what the trainer computes with; R = double runs the
// very same code for the finite-difference tests (tests/train/model).
//
// Contract:
// - Every kernel call is one host task on `stream` (Stream::launch_host_fn), so it is ordered
//   with the parameter store's copies on the same stream; nothing runs on the calling thread.
//   Activations, saved statistics and gradient scratch are allocated once, in the device's
//   memory (MemoryKind::kDevice), sized for max_tokens = B * T tokens.
// - Weights are device pointers of R values, one per tensor in gpt_tensors() order
//   (set_weights); they must stay valid and unchanged from forward() to the end of backward().
// - backward() hands each tensor's gradient (R, written into a scratch buffer that later work
//   reuses) to `hand` on the calling thread right after the work computing it, and after the
//   last work reading that tensor's weights, was enqueued (Note [Gradient hand-off]).
// - Note [Activation recomputation]: with recompute, only each block's input (the residual
//   stream) is kept for all layers; one block's activations are shared, and backward
//   recomputes a block's forward before its backward. The kernels are deterministic, so
//   losses and gradients are identical with and without it.
//
// Note [Gradient hand-off]: backward runs the LM head (whose weight is wte, tied), ln_f, the
// blocks from last to first (per block: c_proj of the MLP, c_fc, ln_2, c_proj of attention,
// c_attn, ln_1), and the embedding. wte's gradient gets the LM head's contribution first and
// the embedding's last, so it accumulates in a scratch buffer of its own and is handed at the
// very end; every other tensor's gradient is handed as soon as its kernel is enqueued, so
// its copy to the host overlaps the rest of backward.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "examples/zoro_train/model/gpt_config.h"
#include "runtime/device/device.h"

namespace zoro::train {

template <class R>
class RefGpt {
 public:
  using GradHandler = std::function<void(std::size_t tensor, const R* grad)>;

  RefGpt(const GptConfig& config, int max_tokens, bool recompute, device::Device& device,
         device::Stream& stream);
  ~RefGpt();
  RefGpt(const RefGpt&) = delete;
  RefGpt& operator=(const RefGpt&) = delete;

  void set_weights(std::vector<const R*> weights);

  // Enqueues the forward pass over inputs (B, T) (device memory; B*T <= max_tokens, T <=
  // max_seq). With targets (device memory, in [0, vocab)), also the per-position losses and
  // their mean (loss(), once the stream has run it).
  void forward(const std::int32_t* inputs, const std::int32_t* targets, int B, int T);
  // Enqueues the backward pass of the last forward (the same inputs and targets), for the
  // objective dloss * mean loss (dloss folds in gradient accumulation and a loss scale).
  void backward(const std::int32_t* inputs, const std::int32_t* targets, int B, int T, R dloss,
                const GradHandler& hand);

  // The mean loss of the last forward with targets; read after synchronizing the stream.
  double loss() const { return loss_; }
  // (B*T, vocab) logits of the last forward (device memory); backward overwrites them.
  const R* logits() const { return logits_; }
  // Enqueues argmax over the vocabulary of each of the last forward's B*T rows into out
  // (device memory).
  void argmax(std::int32_t* out, int rows);

  std::size_t device_bytes() const { return buffer_.bytes(); }
  int max_tokens() const { return max_tokens_; }

 private:
  struct LayerActs {
    R *ln1, *mean1, *rstd1, *qkv, *atty, *lse, *res2, *ln2, *mean2, *rstd2, *fch, *fchg;
  };
  template <class Fn>
  void enqueue(const char* label, Fn&& fn);
  void zero(R* p, std::size_t n);
  void block_forward(int layer, const LayerActs& a, const R* x, R* out, int B, int T);
  void block_backward(int layer, const LayerActs& a, const R* x, int B, int T,
                      const GradHandler& hand);
  const R* w(std::size_t t) const { return weights_[t]; }
  const R* w(int layer, BlockTensor t) const { return weights_[block_tensor(layer, t)]; }
  const LayerActs& acts(int layer) const { return layers_[recompute_ ? 0 : layer]; }

  GptConfig cfg_;
  int max_tokens_;
  bool recompute_;
  device::Stream& stream_;
  device::Buffer buffer_;
  std::vector<const R*> weights_;
  std::vector<R*> res_;  // layers + 1 residual streams (N, C)
  std::vector<LayerActs> layers_;
  R *tmp_, *lnf_, *meanf_, *rstdf_, *logits_, *losses_, *ce_lse_;
  R *dres_, *da_, *db_, *dc_, *gw_, *gb_, *dwte_;
  std::size_t gw_elems_ = 0;
  double loss_ = 0;
};

extern template class RefGpt<float>;
extern template class RefGpt<double>;

}  // namespace zoro::train
