// Every instruction-set path, forced, against a double-precision reference, element by
// element, at every one of 1000 steps on fresh random gradients.
//
// The bound (a ULP-style bound, checked for every output element at every step): each fp32
// output differs from the double-precision value of the documented formula, evaluated from
// the same stored inputs, by at most K units of 2^-23 times the sum of the magnitudes of the
// terms that formula adds (S below), plus 8 fp32 subnormal units:
//   m (Adam, Lion):  K = 4,  S = beta1 |m| + (1 - beta1) G        G = |g * scale| (+ wd |p|)
//   v (Adam):        K = 8,  S = beta2 v + (1 - beta2) G^2
//   sum (Adagrad):   K = 8,  S = sum + G^2
//   p:               K = 8,  S = |p * decay| + step_size * S_m / denom    (Adam; Adagrad alike)
// A bf16 state adds its own rounding: 2^-8 |ref|. The half copy must be exactly
// half.h's rounding of the new fp32 master. Lion's sign(c) may flip only where |c| is within
// its own bound of 0.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#include "tests/offload/optim_test_util.h"
#include "tests/support/random.h"

namespace zoro::optim::testing {
namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kSteps = 100;  // the instrumented builds check the same code, more slowly
#else
constexpr int kSteps = 1000;
#endif
constexpr std::size_t kElems = 37;  // not a multiple of 8 or 16: every path has a tail
constexpr std::size_t kOffset = 3;  // and no buffer starts on a vector boundary
constexpr double kUlp = 0x1p-23;
constexpr double kTiny = 8 * 0x1p-149;
// Every magnitude sum S below includes the smallest normal fp32, so that a subnormal result
// is allowed K units of the subnormal spacing, and that absolute error is propagated through
// later divisions like any other (Adagrad's g / eps multiplies it by 1e8).
constexpr double kMinNormal = 0x1p-126;
constexpr int kMagnitudeClasses = 6;

// Gradient value of element class c: zeros, ordinary, large, small, subnormal, wild.
float draw_grad(std::mt19937_64& rng, std::size_t i, DType dtype) {
  std::normal_distribution<float> normal(0.f, 1.f);
  const bool fp16 = dtype == DType::kF16;
  switch (i % kMagnitudeClasses) {
    case 0:
      return 0.f;
    case 1:
      return normal(rng);
    case 2:
      return normal(rng) * (fp16 ? 1e4f : 1e12f);
    case 3:
      return normal(rng) * (fp16 ? 1e-5f : 1e-30f);
    case 4:
      return normal(rng) * (fp16 ? 1e-7f : 1e-40f);
    default: {
      std::uniform_real_distribution<float> e(fp16 ? -6.f : -20.f, fp16 ? 4.f : 20.f);
      return normal(rng) * std::pow(10.f, e(rng));
    }
  }
}

float draw_master(std::mt19937_64& rng, std::size_t i) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  switch (i % kMagnitudeClasses) {
    case 2:
      return u(rng) * 1e6f;
    case 3:
      return u(rng) * 1e-20f;
    case 4:
      return u(rng) * 1e-38f;
    default:
      return u(rng);
  }
}

struct Before {
  std::vector<double> p, s1, s2, g;
};

class Checker {
 public:
  explicit Checker(const Variant& v) : v_(v) {}
  // Returns false (after one failure message) at the first element out of bounds.
  bool check(const char* what, std::size_t i, int step, double got, double ref, double scale,
             double k, bool bf16_state = false) {
    double tol = k * kUlp * scale + kTiny;
    // bf16 rounding: half a bf16 ulp, 2^-8 |ref| (and 2^-134 among bf16 subnormals).
    if (bf16_state) tol = 2 * tol + 0x1p-8 * std::fabs(ref) + 0x1p-134;
    if (std::fabs(got - ref) <= tol) return true;
    ADD_FAILURE() << v_.name() << " step " << step << " element " << i << " (class "
                  << i % kMagnitudeClasses << "): " << what << " = " << got << ", reference " << ref
                  << ", |diff| " << std::fabs(got - ref) << " > bound " << tol;
    return false;
  }

 private:
  const Variant& v_;
};

