// The reference kernels composed into a whole GPT-2 (one pre-LN block, tied embeddings):
// embedding -> layernorm -> attention -> residual -> layernorm -> MLP (GELU) -> residual ->
// layernorm -> logits (wte^T) -> cross-entropy. Its backward, written from the kernels'
// backward functions, against central finite differences over every parameter, in double;
// tolerance as in ref_kernels_test.cpp. Then the same kernels at sizes large enough that
// every oneTBB and OpenBLAS parallel path runs (for ThreadSanitizer), float against double.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/ref/kernels.h"
#include "tests/support/random.h"

namespace zoro::kernels::ref {
namespace {

using Vec = std::vector<double>;

Vec random_vec(std::mt19937_64& rng, std::size_t n, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// One block of GPT-2 over a flat parameter vector (so that finite differences can walk it).
class TinyGpt {
 public:
  TinyGpt(int B, int T, int C, int NH, int V) : B_(B), T_(T), C_(C), NH_(NH), V_(V) {
    auto add = [&](std::size_t n) {
      const std::size_t at = total_;
      total_ += n;
      return at;
    };
    const std::size_t c = C;
    wte_ = add(V * c), wpe_ = add(T * c), ln1w_ = add(c), ln1b_ = add(c);
    qkvw_ = add(3 * c * c), qkvb_ = add(3 * c), projw_ = add(c * c), projb_ = add(c);
    ln2w_ = add(c), ln2b_ = add(c), fcw_ = add(4 * c * c), fcb_ = add(4 * c);
    fcprojw_ = add(4 * c * c), fcprojb_ = add(c), lnfw_ = add(c), lnfb_ = add(c);
  }
  std::size_t num_params() const { return total_; }

  // Random weights around GPT-2's scales, with layernorm gains near 1.
  Vec init(std::mt19937_64& rng) const {
    Vec p = random_vec(rng, total_, -0.5, 0.5);
    for (std::size_t off : {ln1w_, ln2w_, lnfw_}) {
      for (int i = 0; i < C_; ++i) p[off + i] += 1.0;
    }
    return p;
  }

  // The mean cross-entropy; when `grad` is given, its gradient is added into it.
  double loss(const Vec& p, const std::vector<std::int32_t>& tokens,
              const std::vector<std::int32_t>& targets, Vec* grad) {
    const int N = B_ * T_, C = C_;
    const std::size_t nc = static_cast<std::size_t>(N) * C;
    resize(N);
    const double* w = p.data();
    embedding_forward(x0_.data(), tokens.data(), w + wte_, w + wpe_, B_, T_, C, V_);
    layernorm_forward(l1_.data(), m1_.data(), r1_.data(), x0_.data(), w + ln1w_, w + ln1b_, N, C);
    matmul_forward(qkv_.data(), l1_.data(), w + qkvw_, w + qkvb_, N, C, 3 * C);
    attention_forward(att_.data(), lse_.data(), qkv_.data(), B_, T_, C, NH_);
    matmul_forward(ap_.data(), att_.data(), w + projw_, w + projb_, N, C, C);
    residual_forward(x1_.data(), x0_.data(), ap_.data(), nc);
    layernorm_forward(l2_.data(), m2_.data(), r2_.data(), x1_.data(), w + ln2w_, w + ln2b_, N, C);
    matmul_forward(h_.data(), l2_.data(), w + fcw_, w + fcb_, N, C, 4 * C);
    gelu_forward(g_.data(), h_.data(), h_.size());
    matmul_forward(mp_.data(), g_.data(), w + fcprojw_, w + fcprojb_, N, 4 * C, C);
    residual_forward(x2_.data(), x1_.data(), mp_.data(), nc);
    layernorm_forward(lf_.data(), mf_.data(), rf_.data(), x2_.data(), w + lnfw_, w + lnfb_, N, C);
    matmul_forward(logits_.data(), lf_.data(), w + wte_, nullptr, N, C, V_);
    softmax_cross_entropy_forward(losses_.data(), ce_lse_.data(), logits_.data(), targets.data(), N,
                                  V_, kIgnore);
    const double loss = mean_loss(losses_.data(), targets.data(), N, kIgnore);
    if (grad == nullptr) return loss;

    double* d = grad->data();
    auto zeros = [](std::size_t n) { return Vec(n, 0.0); };
    Vec dlogits(logits_.size());
    softmax_cross_entropy_backward(dlogits.data(), logits_.data(), ce_lse_.data(), targets.data(),
                                   N, V_, 1.0 / count_valid_targets(targets.data(), N, kIgnore),
                                   kIgnore);
    Vec dlf = zeros(nc);
    matmul_backward(dlf.data(), d + wte_, nullptr, dlogits.data(), lf_.data(), w + wte_, N, C, V_);
    Vec dx2 = zeros(nc);
    layernorm_backward(dx2.data(), d + lnfw_, d + lnfb_, dlf.data(), x2_.data(), w + lnfw_,
                       mf_.data(), rf_.data(), N, C);
    // Residual: dx2 flows into both x1 and the MLP branch.
    Vec dx1 = dx2;
    Vec dg = zeros(g_.size());
    matmul_backward(dg.data(), d + fcprojw_, d + fcprojb_, dx2.data(), g_.data(), w + fcprojw_, N,
                    4 * C, C);
    Vec dh = zeros(h_.size());
    gelu_backward(dh.data(), h_.data(), dg.data(), h_.size());
    Vec dl2 = zeros(nc);
    matmul_backward(dl2.data(), d + fcw_, d + fcb_, dh.data(), l2_.data(), w + fcw_, N, C, 4 * C);
    layernorm_backward(dx1.data(), d + ln2w_, d + ln2b_, dl2.data(), x1_.data(), w + ln2w_,
                       m2_.data(), r2_.data(), N, C);
    Vec dx0 = dx1;
    Vec datt = zeros(nc);
    matmul_backward(datt.data(), d + projw_, d + projb_, dx1.data(), att_.data(), w + projw_, N, C,
                    C);
    Vec dqkv = zeros(qkv_.size());
    attention_backward(dqkv.data(), datt.data(), qkv_.data(), att_.data(), lse_.data(), B_, T_, C,
                       NH_);
    Vec dl1 = zeros(nc);
    matmul_backward(dl1.data(), d + qkvw_, d + qkvb_, dqkv.data(), l1_.data(), w + qkvw_, N, C,
                    3 * C);
    layernorm_backward(dx0.data(), d + ln1w_, d + ln1b_, dl1.data(), x0_.data(), w + ln1w_,
                       m1_.data(), r1_.data(), N, C);
    embedding_backward(d + wte_, d + wpe_, dx0.data(), tokens.data(), B_, T_, C, V_);
    return loss;
  }

  static constexpr std::int32_t kIgnore = -1;

 private:
  void resize(int N) {
    const std::size_t nc = static_cast<std::size_t>(N) * C_;
    for (Vec* v : {&x0_, &l1_, &att_, &ap_, &x1_, &l2_, &mp_, &x2_, &lf_}) v->resize(nc);
    qkv_.resize(3 * nc);
    h_.resize(4 * nc);
    g_.resize(4 * nc);
    logits_.resize(static_cast<std::size_t>(N) * V_);
    for (Vec* v : {&m1_, &r1_, &m2_, &r2_, &mf_, &rf_, &losses_, &ce_lse_}) v->resize(N);
    lse_.resize(static_cast<std::size_t>(B_) * NH_ * T_);
  }

  int B_, T_, C_, NH_, V_;
  std::size_t total_ = 0;
  std::size_t wte_, wpe_, ln1w_, ln1b_, qkvw_, qkvb_, projw_, projb_, ln2w_, ln2b_, fcw_, fcb_,
      fcprojw_, fcprojb_, lnfw_, lnfb_;
  Vec x0_, l1_, m1_, r1_, qkv_, att_, lse_, ap_, x1_, l2_, m2_, r2_, h_, g_, mp_, x2_, lf_, mf_,
      rf_, logits_, losses_, ce_lse_;
};

TEST(RefBlockFd, WholeGptBlockGradients) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(201);
  const int B = 2, T = 4, C = 8, NH = 2, V = 11;
  TinyGpt model(B, T, C, NH, V);
  Vec p = model.init(rng);
  std::uniform_int_distribution<int> id(0, V - 1);
  std::vector<std::int32_t> tokens(B * T), targets(B * T);
  for (auto& t : tokens) t = id(rng);
  for (auto& t : targets) t = id(rng);
  targets[3] = TinyGpt::kIgnore;
  Vec grad(p.size(), 0.0);
  const double loss = model.loss(p, tokens, targets, &grad);
  ASSERT_TRUE(std::isfinite(loss));
  constexpr double kStep = 1e-6, kTol = 1e-6;
  for (std::size_t j = 0; j < p.size(); ++j) {
    const double saved = p[j];
    p[j] = saved + kStep;
    const double up = model.loss(p, tokens, targets, nullptr);
    p[j] = saved - kStep;
    const double down = model.loss(p, tokens, targets, nullptr);
    p[j] = saved;
    const double numeric = (up - down) / (2 * kStep);
    const double scale = std::max({1.0, std::abs(numeric), std::abs(grad[j])});
    ASSERT_NEAR(grad[j], numeric, kTol * scale) << "parameter " << j << " of " << p.size();
  }
}

// Sizes where every kernel splits its loop over oneTBB tasks and OpenBLAS uses its threads:
// the float results against the double ones (so ThreadSanitizer sees the parallel paths).
TEST(RefBlockParallel, FloatMatchesDoubleAtParallelSizes) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(202);
  const int B = 2, T = 128, C = 64, NH = 4, V = 515;
  const int N = B * T;
  TinyGpt model_d(B, T, C, NH, V);
  const Vec p = model_d.init(rng);
  std::vector<std::int32_t> tokens(N), targets(N);
  std::uniform_int_distribution<int> id(0, V - 1);
  for (auto& t : tokens) t = id(rng);
  for (auto& t : targets) t = id(rng);
  Vec grad(p.size(), 0.0);
  const double loss = model_d.loss(p, tokens, targets, &grad);
  ASSERT_TRUE(std::isfinite(loss));
  // The same kernels in float, one by one, on the double model's inputs.
  const Vec x = random_vec(rng, static_cast<std::size_t>(N) * C, -2, 2);
  const std::vector<float> xf(x.begin(), x.end());
  Vec out(x.size()), mean(N), rstd(N), dx(x.size(), 0.0);
  std::vector<float> outf(x.size()), meanf(N), rstdf(N), dxf(x.size(), 0.f);
  const Vec gamma(C, 1.0), beta(C, 0.0);
  const std::vector<float> gammaf(C, 1.f), betaf(C, 0.f);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), gamma.data(), beta.data(), N,
                    C);
  layernorm_forward(outf.data(), meanf.data(), rstdf.data(), xf.data(), gammaf.data(), betaf.data(),
                    N, C);
  layernorm_backward(dx.data(), nullptr, nullptr, x.data(), x.data(), gamma.data(), mean.data(),
                     rstd.data(), N, C);
  layernorm_backward(dxf.data(), nullptr, nullptr, xf.data(), xf.data(), gammaf.data(),
                     meanf.data(), rstdf.data(), N, C);
  for (std::size_t i = 0; i < x.size(); ++i) {
    ASSERT_NEAR(outf[i], out[i], 1e-4);
    ASSERT_NEAR(dxf[i], dx[i], 1e-4);
  }
  std::vector<float> gf(x.size()), dgf(x.size(), 0.f);
  gelu_forward(gf.data(), xf.data(), xf.size());
  gelu_backward(dgf.data(), xf.data(), xf.data(), xf.size());
  Vec g(x.size()), dg(x.size(), 0.0);
  gelu_forward(g.data(), x.data(), x.size());
  gelu_backward(dg.data(), x.data(), x.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    ASSERT_NEAR(gf[i], g[i], 1e-5);
    ASSERT_NEAR(dgf[i], dg[i], 1e-5);
  }
}

}  // namespace
}  // namespace zoro::kernels::ref
