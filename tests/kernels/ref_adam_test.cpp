// ref::adamw_step (kernels/ref/adam.cpp) against zoro::optim::adam_step with fp32 moments, bit
// for bit, over a few hundred steps of fresh random gradients: Note [Device AdamW order]
// (kernels/ref/kernels.h) says they run the same sequence of IEEE operations. Checked on the
// optimizer's scalar path (forced) and on the path this CPU picks by default (AVX2 or AVX-512
// where present), which Note [Bit-identical paths] (offload/optim/cpu_optimizer.h) makes equal.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kernels/ref/kernels.h"
#include "offload/optim/cpu_executor.h"
#include "offload/optim/cpu_optimizer.h"
#include "offload/optim/isa.h"
#include "runtime/base/error.h"
#include "tests/support/random.h"

namespace zoro::kernels::ref {
namespace {

// Odd, so that the SIMD paths of optim run their padded tails too.
constexpr std::size_t kElems = 1037;
constexpr int kSteps = 300;

struct AdamCase {
  const char* name;
  AdamWConfig config;
  float grad_scale;
};

void PrintTo(const AdamCase& c, std::ostream* os) { *os << c.name; }
std::string case_name(const ::testing::TestParamInfo<AdamCase>& info) { return info.param.name; }

std::vector<AdamCase> adam_cases() {
  AdamWConfig adamw;  // AdamW: decoupled decay
  adamw.lr = 1e-3f;
  adamw.weight_decay = 0.01f;
  AdamWConfig l2;  // Adam with L2 into the gradient
  l2.lr = 2e-3f;
  l2.weight_decay = 0.05f;
  l2.decoupled_weight_decay = false;
  AdamWConfig plain;  // no decay; other betas and eps; a grad_scale that is not a power of 2
  plain.lr = 1e-2f;
  plain.beta1 = 0.8f;
  plain.beta2 = 0.95f;
  plain.eps = 1e-6f;
  return {{"AdamW", adamw, 1.f}, {"AdamL2", l2, 0.25f}, {"NoDecay", plain, 0.7f}};
}

// Gradients over many binades (2^-24 .. 2^4), some exactly zero: the moments then span a
// wide range, and eps matters for some elements and not for others.
std::vector<float> random_grads(std::mt19937_64& rng, std::size_t n) {
  std::vector<float> g = testing::random_floats(rng, n);
  std::uniform_int_distribution<int> binade(-24, 4);
  for (std::size_t i = 0; i < n; ++i) g[i] = i % 97 == 0 ? 0.f : std::ldexp(g[i], binade(rng));
  return g;
}

// The index of the first element whose bits differ, or -1.
template <class T>
long first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<long>(i);
  }
  return -1;
}

// Forces an optimizer path for one scope.
class IsaScope {
 public:
  explicit IsaScope(const optim::Isa* isa) {
    if (isa != nullptr) optim::set_isa(*isa);
  }
  ~IsaScope() { optim::reset_isa(); }
  IsaScope(const IsaScope&) = delete;
  IsaScope& operator=(const IsaScope&) = delete;
};