bool check_step(Problem& p, const Before& b, const Hyper& h, int step) {
  const Variant& v = p.variant;
  Checker c(v);
  const bool bf16 = v.state == DType::kBF16;
  const double lr = h.lr, b1 = h.beta1, b2 = h.beta2, eps = h.eps, wd = h.weight_decay;
  const double c1 = 1.0 - b1, c2 = 1.0 - b2;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double p0 = b.p[i];
    double g = b.g[i] * static_cast<double>(h.grad_scale);
    double G = std::fabs(g) + kMinNormal;
    const float p_new = p.master.get(i);
    if (v.opt == Opt::kAdam || v.opt == Opt::kAdamL2 || v.opt == Opt::kAdamW) {
      if (v.opt == Opt::kAdamL2) {
        g += wd * p0;
        G += wd * std::fabs(p0);
      }
      const double m = b1 * b.s1[i] + c1 * g;
      const double s_m = b1 * std::fabs(b.s1[i]) + c1 * G + kMinNormal;
      const double vv = b2 * b.s2[i] + c2 * g * g;
      const double s_v = b2 * b.s2[i] + c2 * G * G + kMinNormal;
      const double bc1 = 1.0 - std::pow(b1, step), bc2 = 1.0 - std::pow(b2, step);
      const double denom = std::sqrt(vv) / std::sqrt(bc2) + eps;
      const double p_dec = v.opt == Opt::kAdamW ? p0 * (1.0 - lr * wd) : p0;
      const double p_ref = p_dec - lr / bc1 * m / denom;
      const double s_p = std::fabs(p_dec) + lr / bc1 * s_m / denom;
      if (!c.check("m", i, step, p.s1.get(i), m, s_m, 4, bf16)) return false;
      if (!c.check("v", i, step, p.s2.get(i), vv, s_v, 8, bf16)) return false;
      if (!c.check("p", i, step, p_new, p_ref, s_p, 8)) return false;
    } else if (v.opt == Opt::kAdagrad) {
      g += wd * p0;
      G += wd * std::fabs(p0);
      const double s = b.s1[i] + g * g;
      const double s_s = b.s1[i] + G * G + kMinNormal;
      const double denom = std::sqrt(s) + eps;
      const double p_ref = p0 - lr * g / denom;
      const double s_p = std::fabs(p0) + lr * G / denom;
      if (!c.check("sum", i, step, p.s1.get(i), s, s_s, 8, bf16)) return false;
      if (!c.check("p", i, step, p_new, p_ref, s_p, 8)) return false;
    } else {  // Lion
      const double cc = b1 * b.s1[i] + c1 * g;
      const double s_c = b1 * std::fabs(b.s1[i]) + c1 * G + kMinNormal;
      const double m = b2 * b.s1[i] + c2 * g;
      const double s_m = b2 * std::fabs(b.s1[i]) + c2 * G + kMinNormal;
      const double p_dec = p0 * (1.0 - lr * wd);
      const double s_p = std::fabs(p_dec) + lr;
      if (!c.check("m", i, step, p.s1.get(i), m, s_m, 4, bf16)) return false;
      if (std::fabs(cc) > 4 * kUlp * s_c + kTiny) {
        const double p_ref = p_dec - lr * (cc > 0 ? 1.0 : -1.0);
        if (!c.check("p", i, step, p_new, p_ref, s_p, 8)) return false;
      } else {  // sign(c) is not determined by the bound: any of the three outcomes
        bool any = false;
        for (double sgn : {-1.0, 0.0, 1.0}) {
          any = any || std::fabs(p_new - (p_dec - lr * sgn)) <= 8 * kUlp * s_p + kTiny;
        }
        if (!any) return c.check("p (sign undetermined)", i, step, p_new, p_dec, s_p + lr, 8);
      }
    }
    if (v.half) {
      const std::uint16_t want =
          *v.half == DType::kBF16 ? float_to_bf16(p_new) : float_to_fp16(p_new);
      if (p.half.u16()[i] != want) {
        ADD_FAILURE() << v.name() << " step " << step << " element " << i << ": half copy "
                      << std::hex << p.half.u16()[i] << " but round-to-nearest-even of " << p_new
                      << " is " << want;
        return false;
      }
    }
  }
  return true;
}

class ReferenceTest : public ::testing::TestWithParam<Isa> {};

TEST_P(ReferenceTest, EveryVariantMatchesDoublePrecisionOverManySteps) {
  ZORO_TRACE_SEED();
  if (!isa_supported(GetParam())) {
    GTEST_SKIP() << "this CPU has no " << isa_name(GetParam());
  }
  ScopedIsa isa(GetParam());
  CpuExecutor ex(CpuExecutor::Options{.threads = 1});
  auto rng = zoro::testing::make_rng(static_cast<std::uint64_t>(GetParam()) + 100);
  int variants = 0;
  for (const Variant& v :
       all_variants({Opt::kAdam, Opt::kAdamL2, Opt::kAdamW, Opt::kAdagrad, Opt::kLion})) {
    Problem p(v, kElems, kOffset);
    Hyper h;
    h.grad_scale = static_cast<float>(0.73 / 1024.0);  // a clip factor over a loss scale
    if (v.opt == Opt::kLion) h.lr = 1e-4f, h.beta2 = 0.99f;
    if (v.opt == Opt::kAdagrad) h.eps = 1e-10f, h.lr = 1e-2f;
    for (std::size_t i = 0; i < p.size(); ++i) p.master.set(i, draw_master(rng, i));
    Before b;
    b.p.resize(p.size());
    b.s1.resize(p.size());
    b.s2.resize(p.size());
    b.g.resize(p.size());
    bool ok = true;
    for (int step = 1; step <= kSteps && ok; ++step) {
      for (std::size_t i = 0; i < p.size(); ++i) p.grad.set(i, draw_grad(rng, i, v.grad));
      for (std::size_t i = 0; i < p.size(); ++i) {
        b.p[i] = p.master.get(i);
        b.s1[i] = p.s1.get(i);
        b.s2[i] = p.s2.get(i);
        b.g[i] = p.grad.get(i);
      }
      run_step(ex, p, h, step);
      ok = check_step(p, b, h, step);
    }
    ++variants;
  }
  EXPECT_EQ(variants, 90);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, ReferenceTest, ::testing::ValuesIn(all_isas()), isa_param_name);

}  // namespace
}  // namespace zoro::optim::testing
