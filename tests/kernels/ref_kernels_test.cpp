// The reference kernels (kernels/ref) on their own: every backward against central finite
// differences in double on tiny shapes, and forwards against hand-checked cases.
//
// Finite differences: for a kernel y = f(x), the test loss is L = sum_i w_i y_i with random w
// (so dout = w), and dL/dx_j ~ (L(x + h e_j) - L(x - h e_j)) / 2h with h = 1e-6. In double the
// truncation error is O(h^2) ~ 1e-12 and the rounding error O(eps / h) ~ 1e-10, so analytic
// and numeric gradients agree to |a - n| <= kFdTol * max(1, |a|, |n|) with kFdTol = 1e-6.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/ref/kernels.h"
#include "runtime/base/error.h"
#include "runtime/base/half.h"
#include "tests/support/random.h"

namespace zoro::kernels::ref {
namespace {

using Vec = std::vector<double>;
constexpr double kFdStep = 1e-6;
constexpr double kFdTol = 1e-6;

Vec random_vec(std::mt19937_64& rng, std::size_t n, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<std::int32_t> random_ids(std::mt19937_64& rng, std::size_t n, int V) {
  std::uniform_int_distribution<int> dist(0, V - 1);
  std::vector<std::int32_t> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double weighted_sum(const Vec& y, const Vec& w) {
  return std::inner_product(y.begin(), y.end(), w.begin(), 0.0);
}

// Checks analytic gradient `grad` of loss() with respect to every element of `x` (which
// loss() reads) by central differences.
void expect_fd_gradient(const char* what, Vec& x, const Vec& grad,
                        const std::function<double()>& loss) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  for (std::size_t j = 0; j < x.size(); ++j) {
    const double saved = x[j];
    x[j] = saved + kFdStep;
    const double up = loss();
    x[j] = saved - kFdStep;
    const double down = loss();
    x[j] = saved;
    const double numeric = (up - down) / (2 * kFdStep);
    const double scale = std::max({1.0, std::abs(numeric), std::abs(grad[j])});
    EXPECT_NEAR(grad[j], numeric, kFdTol * scale) << what << "[" << j << "]";
  }
}

// ---- finite differences ------------------------------------------------------------------

TEST(RefKernelsFd, Embedding) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(1);
  const int B = 2, T = 3, C = 4, V = 5;
  // Repeated tokens, so the scatter-add of dwte is exercised.
  const std::vector<std::int32_t> tokens = {1, 3, 1, 4, 1, 0};
  Vec wte = random_vec(rng, V * C), wpe = random_vec(rng, T * C), w = random_vec(rng, B * T * C);
  Vec out(B * T * C);
  auto loss = [&] {
    embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, V);
    return weighted_sum(out, w);
  };
  Vec dwte(wte.size(), 0.0), dwpe(wpe.size(), 0.0);
  embedding_backward(dwte.data(), dwpe.data(), w.data(), tokens.data(), B, T, C, V);
  expect_fd_gradient("dwte", wte, dwte, loss);
  expect_fd_gradient("dwpe", wpe, dwpe, loss);
}

TEST(RefKernelsFd, LayerNorm) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(2);
  const int N = 3, C = 7;
  Vec x = random_vec(rng, N * C, -2, 2), g = random_vec(rng, C), b = random_vec(rng, C);
  Vec w = random_vec(rng, N * C), out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), g.data(), b.data(), N, C);
    return weighted_sum(out, w);
  };
  loss();
  // Accumulation: start the gradients at a known value and subtract it afterwards.
  Vec dx(x.size(), 0.5), dg(C, 0.0), db(C, 0.0);
  layernorm_backward(dx.data(), dg.data(), db.data(), w.data(), x.data(), g.data(), mean.data(),
                     rstd.data(), N, C);
  for (auto& v : dx) v -= 0.5;
  expect_fd_gradient("dinp", x, dx, loss);
  expect_fd_gradient("dweight", g, dg, loss);
  expect_fd_gradient("dbias", b, db, loss);
}

TEST(RefKernelsFd, Gelu) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(3);
  const std::size_t n = 13;
  Vec x = random_vec(rng, n, -4, 4), w = random_vec(rng, n), out(n);
  auto loss = [&] {
    gelu_forward(out.data(), x.data(), n);
    return weighted_sum(out, w);
  };
  Vec dx(n, 0.0);
  gelu_backward(dx.data(), x.data(), w.data(), n);
  expect_fd_gradient("dinp", x, dx, loss);
}

TEST(RefKernelsFd, Attention) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(4);
  const int B = 2, T = 5, C = 6, NH = 2;
  Vec qkv = random_vec(rng, B * T * 3 * C, -1.5, 1.5), w = random_vec(rng, B * T * C);
  Vec out(B * T * C), lse(B * NH * T);
  auto loss = [&] {
    attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
    return weighted_sum(out, w);
  };
  loss();
  Vec dqkv(qkv.size(), 0.0);
  attention_backward(dqkv.data(), w.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH);
  expect_fd_gradient("dqkv", qkv, dqkv, loss);
}

