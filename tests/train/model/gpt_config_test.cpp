// Shapes and presets, the GPT-2 initialisation, and the mapping to and from GPT-2's checkpoint
// tensors (round trip through a parameter store; missing tensors and wrong shapes refused,
// naming the tensor and both shapes).
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "model_test_util.h"
#include "runtime/base/error.h"
#include "tests/support/random.h"

namespace zoro::train {
namespace {

TEST(GptConfig, PresetsHaveGpt2sParameterCounts) {
  EXPECT_EQ(GptConfig::preset("gpt2").num_params(), 124439808u);
  EXPECT_EQ(GptConfig::preset("gpt2-medium").num_params(), 354823168u);
  EXPECT_EQ(GptConfig::preset("gpt2-large").num_params(), 774030080u);
  EXPECT_EQ(GptConfig::preset("gpt2-xl").num_params(), 1557611200u);
  for (const auto& name : GptConfig::preset_names()) {
    const GptConfig c = GptConfig::preset(name);
    EXPECT_NO_THROW(c.validate()) << name;
    const auto tensors = gpt_tensors(c);
    ASSERT_EQ(tensors.size(), num_tensors(c));
    std::size_t total = 0;
    for (const auto& t : tensors) total += t.numel();
    EXPECT_EQ(total, c.num_params()) << name;
    // 6 FLOPs per multiplying weight plus attention; within a few percent of 6N at T = 1.
    EXPECT_GT(c.flops_per_token(1), 5.5 * static_cast<double>(c.num_params())) << name;
  }
  const GptConfig d = GptConfig::preset("default");
  EXPECT_EQ(d.vocab, 257);
  EXPECT_EQ(gpt_tensors(d)[block_tensor(1, BlockTensor::kFcWeight)].name, "h.1.mlp.c_fc.weight");
  EXPECT_EQ(gpt_tensors(d)[lnf_bias(d)].name, "ln_f.bias");
}

TEST(GptConfig, BillionsOfParametersAreFine) {
  const GptConfig big{50257, 2048, 40, 64, 8192};
  EXPECT_NO_THROW(big.validate());
  EXPECT_GT(big.num_params(), std::size_t{30'000'000'000});
  std::size_t total = 0;
  for (const auto& t : gpt_tensors(big)) total += t.numel();
  EXPECT_EQ(total, big.num_params());
}

TEST(GptConfig, BadShapesAreRefusedNamingTheField) {
  using testing::expect_refused;
  const GptConfig ok = testing::tiny_config();
  auto with = [&](auto edit) {
    GptConfig c = ok;
    edit(c);
    return c;
  };
  expect_refused<InvalidArgument>([&] { with([](GptConfig& c) { c.vocab = 0; }).validate(); },
                                  {"vocab=0"});
  expect_refused<InvalidArgument>([&] { with([](GptConfig& c) { c.layers = -2; }).validate(); },
                                  {"layers=-2"});
  expect_refused<InvalidArgument>([&] { with([](GptConfig& c) { c.max_seq = 0; }).validate(); },
                                  {"max_seq=0"});
  expect_refused<InvalidArgument>([&] { with([](GptConfig& c) { c.channels = 17; }).validate(); },
                                  {"channels=17", "heads=2"});
  expect_refused<InvalidArgument>(
      [&] { with([](GptConfig& c) { c.channels = 1 << 15; }).validate(); }, {"int32"});
  expect_refused<InvalidArgument>(
      [&] {
        with([](GptConfig& c) {
          c.vocab = 1 << 20;
          c.channels = 1 << 12;
        }).validate();
      },
      {"vocab=1048576", "overflows int32"});
  expect_refused<InvalidArgument>([] { GptConfig::preset("gpt2-small"); }, {"gpt2-small"});
}

TEST(GptWeights, Gpt2InitIsDeterministicAndScaled) {
  const GptConfig c{50, 16, 4, 2, 32};
  const auto tensors = gpt_tensors(c);
  auto values = [&](std::uint64_t seed, std::size_t t) {
    std::vector<float> v(tensors[t].numel());
    gpt2_init(c, seed)(t, v);
    return v;
  };
  const std::size_t fc = block_tensor(2, BlockTensor::kFcWeight);
  const std::size_t proj = block_tensor(2, BlockTensor::kFcProjWeight);
  EXPECT_EQ(values(7, fc), values(7, fc));
  EXPECT_NE(values(7, fc), values(8, fc));
  auto stddev = [](const std::vector<float>& v) {
    double s = 0;
    for (float x : v) s += static_cast<double>(x) * x;
    return std::sqrt(s / static_cast<double>(v.size()));
  };
  EXPECT_NEAR(stddev(values(7, fc)), 0.02, 0.002);
  EXPECT_NEAR(stddev(values(7, proj)), 0.02 / std::sqrt(8.0), 0.001);
  for (float x : values(7, block_tensor(0, BlockTensor::kLn1Weight))) EXPECT_EQ(x, 1.f);
  for (float x : values(7, block_tensor(0, BlockTensor::kQkvBias))) EXPECT_EQ(x, 0.f);
  for (float x : values(7, lnf_bias(c))) EXPECT_EQ(x, 0.f);
}

TEST(GptWeights, Gpt2TensorsRoundTripThroughAStore) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(611);
  const GptConfig c = testing::tiny_config();
  const auto specs = gpt_tensors(c);
  std::vector<std::vector<float>> ours;
  for (const auto& s : specs) ours.push_back(zoro::testing::random_floats(rng, s.numel()));
  const auto theirs = to_gpt2_tensors(c, ours);
  ASSERT_EQ(theirs.size(), specs.size());
  // Note [Conv1D transpose]: c_attn is stored (C, 3C); element (i, o) is ours (o, i).
  const auto& qkv = theirs[block_tensor(1, BlockTensor::kQkvWeight)];
  EXPECT_EQ(qkv.name, "h.1.attn.c_attn.weight");
  const std::int64_t C = c.channels;
  ASSERT_EQ(qkv.shape, (std::vector<std::int64_t>{C, 3 * C}));
  const auto& mine = ours[block_tensor(1, BlockTensor::kQkvWeight)];
  EXPECT_EQ(qkv.values[2 * 3 * C + 5], mine[5 * C + 2]);
  EXPECT_EQ(theirs[kWte].shape, (std::vector<std::int64_t>{c.vocab, C}));
  EXPECT_EQ(theirs[kWte].values, ours[kWte]);
  // Back, with GPT2LMHeadModel's "transformer." prefix and an extra tensor.
  std::vector<NamedTensor> prefixed = theirs;
  for (auto& t : prefixed) t.name = "transformer." + t.name;
  prefixed.push_back({"lm_head.weight", {1}, {0.f}});
  EXPECT_EQ(from_gpt2_tensors(c, prefixed), ours);
  // Into a model's store, and out again from its master weights.
  auto device = device::open_device("host:mem=64MiB");
  DeviceParams store(testing::store_config(DType::kF32), *device, specs,
                     values_init(from_gpt2_tensors(c, theirs)));
  for (std::size_t t = 0; t < specs.size(); ++t) ASSERT_EQ(store.master(t), ours[t]);
  const auto exported = to_gpt2_tensors(c, store);
  for (std::size_t t = 0; t < specs.size(); ++t) {
    EXPECT_EQ(exported[t].name, theirs[t].name);
    EXPECT_EQ(exported[t].values, theirs[t].values);
  }
}

TEST(GptWeights, MissingOrMisshapenTensorsAreNamed) {
  const GptConfig c = testing::tiny_config();
  std::vector<std::vector<float>> ours;
  for (const auto& s : gpt_tensors(c)) ours.emplace_back(s.numel(), 0.5f);
  auto theirs = to_gpt2_tensors(c, ours);
  auto missing = theirs;
  missing.erase(missing.begin() +
                static_cast<std::ptrdiff_t>(block_tensor(1, BlockTensor::kLn2Bias)));
  testing::expect_refused<InvalidArgument>([&] { from_gpt2_tensors(c, missing); },
                                           {"'h.1.ln_2.bias' is missing", "(16)"});
  auto wrong = theirs;
  auto& fc = wrong[block_tensor(0, BlockTensor::kFcWeight)];
  fc.shape = {64, 16};  // ours (OC, IC), not GPT-2's (IC, OC)
  testing::expect_refused<InvalidArgument>([&] { from_gpt2_tensors(c, wrong); },
                                           {"'h.0.mlp.c_fc.weight'", "(64, 16)", "(16, 64)"});
  GptConfig longer = c;
  longer.max_seq = 16;  // wpe of another length
  testing::expect_refused<InvalidArgument>([&] { from_gpt2_tensors(longer, theirs); },
                                           {"'wpe.weight'", "(8, 16)", "(16, 16)"});
}

}  // namespace
}  // namespace zoro::train