void expect_matches_optim(const AdamCase& c, const optim::Isa* forced, std::uint64_t stream) {
  ZORO_TRACE_SEED();
  const IsaScope scope(forced);
  SCOPED_TRACE(std::string(c.name) + " on optim path " + optim::isa_name(optim::current_isa()));
  auto rng = testing::make_rng(stream);
  optim::CpuExecutor exec(optim::CpuExecutor::Options{.threads = 2, .pin_threads = false});
  optim::AdamConfig oc;
  oc.lr = c.config.lr;
  oc.beta1 = c.config.beta1;
  oc.beta2 = c.config.beta2;
  oc.eps = c.config.eps;
  oc.weight_decay = c.config.weight_decay;
  oc.decoupled_weight_decay = c.config.decoupled_weight_decay;

  const std::size_t n = kElems;
  std::vector<float> w_ref = testing::random_floats(rng, n), m_ref(n, 0.f), v_ref(n, 0.f);
  std::vector<float> w_opt = w_ref, m_opt = m_ref, v_opt = v_ref;
  std::vector<std::uint16_t> out_ref(n), out_opt(n);
  for (int step = 1; step <= kSteps; ++step) {
    const std::vector<float> g = random_grads(rng, n);
    adamw_step(w_ref.data(), m_ref.data(), v_ref.data(), g.data(), out_ref.data(), n, c.config,
               step, c.grad_scale);
    optim::adam_step(exec, oc, {step, c.grad_scale},
                     {std::span<float>(w_opt),
                      {m_opt.data(), n, DType::kF32},
                      {v_opt.data(), n, DType::kF32},
                      {g.data(), n, DType::kF32},
                      {out_opt.data(), n, DType::kBF16}});
    for (auto [what, at] : {std::pair{"master", first_difference(w_ref, w_opt)},
                            std::pair{"m", first_difference(m_ref, m_opt)},
                            std::pair{"v", first_difference(v_ref, v_opt)},
                            std::pair{"bf16 out", first_difference(out_ref, out_opt)}}) {
      ASSERT_EQ(at, -1) << what << " differs at step " << step << ", element " << at;
    }
  }
}

class RefAdamTest : public ::testing::TestWithParam<AdamCase> {};

TEST_P(RefAdamTest, BitIdenticalToOptimScalarPath) {
  const optim::Isa scalar = optim::Isa::kScalar;
  expect_matches_optim(GetParam(), &scalar, 1);
}

TEST_P(RefAdamTest, BitIdenticalToOptimDefaultPath) {
  expect_matches_optim(GetParam(), nullptr, 2);
}

INSTANTIATE_TEST_SUITE_P(Configs, RefAdamTest, ::testing::ValuesIn(adam_cases()), case_name);

TEST(RefAdam, NullOutputSkipsOnlyTheCopy) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(3);
  const std::size_t n = 64;
  const std::vector<float> g = random_grads(rng, n);
  std::vector<float> w1 = testing::random_floats(rng, n), m1(n, 0.f), v1(n, 0.f);
  std::vector<float> w2 = w1, m2 = m1, v2 = v1;
  std::vector<std::uint16_t> out(n, 0xABCD);
  adamw_step(w1.data(), m1.data(), v1.data(), g.data(), out.data(), n, {}, 1, 1.f);
  adamw_step(w2.data(), m2.data(), v2.data(), g.data(), nullptr, n, {}, 1, 1.f);
  EXPECT_EQ(first_difference(w1, w2), -1);
  EXPECT_EQ(first_difference(m1, m2), -1);
  EXPECT_EQ(first_difference(v1, v2), -1);
}

TEST(RefAdam, BadArgumentsThrowBeforeWriting) {
  std::vector<float> w(4, 1.f), m(4, 0.f), v(4, 0.f), g(4, 1.f);
  const auto call = [&](const AdamWConfig& c, std::int64_t step, float scale) {
    adamw_step(w.data(), m.data(), v.data(), g.data(), nullptr, w.size(), c, step, scale);
  };
  EXPECT_THROW(call({}, 0, 1.f), InvalidArgument);
  EXPECT_THROW(call({}, 1, 0.f), InvalidArgument);
  EXPECT_THROW(call({}, 1, NAN), InvalidArgument);
  AdamWConfig bad;
  bad.beta1 = 1.f;
  EXPECT_THROW(call(bad, 1, 1.f), InvalidArgument);
  bad = {};
  bad.lr = -1.f;
  EXPECT_THROW(call(bad, 1, 1.f), InvalidArgument);
  EXPECT_THROW(adamw_step(nullptr, m.data(), v.data(), g.data(), nullptr, 4, {}, 1, 1.f),
               InvalidArgument);
  EXPECT_EQ(w, std::vector<float>(4, 1.f));
  EXPECT_EQ(m, std::vector<float>(4, 0.f));
}

}  // namespace
}  // namespace zoro::kernels::ref
