// GPT-2 weights: the random initialisation, and the mapping to and from GPT-2's checkpoint
// tensors (Hugging Face's GPT2Model safetensors names), independent of the file format: the
// io library (examples/zoro_train/io) reads and writes the files, these functions produce and
// consume {name, shape, fp32 values} lists.
//
// Note [Conv1D transpose]: GPT-2 stores its linear layers as Conv1D weights of shape (IC, OC);
// the kernels want (OC, IC) (nn.Linear). The mapping transposes attn.c_attn, attn.c_proj,
// mlp.c_fc and mlp.c_proj weights both ways; every other tensor keeps its shape.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "examples/zoro_train/model/gpt_config.h"
#include "examples/zoro_train/model/param_store.h"

namespace zoro::train {

// GPT-2's initialisation, deterministic from `seed` (each tensor drawn from its own stream,
// so a tensor's values do not depend on the others): linear weights and embeddings
// normal(0, 0.02), the residual projections (attn.c_proj, mlp.c_proj weights) scaled by
// 1/sqrt(2 * layers), biases 0, layernorm weights 1 and biases 0.
TensorInit gpt2_init(const GptConfig& config, std::uint64_t seed);

// Values given per tensor (gpt_tensors order), as a TensorInit (sizes checked when called).
TensorInit values_init(std::vector<std::vector<float>> values);

struct NamedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<float> values;  // row-major, product of shape elements
};

// Our tensors (gpt_tensors order, our layout) as GPT-2 checkpoint tensors.
std::vector<NamedTensor> to_gpt2_tensors(const GptConfig& config,
                                         const std::vector<std::vector<float>>& ours);
// The store's fp32 master weights as GPT-2 checkpoint tensors (flushes the store).
std::vector<NamedTensor> to_gpt2_tensors(const GptConfig& config, ParamStore& params);

// Finds a checkpoint tensor by GPT-2 name; nullopt when absent.
using TensorLookup = std::function<std::optional<NamedTensor>(const std::string& name)>;
// Our tensors from a GPT-2 checkpoint. Names are looked up as is, then with the prefix
// "transformer." (GPT2LMHeadModel files). Extra tensors are ignored. A missing tensor or one
// of another shape throws InvalidArgument naming the tensor and the expected and found shapes.
std::vector<std::vector<float>> from_gpt2_tensors(const GptConfig& config,
                                                  const TensorLookup& lookup);
std::vector<std::vector<float>> from_gpt2_tensors(const GptConfig& config,
                                                  std::span<const NamedTensor> tensors);

}  // namespace zoro::train
