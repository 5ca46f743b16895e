#include "examples/zoro_train/model/gpt_config.h"

#include <climits>
#include <cstdio>
#include <sstream>

#include "runtime/base/check.h"

namespace zoro::train {

namespace {

struct Preset {
  const char* name;
  GptConfig config;
};

// "default": the embedded default run (examples/zoro_train) trains a byte-level model on a
// small synthetic task on two CPU cores in about two minutes: 4 blocks of 128 channels
// (~0.8M parameters) keep a micro-batch of 16 x 64 tokens well under a second on the host
// backend (measured: see the model's report in the README).
const Preset kPresets[] = {
    {"gpt2", {50257, 1024, 12, 12, 768}},
    {"gpt2-medium", {50257, 1024, 24, 16, 1024}},
    {"gpt2-large", {50257, 1024, 36, 20, 1280}},
    {"gpt2-xl", {50257, 1024, 48, 25, 1600}},
    {"tiny", {257, 64, 2, 4, 64}},
    {"default", {257, 64, 4, 4, 128}},
};

constexpr std::int64_t kIntMax = INT_MAX;

}  // namespace

GptConfig GptConfig::preset(std::string_view name) {
  for (const auto& p : kPresets) {
    if (name == p.name) return p.config;
  }
  std::ostringstream names;
  for (const auto& p : kPresets) names << (names.tellp() > 0 ? ", " : "") << p.name;
  ZORO_THROW(InvalidArgument,
             "unknown model preset '" << name << "' (known: " << names.str() << ")");
}

GptConfig GptConfig::preset(std::string_view name, int layers, int heads, int channels, int vocab,
                            int max_seq) {
  GptConfig c = preset(name);
  if (layers > 0) c.layers = layers;
  if (heads > 0) c.heads = heads;
  if (channels > 0) c.channels = channels;
  if (vocab > 0) c.vocab = vocab;
  if (max_seq > 0) c.max_seq = max_seq;
  return c;
}

std::vector<std::string> GptConfig::preset_names() {
  std::vector<std::string> out;
  for (const auto& p : kPresets) out.emplace_back(p.name);
  return out;
}

void GptConfig::validate() const {
  auto positive = [](const char* field, int v) {
    ZORO_CHECK(v > 0, "model " << field << "=" << v << " must be positive");
  };
  positive("vocab", vocab);
  positive("max_seq", max_seq);
  positive("layers", layers);
  positive("heads", heads);
  positive("channels", channels);
  ZORO_CHECK(channels % heads == 0,
             "model channels=" << channels << " is not a multiple of heads=" << heads);
  const std::int64_t c = channels;
  // The kernels take row counts and widths as int (OpenBLAS, CUDA grids): the widest
  // activation (4C) of a whole sequence, and each weight matrix, must index within int32.
  ZORO_CHECK(4 * c * max_seq <= kIntMax, "model channels=" << channels << " x max_seq=" << max_seq
                                                           << ": 4*channels*max_seq overflows "
                                                              "int32");
  ZORO_CHECK(4 * c * c <= kIntMax,
             "model channels=" << channels
                               << ": the MLP weight (4*channels^2 elements) overflows "
                                  "int32");
  ZORO_CHECK(static_cast<std::int64_t>(vocab) * c <= kIntMax,
             "model vocab=" << vocab << " x channels=" << channels
                            << ": the embedding (vocab*channels elements) overflows int32");
}

std::size_t TensorSpec::numel() const {
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

std::vector<TensorSpec> gpt_tensors(const GptConfig& config) {
  config.validate();
  const std::int64_t C = config.channels;
  std::vector<TensorSpec> t;
  t.reserve(num_tensors(config));
  t.push_back({"wte.weight", {config.vocab, C}});
  t.push_back({"wpe.weight", {config.max_seq, C}});
  for (int l = 0; l < config.layers; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    t.push_back({h + "ln_1.weight", {C}});
    t.push_back({h + "ln_1.bias", {C}});
    t.push_back({h + "attn.c_attn.weight", {3 * C, C}});
    t.push_back({h + "attn.c_attn.bias", {3 * C}});
    t.push_back({h + "attn.c_proj.weight", {C, C}});
    t.push_back({h + "attn.c_proj.bias", {C}});
    t.push_back({h + "ln_2.weight", {C}});
    t.push_back({h + "ln_2.bias", {C}});
    t.push_back({h + "mlp.c_fc.weight", {4 * C, C}});
    t.push_back({h + "mlp.c_fc.bias", {4 * C}});
    t.push_back({h + "mlp.c_proj.weight", {C, 4 * C}});
    t.push_back({h + "mlp.c_proj.bias", {C}});
  }
  t.push_back({"ln_f.weight", {C}});
  t.push_back({"ln_f.bias", {C}});
  return t;
}

std::size_t GptConfig::num_params() const {
  const std::size_t C = static_cast<std::size_t>(channels);
  const std::size_t per_block = 12 * C * C + 13 * C;
  return static_cast<std::size_t>(vocab) * C + static_cast<std::size_t>(max_seq) * C +
         static_cast<std::size_t>(layers) * per_block + 2 * C;
}

double GptConfig::flops_per_token(int seq_len) const {
  const double n = static_cast<double>(num_params()) -
                   static_cast<double>(max_seq) * static_cast<double>(channels);
  return 6.0 * n + 12.0 * layers * static_cast<double>(channels) * seq_len;
}

std::string GptConfig::to_string() const {
  char params[32];
  std::snprintf(params, sizeof params, "%.1fM", static_cast<double>(num_params()) / 1e6);
  std::ostringstream s;
  s << "layers=" << layers << " heads=" << heads << " channels=" << channels << " vocab=" << vocab
    << " max_seq=" << max_seq << " (" << params << " parameters)";
  return s.str();
}

}  // namespace zoro::train
