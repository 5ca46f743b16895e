#include "examples/zoro_train/model/gpt_weights.h"

#include <cmath>
#include <random>
#include <sstream>
#include <unordered_map>

#include "runtime/base/check.h"

namespace zoro::train {

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Note [Conv1D transpose]: the four linear weights of a block.
bool is_conv1d_weight(const std::string& name) {
  return ends_with(name, "attn.c_attn.weight") || ends_with(name, "attn.c_proj.weight") ||
         ends_with(name, "mlp.c_fc.weight") || ends_with(name, "mlp.c_proj.weight");
}

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::ostringstream s;
  s << "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ")";
  return s.str();
}

// (rows, cols) row-major -> (cols, rows).
std::vector<float> transpose(const std::vector<float>& in, std::size_t rows, std::size_t cols) {
  std::vector<float> out(in.size());
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < cols; ++c) out[c * rows + r] = in[r * cols + c];
  }
  return out;
}

}  // namespace

TensorInit gpt2_init(const GptConfig& config, std::uint64_t seed) {
  config.validate();
  auto tensors = std::make_shared<std::vector<TensorSpec>>(gpt_tensors(config));
  const double residual_std = 0.02 / std::sqrt(2.0 * config.layers);
  return [tensors, seed, residual_std](std::size_t t, std::span<float> values) {
    ZORO_CHECK(t < tensors->size(), "gpt2_init: tensor index " << t << " out of range");
    const TensorSpec& spec = (*tensors)[t];
    ZORO_CHECK(values.size() == spec.numel(), "gpt2_init: '" << spec.name << "' has "
                                                             << spec.numel() << " elements, "
                                                             << values.size() << " given");
    const std::string& n = spec.name;
    if (ends_with(n, "ln_1.weight") || ends_with(n, "ln_2.weight") || n == "ln_f.weight") {
      std::fill(values.begin(), values.end(), 1.f);
      return;
    }
    if (ends_with(n, ".bias")) {
      std::fill(values.begin(), values.end(), 0.f);
      return;
    }
    const bool residual = ends_with(n, "attn.c_proj.weight") || ends_with(n, "mlp.c_proj.weight");
    std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                      static_cast<std::uint32_t>(t)};
    std::mt19937_64 rng(seq);
    std::normal_distribution<float> dist(0.f, static_cast<float>(residual ? residual_std : 0.02));
    for (float& v : values) v = dist(rng);
  };
}

TensorInit values_init(std::vector<std::vector<float>> values) {
  auto shared = std::make_shared<std::vector<std::vector<float>>>(std::move(values));
  return [shared](std::size_t t, std::span<float> out) {
    ZORO_CHECK(t < shared->size(), "values_init: no values for tensor " << t);
    const auto& v = (*shared)[t];
    ZORO_CHECK(v.size() == out.size(), "values_init: tensor " << t << " has " << out.size()
                                                              << " elements, " << v.size()
                                                              << " values given");
    std::copy(v.begin(), v.end(), out.begin());
  };
}

std::vector<NamedTensor> to_gpt2_tensors(const GptConfig& config,
                                         const std::vector<std::vector<float>>& ours) {
  const auto specs = gpt_tensors(config);
  ZORO_CHECK(ours.size() == specs.size(), "to_gpt2_tensors: " << ours.size()
                                                              << " tensors given, the model has "
                                                              << specs.size());
  std::vector<NamedTensor> out;
  out.reserve(specs.size());
  for (std::size_t t = 0; t < specs.size(); ++t) {
    const TensorSpec& s = specs[t];
    ZORO_CHECK(ours[t].size() == s.numel(), "to_gpt2_tensors: '"
                                                << s.name << "' has " << ours[t].size()
                                                << " values, expected " << s.numel());
    if (is_conv1d_weight(s.name)) {
      const auto oc = static_cast<std::size_t>(s.shape[0]);
      const auto ic = static_cast<std::size_t>(s.shape[1]);
      out.push_back({s.name, {s.shape[1], s.shape[0]}, transpose(ours[t], oc, ic)});
    } else {
      out.push_back({s.name, s.shape, ours[t]});
    }
  }
  return out;
}

std::vector<NamedTensor> to_gpt2_tensors(const GptConfig& config, ParamStore& params) {
  std::vector<std::vector<float>> ours;
  for (std::size_t t = 0; t < params.tensors().size(); ++t) ours.push_back(params.master(t));
  return to_gpt2_tensors(config, ours);
}

std::vector<std::vector<float>> from_gpt2_tensors(const GptConfig& config,
                                                  const TensorLookup& lookup) {
  const auto specs = gpt_tensors(config);
  std::vector<std::vector<float>> out;
  out.reserve(specs.size());
  for (const TensorSpec& s : specs) {
    const bool conv = is_conv1d_weight(s.name);
    const std::vector<std::int64_t> expect =
        conv ? std::vector<std::int64_t>{s.shape[1], s.shape[0]} : s.shape;
    std::optional<NamedTensor> found = lookup(s.name);
    if (!found) found = lookup("transformer." + s.name);
    ZORO_CHECK(found.has_value(), "GPT-2 weights: tensor '" << s.name << "' is missing (expected "
                                                            << shape_str(expect) << ")");
    ZORO_CHECK(found->shape == expect, "GPT-2 weights: tensor '"
                                           << s.name << "' has shape " << shape_str(found->shape)
                                           << ", expected " << shape_str(expect) << " for "
                                           << config.to_string());
    ZORO_CHECK(found->values.size() == s.numel(),
               "GPT-2 weights: tensor '" << s.name << "' holds " << found->values.size()
                                         << " values for shape " << shape_str(found->shape));
    if (conv) {
      out.push_back(transpose(found->values, static_cast<std::size_t>(expect[0]),
                              static_cast<std::size_t>(expect[1])));
    } else {
      out.push_back(std::move(found->values));
    }
  }
  return out;
}

std::vector<std::vector<float>> from_gpt2_tensors(const GptConfig& config,
                                                  std::span<const NamedTensor> tensors) {
  std::unordered_map<std::string, const NamedTensor*> by_name;
  for (const auto& t : tensors) by_name.emplace(t.name, &t);
  return from_gpt2_tensors(config, [&](const std::string& name) -> std::optional<NamedTensor> {
    auto it = by_name.find(name);
    if (it == by_name.end()) return std::nullopt;
    return *it->second;
  });
}

}  // namespace zoro::train