TEST(RefKernelsFd, SoftmaxCrossEntropyWithIgnoredRow) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(5);
  const int N = 5, V = 7;
  const std::int32_t kIgnore = -100;
  std::vector<std::int32_t> targets = random_ids(rng, N, V);
  targets[2] = kIgnore;
  Vec logits = random_vec(rng, N * V, -3, 3), losses(N), lse(N);
  auto loss = [&] {
    softmax_cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V,
                                  kIgnore);
    return mean_loss(losses.data(), targets.data(), N, kIgnore);
  };
  loss();
  const int valid = count_valid_targets(targets.data(), N, kIgnore);
  ASSERT_EQ(valid, N - 1);
  Vec dlogits(logits.size(), 123.0);  // written, not added: the junk must disappear
  softmax_cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), N, V,
                                 1.0 / valid, kIgnore);
  expect_fd_gradient("dlogits", logits, dlogits, loss);
  // In place (dlogits aliasing logits, as the contract allows) gives the same values.
  loss();  // lse of the unperturbed logits again
  Vec in_place = logits;
  softmax_cross_entropy_backward(in_place.data(), in_place.data(), lse.data(), targets.data(), N, V,
                                 1.0 / valid, kIgnore);
  EXPECT_EQ(in_place, dlogits);
}

TEST(RefKernelsFd, Matmul) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(6);
  const int N = 3, IC = 5, OC = 4;
  Vec x = random_vec(rng, N * IC), wt = random_vec(rng, OC * IC), b = random_vec(rng, OC);
  Vec w = random_vec(rng, N * OC), out(N * OC);
  auto loss = [&] {
    matmul_forward(out.data(), x.data(), wt.data(), b.data(), N, IC, OC);
    return weighted_sum(out, w);
  };
  Vec dx(x.size(), 0.0), dw(wt.size(), 0.0), db(OC, 0.0);
  matmul_backward(dx.data(), dw.data(), db.data(), w.data(), x.data(), wt.data(), N, IC, OC);
  expect_fd_gradient("dinp", x, dx, loss);
  expect_fd_gradient("dweight", wt, dw, loss);
  expect_fd_gradient("dbias", b, db, loss);
}

// ---- forward values ----------------------------------------------------------------------

TEST(RefKernelsForward, UniformLogitsGiveLogV) {
  const int N = 3, V = 11;
  std::vector<float> logits(N * V, 2.5f), losses(N), lse(N);
  const std::vector<std::int32_t> targets = {0, 5, 10};
  softmax_cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V);
  for (int i = 0; i < N; ++i) EXPECT_NEAR(losses[i], std::log(11.0), 1e-6);
  EXPECT_NEAR(mean_loss(losses.data(), targets.data(), N), std::log(11.0), 1e-6);
  // The gradient of a uniform row: 1/V everywhere, minus 1 at the target.
  std::vector<float> d(N * V);
  softmax_cross_entropy_backward(d.data(), logits.data(), lse.data(), targets.data(), N, V, 1.0f);
  EXPECT_NEAR(d[1], 1.0 / V, 1e-7);
  EXPECT_NEAR(d[V + 5], 1.0 / V - 1, 1e-7);
}

TEST(RefKernelsForward, LargeLogitsStayFinite) {
  const std::vector<float> logits = {1000.f, 0.f, -1000.f};
  const std::vector<std::int32_t> targets = {1};
  float loss = 0, lse = 0;
  softmax_cross_entropy_forward(&loss, &lse, logits.data(), targets.data(), 1, 3);
  EXPECT_NEAR(lse, 1000.f, 1e-3);
  EXPECT_NEAR(loss, 1000.f, 1e-3);
}

TEST(RefKernelsForward, LayerNormNormalises) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(7);
  const int N = 4, C = 37;
  std::vector<double> x = random_vec(rng, N * C, -50, 80), g(C, 1.0), b(C, 0.0), out(N * C),
                      mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), g.data(), b.data(), N, C);
  for (int r = 0; r < N; ++r) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += out[r * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (out[r * C + c] - m) * (out[r * C + c] - m);
    v /= C;
    EXPECT_NEAR(m, 0.0, 1e-12);
    EXPECT_NEAR(v, 1.0, 1e-6);  // var / (var + eps), with var ~ 500
  }
}

TEST(RefKernelsForward, GeluKnownValues) {
  const std::vector<double> x = {0.0, 1.0, -1.0, 3.0};
  std::vector<double> y(x.size());
  gelu_forward(y.data(), x.data(), x.size());
  EXPECT_EQ(y[0], 0.0);
  EXPECT_NEAR(y[1], 0.8411919906082768, 1e-12);
  EXPECT_NEAR(y[2], -0.15880800939172324, 1e-12);
  EXPECT_NEAR(y[3], 2.9963625, 1e-6);
}

