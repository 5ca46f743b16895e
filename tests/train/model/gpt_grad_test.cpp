// The model's forward and backward (RefGpt, the host backend's code path) against central
// finite differences in double on a tiny shape: every tensor's gradient on sampled elements
// (every element of the small ones), the token embeddings included, which the gradient
// reaches only through the whole dX chain of every block. Then recomputation on vs off:
// identical losses and gradients, in float as the trainer runs it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "examples/zoro_train/model/ref_gpt.h"
#include "model_test_util.h"
#include "tests/support/random.h"

namespace zoro::train {
namespace {

template <class R>
struct RefRig {
  RefRig(const GptConfig& cfg, int batch, int seq, bool recompute, std::mt19937_64& rng)
      : config(cfg),
        B(batch),
        T(seq),
        device(device::open_device("host:mem=64MiB")),
        stream(device->create_stream()),
        model(cfg, B * T, recompute, *device, *stream) {
    const auto specs = gpt_tensors(cfg);
    std::uniform_real_distribution<double> dist(-0.5, 0.5);
    std::vector<const R*> ptrs;
    for (const auto& s : specs) {
      weights.push_back(device->allocate(device::MemoryKind::kDevice, s.numel() * sizeof(R)));
      R* w = weights.back().template as<R>();
      const bool ln_gain =
          s.name.find("ln_") != std::string::npos && s.name.find(".weight") != std::string::npos;
      for (std::size_t i = 0; i < s.numel(); ++i) {
        w[i] = static_cast<R>(dist(rng) + (ln_gain ? 1.0 : 0.0));
      }
      ptrs.push_back(w);
      grads.emplace_back(s.numel(), R(0));
    }
    model.set_weights(std::move(ptrs));
    tokens = device->allocate(device::MemoryKind::kDevice, 2 * B * T * 4);
    std::uniform_int_distribution<int> id(0, cfg.vocab - 1);
    for (int i = 0; i < 2 * B * T; ++i) tokens.as<std::int32_t>()[i] = id(rng);
  }
  ~RefRig() { stream->synchronize(); }

  const std::int32_t* inputs() const { return tokens.as<std::int32_t>(); }
  const std::int32_t* targets() const { return tokens.as<std::int32_t>() + B * T; }
  R* weight(std::size_t t) { return weights[t].template as<R>(); }

  double loss() {
    model.forward(inputs(), targets(), B, T);
    stream->synchronize();
    return model.loss();
  }
  // Forward + backward; the handed gradients copied (in stream order) into grads.
  double loss_and_grads(std::vector<std::size_t>* order = nullptr) {
    model.forward(inputs(), targets(), B, T);
    model.backward(inputs(), targets(), B, T, R(1), [&](std::size_t t, const R* g) {
      if (order != nullptr) order->push_back(t);
      R* dst = grads[t].data();
      const std::size_t n = grads[t].size();
      stream->launch_host_fn("copy grad", [=] { std::memcpy(dst, g, n * sizeof(R)); });
    });
    stream->synchronize();
    return model.loss();
  }

  GptConfig config;
  int B, T;
  std::unique_ptr<device::Device> device;
  std::unique_ptr<device::Stream> stream;
  std::vector<device::Buffer> weights;
  device::Buffer tokens;
  RefGpt<R> model;
  std::vector<std::vector<R>> grads;
};

TEST(GptGradient, EveryTensorMatchesFiniteDifferencesInDouble) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(601);
  const GptConfig cfg{11, 6, 2, 2, 8};
  RefRig<double> rig(cfg, 2, 5, /*recompute=*/false, rng);
  std::vector<std::size_t> order;
  const double loss = rig.loss_and_grads(&order);
  ASSERT_TRUE(std::isfinite(loss));
  // Every tensor's gradient handed exactly once, wte last (Note [Gradient hand-off]).
  ASSERT_EQ(order.size(), num_tensors(cfg));
  EXPECT_EQ(order.back(), kWte);
  std::vector<std::size_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t t = 0; t < sorted.size(); ++t) ASSERT_EQ(sorted[t], t);

  const auto specs = gpt_tensors(cfg);
  constexpr double kStep = 1e-6, kTol = 1e-6;
  for (std::size_t t = 0; t < specs.size(); ++t) {
    const std::size_t n = specs[t].numel();
    std::vector<std::size_t> picks;
    if (n <= 16) {
      for (std::size_t i = 0; i < n; ++i) picks.push_back(i);
    } else {
      std::uniform_int_distribution<std::size_t> at(0, n - 1);
      for (int k = 0; k < 12; ++k) picks.push_back(at(rng));
    }
    if (t == kWpe) picks.push_back(n - 1);  // a position past T: exactly zero gradient
    for (std::size_t i : picks) {
      double* w = rig.weight(t) + i;
      const double saved = *w;
      *w = saved + kStep;
      const double up = rig.loss();
      *w = saved - kStep;
      const double down = rig.loss();
      *w = saved;
      const double numeric = (up - down) / (2 * kStep);
      const double analytic = rig.grads[t][i];
      const double scale = std::max({1.0, std::abs(numeric), std::abs(analytic)});
      ASSERT_NEAR(analytic, numeric, kTol * scale) << specs[t].name << "[" << i << "]";
    }
  }
}

TEST(GptGradient, RecomputationGivesIdenticalLossesAndGradients) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(602);
  auto rng2 = rng;  // the same weights and tokens for both
  const GptConfig cfg{29, 16, 3, 4, 32};
  RefRig<float> plain(cfg, 2, 16, false, rng);
  RefRig<float> recompute(cfg, 2, 16, true, rng2);
  const double a = plain.loss_and_grads();
  const double b = recompute.loss_and_grads();
  EXPECT_EQ(a, b);
  for (std::size_t t = 0; t < plain.grads.size(); ++t) {
    ASSERT_EQ(plain.grads[t], recompute.grads[t]) << gpt_tensors(cfg)[t].name;
  }
  // And again (the shared activations of the recomputing model are reused correctly).
  EXPECT_EQ(plain.loss_and_grads(), recompute.loss_and_grads());
  EXPECT_LT(recompute.model.device_bytes(), plain.model.device_bytes());
}

}  // namespace
}  // namespace zoro::train
