// GptConfig: the shape of a GPT-2 model, its presets, and its parameter tensors.
//
// Contract: validate() refuses a shape the kernels cannot run (InvalidArgument naming the
// field and value): non-positive sizes, channels not divisible by heads, and any product
// the kernels index with int (B*T*4C, V*C, ...) overflowing int32 at max_seq tokens.
// Everything else about a shape is size_t: a model of billions of parameters is fine.
//
// Note [Tensor order]: gpt_tensors() lists every parameter tensor in one fixed order, which
// is the order they are registered with a ParamStore (and so the engine's flat layout and its
// checkpoints): wte, wpe, then per block the twelve tensors of BlockTensor, then ln_f. The
// names are GPT-2's (the safetensors names of Hugging Face's GPT2Model); linear weights are
// (OC, IC) as kernels/ref wants them (GPT-2's Conv1D stores them (IC, OC): gpt_weights.h
// transposes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace zoro::train {

struct GptConfig {
  int vocab = 257;    // token ids are in [0, vocab)
  int max_seq = 64;   // positions (wpe rows)
  int layers = 2;     // transformer blocks
  int heads = 4;      // attention heads; channels % heads == 0
  int channels = 64;  // model width C

  // The named presets: "gpt2" (124M), "gpt2-medium", "gpt2-large", "gpt2-xl", "tiny", and
  // "default" (the embedded default run's model: byte vocabulary, small enough to train
  // visibly on two CPU cores). InvalidArgument listing the names for an unknown one.
  static GptConfig preset(std::string_view name);
  // A preset with some dimensions replaced (0 keeps the preset's), as the command lines of
  // zoro-train and zoro-bench-train give them; not validated (callers may adjust more first).
  static GptConfig preset(std::string_view name, int layers, int heads, int channels, int vocab,
                          int max_seq);
  static std::vector<std::string> preset_names();

  // InvalidArgument naming the first bad field ("channels=100 is not a multiple of heads=3").
  void validate() const;

  int head_size() const { return channels / heads; }
  // Parameters (every tensor of gpt_tensors).
  std::size_t num_params() const;
  // Training FLOPs per token at sequence length seq_len: 6 per weight that multiplies
  // (every parameter but wpe, wte counted once as the LM head) plus attention's
  // 12 * layers * channels * seq_len (QK^T and PV, forward and backward), as in PaLM's MFU.
  double flops_per_token(int seq_len) const;
  // "layers=12 heads=12 channels=768 vocab=50257 max_seq=1024 (124.4M parameters)".
  std::string to_string() const;

  friend bool operator==(const GptConfig&, const GptConfig&) = default;
};

// The tensors of one block, in their order within the block (Note [Tensor order]).
enum class BlockTensor : int {
  kLn1Weight,
  kLn1Bias,
  kQkvWeight,       // (3C, C)  attn.c_attn
  kQkvBias,         // (3C)
  kAttnProjWeight,  // (C, C)   attn.c_proj
  kAttnProjBias,    // (C)
  kLn2Weight,
  kLn2Bias,
  kFcWeight,      // (4C, C)  mlp.c_fc
  kFcBias,        // (4C)
  kFcProjWeight,  // (C, 4C)  mlp.c_proj
  kFcProjBias,    // (C)
};
inline constexpr int kTensorsPerBlock = 12;

// Tensor indices into gpt_tensors().
inline constexpr std::size_t kWte = 0;
inline constexpr std::size_t kWpe = 1;
inline std::size_t block_tensor(int layer, BlockTensor t) {
  return 2 + static_cast<std::size_t>(layer) * kTensorsPerBlock + static_cast<std::size_t>(t);
}
inline std::size_t lnf_weight(const GptConfig& c) {
  return 2 + static_cast<std::size_t>(c.layers) * kTensorsPerBlock;
}
inline std::size_t lnf_bias(const GptConfig& c) { return lnf_weight(c) + 1; }
inline std::size_t num_tensors(const GptConfig& c) { return lnf_bias(c) + 1; }

struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  std::size_t numel() const;
};

// Every parameter tensor, in Note [Tensor order].
std::vector<TensorSpec> gpt_tensors(const GptConfig& config);

}  // namespace zoro::train