TEST(RefKernelsForward, EmbeddingAddsTokenAndPosition) {
  const int B = 1, T = 2, C = 3, V = 2;
  const std::vector<float> wte = {1, 2, 3, 10, 20, 30}, wpe = {0.5f, 0.25f, 0, 100, 200, 300};
  const std::vector<std::int32_t> tokens = {1, 0};
  std::vector<float> out(B * T * C);
  embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, V);
  EXPECT_EQ(out, (std::vector<float>{10.5f, 20.25f, 30, 101, 202, 303}));
  const std::vector<std::int32_t> bad = {1, 2};
  EXPECT_THROW(embedding_forward(out.data(), bad.data(), wte.data(), wpe.data(), B, T, C, V),
               InvalidArgument);
}

TEST(RefKernelsForward, AttentionIsCausal) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(8);
  const int B = 2, T = 9, C = 8, NH = 2;
  Vec qkv = random_vec(rng, B * T * 3 * C, -2, 2), out(B * T * C), lse(B * NH * T);
  attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
  // The first position attends only to itself: its output is its own v.
  for (int b = 0; b < B; ++b) {
    for (int c = 0; c < C; ++c) {
      EXPECT_DOUBLE_EQ(out[b * T * C + c], qkv[b * T * 3 * C + 2 * C + c]);
    }
  }
  // Perturb all of q, k, v at position 5 of batch 1: nothing before it changes, in either batch.
  const int t_perturbed = 5;
  Vec qkv2 = qkv, out2(out.size()), lse2(lse.size());
  for (int c = 0; c < 3 * C; ++c) qkv2[(T + t_perturbed) * 3 * C + c] += 0.75;
  attention_forward(out2.data(), lse2.data(), qkv2.data(), B, T, C, NH);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      bool changed = false;
      for (int c = 0; c < C; ++c) changed |= out[(b * T + t) * C + c] != out2[(b * T + t) * C + c];
      EXPECT_EQ(changed, b == 1 && t >= t_perturbed) << "b=" << b << " t=" << t;
    }
  }
}

TEST(RefKernelsForward, MatmulMatchesLoopWithOddSizes) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(9);
  const int N = 13, IC = 37, OC = 29;
  const auto x = testing::random_floats(rng, N * IC), w = testing::random_floats(rng, OC * IC),
             b = testing::random_floats(rng, OC);
  std::vector<float> out(N * OC);
  matmul_forward(out.data(), x.data(), w.data(), b.data(), N, IC, OC);
  for (int n = 0; n < N; ++n) {
    for (int o = 0; o < OC; ++o) {
      double s = b[o];
      for (int i = 0; i < IC; ++i) s += static_cast<double>(x[n * IC + i]) * w[o * IC + i];
      EXPECT_NEAR(out[n * OC + o], s, 1e-5) << n << "," << o;
    }
  }
  matmul_forward(out.data(), x.data(), w.data(), nullptr, N, IC, OC);
  double s = 0;
  for (int i = 0; i < IC; ++i) s += static_cast<double>(x[i]) * w[i];
  EXPECT_NEAR(out[0], s, 1e-5);
}

// The float instantiations compute what the double ones do (the FD tests ran on double).
TEST(RefKernelsForward, FloatMatchesDouble) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(10);
  const int B = 2, T = 7, C = 12, NH = 3, V = 9;
  const Vec qkv = random_vec(rng, B * T * 3 * C);
  const std::vector<float> qkv_f(qkv.begin(), qkv.end());
  Vec out(B * T * C), lse(B * NH * T);
  std::vector<float> out_f(out.size()), lse_f(lse.size());
  attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
  attention_forward(out_f.data(), lse_f.data(), qkv_f.data(), B, T, C, NH);
  for (std::size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out_f[i], out[i], 1e-5);
  const Vec logits = random_vec(rng, B * T * V, -4, 4);
  const std::vector<float> logits_f(logits.begin(), logits.end());
  const auto targets = random_ids(rng, B * T, V);
  Vec losses(B * T), lse2(B * T);
  std::vector<float> losses_f(B * T), lse2_f(B * T);
  softmax_cross_entropy_forward(losses.data(), lse2.data(), logits.data(), targets.data(), B * T,
                                V);
  softmax_cross_entropy_forward(losses_f.data(), lse2_f.data(), logits_f.data(), targets.data(),
                                B * T, V);
  for (int i = 0; i < B * T; ++i) EXPECT_NEAR(losses_f[i], losses[i], 1e-5);
}

TEST(RefKernelsForward, CastsAreBitExactWithHalfH) {
  const std::vector<float> x = {0.f, -0.f, 1.f, 3.14159f, -65504.f, 1e-8f, 70000.f, 1e30f};
  std::vector<std::uint16_t> h(x.size());
  std::vector<float> back(x.size());
  cast_f32_to_bf16(h.data(), x.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_EQ(h[i], float_to_bf16(x[i]));
  cast_bf16_to_f32(back.data(), h.data(), h.size());
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_EQ(back[i], bf16_to_float(h[i]));
  cast_f32_to_f16(h.data(), x.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_EQ(h[i], float_to_fp16(x[i]));
  cast_f16_to_f32(back.data(), h.data(), h.size());
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_EQ(back[i], fp16_to_float(h[i]));
}

}  // namespace
}  // namespace zoro::kernels::ref
