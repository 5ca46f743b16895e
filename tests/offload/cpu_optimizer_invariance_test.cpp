// Bit-for-bit claims of Note [Bit-identical paths] (offload/optim/cpu_optimizer.h): across
// instruction sets (special values included), thread counts, chunkings, range splits and
// start offsets; and the SIMD conversions of gradients in and half copies out, exhaustively.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <memory>
#include <random>
#include <thread>
#include <tuple>

#include "tests/offload/optim_test_util.h"
#include "tests/support/random.h"

namespace zoro::optim::testing {
namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr std::size_t kBigElems = 20'011;
constexpr std::uint32_t kPatternStride = 61;  // the instrumented builds sample the sweep
#else
constexpr std::size_t kBigElems = 200'003;
constexpr std::uint32_t kPatternStride = 1;
#endif

float from_bits(std::uint32_t b) { return std::bit_cast<float>(b); }

// A value of every class an optimizer can meet: zeros, subnormals, tiny, ordinary, huge,
// +-Inf, quiet and signaling NaNs, and values on half-precision rounding boundaries.
float special_value(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pick(0, 11);
  std::uniform_int_distribution<std::uint32_t> bits;
  const std::uint32_t sign = (bits(rng) & 1u) << 31;
  switch (pick(rng)) {
    case 0:
      return from_bits(sign);
    case 1:
      return from_bits(sign | (bits(rng) & 0x007FFFFFu));  // subnormal
    case 2:
      return from_bits(sign | 0x00800000u | (bits(rng) & 0x00FFFFFFu));  // tiny
    case 3:
      return from_bits(sign | 0x7F000000u | (bits(rng) & 0x007FFFFFu));  // huge
    case 4:
      return from_bits(sign | 0x7F800000u);  // Inf
    case 5:
      return from_bits(sign | 0x7FC00000u | (bits(rng) & 0x003FFFFFu));  // qNaN
    case 6:
      return from_bits(sign | 0x7F800001u | (bits(rng) & 0x001FFFFFu));  // sNaN
    case 7:
      return from_bits((bits(rng) & 0xFFFF0000u) | 0x8000u);  // bf16 tie
    case 8:
      return from_bits((bits(rng) & 0xFFFFE000u) | 0x1000u);  // fp16 tie
    case 9:
      return (bits(rng) & 1u) ? 65504.f : 65520.f;  // fp16 max
    default: {
      std::normal_distribution<float> normal(0.f, 1.f);
      return normal(rng);
    }
  }
}

void fill(Problem& p, std::mt19937_64& rng, double special_fraction) {
  std::bernoulli_distribution special(special_fraction);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  for (std::size_t i = 0; i < p.size(); ++i) {
    p.master.set(i, special(rng) ? special_value(rng) : normal(rng));
    p.grad.set(i, special(rng) ? special_value(rng) : normal(rng));
    p.s1.set(i, special(rng) ? special_value(rng) : 0.1f * normal(rng));
    p.s2.set(i, special(rng) ? special_value(rng) : unit(rng));
  }
}

// Bits equal, except that two NaNs are equal whatever their payloads (where two NaN operands
// meet in one operation, IEEE leaves the choice of payload open).
::testing::AssertionResult same_outputs(const Buf& a, const Buf& b, const char* what) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    const float x = a.get(i), y = b.get(i);
    if (std::isnan(x) && std::isnan(y)) continue;
    if (std::memcmp(static_cast<const std::uint8_t*>(a.data()) + i * size_of(a.dtype()),
                    static_cast<const std::uint8_t*>(b.data()) + i * size_of(b.dtype()),
                    size_of(a.dtype())) != 0) {
      return ::testing::AssertionFailure() << what << "[" << i << "]: " << x << " vs " << y;
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_problem(const Problem& a, const Problem& b) {
  for (auto [x, y, what] :
       {std::tuple{&a.master, &b.master, "master"}, std::tuple{&a.s1, &b.s1, "state1"},
        std::tuple{&a.s2, &b.s2, "state2"}, std::tuple{&a.half, &b.half, "half_out"}}) {
    auto r = same_outputs(*x, *y, what);
    if (!r) return r;
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult exactly_same(const Problem& a, const Problem& b) {
  for (auto [x, y, what] :
       {std::tuple{&a.master, &b.master, "master"}, std::tuple{&a.s1, &b.s1, "state1"},
        std::tuple{&a.s2, &b.s2, "state2"}, std::tuple{&a.half, &b.half, "half_out"}}) {
    const std::size_t i = x->first_difference(*y);
    if (i != x->size()) {
      return ::testing::AssertionFailure()
             << what << "[" << i << "]: " << x->get(i) << " vs " << y->get(i);
    }
  }
  return ::testing::AssertionSuccess();
}

const std::vector<Variant>& every_variant() {
  static const std::vector<Variant> v =
      all_variants({Opt::kAdam, Opt::kAdamL2, Opt::kAdamW, Opt::kAdagrad, Opt::kLion});
  return v;
}

// A few variants that between them use every load, store and formula.
std::vector<Variant> sample_variants() {
  return {Variant{Opt::kAdamW, DType::kF16, DType::kF32, DType::kBF16},
          Variant{Opt::kAdamL2, DType::kBF16, DType::kBF16, DType::kF16},
          Variant{Opt::kAdam, DType::kF32, DType::kF32, std::nullopt},
          Variant{Opt::kAdagrad, DType::kBF16, DType::kF32, DType::kF16},
          Variant{Opt::kLion, DType::kF32, DType::kBF16, DType::kBF16}};
}

TEST(CpuOptimizerInvariance, EverySimdPathIsBitIdenticalToScalarIncludingSpecialValues) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(1);
  CpuExecutor ex(CpuExecutor::Options{.threads = 1});
  Hyper h;
  h.grad_scale = 0.37f;
  for (const Variant& v : every_variant()) {
    SCOPED_TRACE(v.name());
    Problem base(v, 1013, 0);
    fill(base, rng, 0.2);
    Problem want = base;
    {
      ScopedIsa isa(Isa::kScalar);
      for (int step = 1; step <= 3; ++step) run_step(ex, want, h, step);
    }
    for (Isa isa_kind : supported_isas()) {
      if (isa_kind == Isa::kScalar) continue;
      SCOPED_TRACE(isa_name(isa_kind));
      ScopedIsa isa(isa_kind);
      Problem got = base;
      for (int step = 1; step <= 3; ++step) run_step(ex, got, h, step);
      ASSERT_TRUE(same_problem(got, want));
    }
  }
}

TEST(CpuOptimizerInvariance, SameBitsWhateverTheThreadCount) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(2);
  Hyper h;
  std::vector<std::unique_ptr<CpuExecutor>> executors;
  for (int threads : {1, 2, 3}) {
    executors.push_back(std::make_unique<CpuExecutor>(
        CpuExecutor::Options{.threads = threads, .grain_elems = 1000}));
  }
  for (const Variant& v : sample_variants()) {
    SCOPED_TRACE(v.name());
    Problem base(v, kBigElems, 0);
    fill(base, rng, 0.01);
    Problem want = base;
    for (int step = 1; step <= 2; ++step) run_step(*executors[0], want, h, step);
    for (std::size_t e = 1; e < executors.size(); ++e) {
      SCOPED_TRACE(::testing::Message() << executors[e]->threads() << " threads");
      Problem got = base;
      for (int step = 1; step <= 2; ++step) run_step(*executors[e], got, h, step);
      ASSERT_TRUE(exactly_same(got, want));
    }
  }
}

TEST(CpuOptimizerInvariance, ChunkedEqualsWholeAndCallbacksComeInOrderOnTheCaller) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(3);
  CpuExecutor ex(CpuExecutor::Options{.threads = 2, .grain_elems = 512});
  Hyper h;
  for (const Variant& v : sample_variants()) {
    SCOPED_TRACE(v.name());
    Problem base(v, kBigElems, 0);
    fill(base, rng, 0.01);
    Problem whole = base;
    run_step(ex, whole, h, 1);
    for (std::size_t chunk : {std::size_t{1} << 20, std::size_t{4099}, std::size_t{16}}) {
      SCOPED_TRACE(::testing::Message() << "chunk " << chunk);
      Problem got = base;
      std::vector<Range> seen;
      const auto caller = std::this_thread::get_id();
      bool complete_when_told = true;
      bool on_caller = true;
      run_step(ex, got, h, 1, Range{0, got.size()}, chunk, [&](Range r) {
        on_caller = on_caller && std::this_thread::get_id() == caller;
        seen.push_back(r);
        // The chunk's outputs must be final when we are told.
        complete_when_told =
            complete_when_told && std::memcmp(got.master.f32() + r.begin,
                                              whole.master.f32() + r.begin, r.size() * 4) == 0;
      });
      EXPECT_TRUE(on_caller);
      EXPECT_TRUE(complete_when_told);
      ASSERT_EQ(seen.size(), (got.size() + chunk - 1) / chunk);
      for (std::size_t k = 0; k < seen.size(); ++k) {
        ASSERT_EQ(seen[k].begin, k * chunk);
        ASSERT_EQ(seen[k].end, std::min(got.size(), (k + 1) * chunk));
      }
      ASSERT_TRUE(exactly_same(got, whole));
    }
    // Two calls over a split range (at an odd point) equal one call over the whole.
    Problem split = base;
    run_step(ex, split, h, 1, Range{0, 12345});
    run_step(ex, split, h, 1, Range{12345, split.size()});
    ASSERT_TRUE(exactly_same(split, whole));
  }
}

TEST(CpuOptimizerInvariance, TwoCallersMayShareOneExecutor) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(6);
  CpuExecutor ex(CpuExecutor::Options{.threads = 2, .grain_elems = 256});
  const std::vector<Variant> variants = sample_variants();
  std::vector<Problem> want, got;
  for (const Variant& v : variants) {
    Problem p(v, 20'000, 0);
    fill(p, rng, 0.01);
    want.push_back(p);
    got.push_back(p);
  }
  for (Problem& p : want) {
    for (int step = 1; step <= 3; ++step) run_step(ex, p, Hyper{}, step);
  }
  std::vector<std::thread> callers;
  for (std::size_t k = 0; k < got.size(); ++k) {
    callers.emplace_back([&, k] {
      for (int step = 1; step <= 3; ++step) run_step(ex, got[k], Hyper{}, step, {}, 1000);
    });
  }
  for (auto& t : callers) t.join();
  for (std::size_t k = 0; k < got.size(); ++k) {
    SCOPED_TRACE(variants[k].name());
    EXPECT_TRUE(exactly_same(got[k], want[k]));
  }
}

TEST(CpuOptimizerInvariance, ElementsOutsideTheRangeAreUntouched) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(4);
  CpuExecutor ex(CpuExecutor::Options{.threads = 2, .grain_elems = 64});
  for (const Variant& v : sample_variants()) {
    SCOPED_TRACE(v.name());
    Problem base(v, 1000, 1);
    fill(base, rng, 0.0);
    Problem got = base;
    run_step(ex, got, Hyper{}, 1, Range{101, 867}, 33);
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (i >= 101 && i < 867) continue;
      ASSERT_EQ(got.master.get(i), base.master.get(i)) << i;
      ASSERT_EQ(got.s1.get(i), base.s1.get(i)) << i;
    }
  }
}

TEST(CpuOptimizerInvariance, StartOffsetDoesNotChangeTheBits) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(5);
  CpuExecutor ex(CpuExecutor::Options{.threads = 1});
  for (Isa isa_kind : supported_isas()) {
    SCOPED_TRACE(isa_name(isa_kind));
    ScopedIsa isa(isa_kind);
    for (const Variant& v : sample_variants()) {
      SCOPED_TRACE(v.name());
      Problem base(v, 203, 0);
      fill(base, rng, 0.1);
      Problem want = base;
      run_step(ex, want, Hyper{}, 1);
      for (std::size_t offset = 1; offset <= 17; ++offset) {
        Problem got(v, base.size(), offset);
        for (std::size_t i = 0; i < base.size(); ++i) {
          got.master.set(i, base.master.get(i));
          got.grad.set(i, base.grad.get(i));
          got.s1.set(i, base.s1.get(i));
          got.s2.set(i, base.s2.get(i));
        }
        // Copies through get/set quiet signaling NaNs; compare against the same copy.
        Problem want_here = got;
        {
          ScopedIsa scalar(Isa::kScalar);
          run_step(ex, want_here, Hyper{}, 1);
        }
        run_step(ex, got, Hyper{}, 1);
        ASSERT_TRUE(same_problem(got, want_here)) << "offset " << offset;
      }
    }
  }
}

// With lr = 0, no weight decay and a zero gradient, Adam leaves the master as it is and the
// half copy is exactly the conversion of the master: every SIMD store path is checked against
// half.h on every rounding case (all 2^16 upper halves of an fp32 with the lower half at the
// rounding boundaries, and every fp16 value +-1 and +-0x1000 at 13 dropped bits).
TEST(CpuOptimizerInvariance, HalfCopyIsExactRoundToNearestEvenOnEveryPath) {
  std::vector<std::uint32_t> patterns;
  for (std::uint32_t hi = 0; hi < 0x10000u; hi += kPatternStride) {
    for (std::uint32_t lo : {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) {
      patterns.push_back(hi << 16 | lo);
    }
  }
  for (std::uint32_t h = 0; h < 0x10000u; h += kPatternStride) {
    const std::uint32_t f =
        std::bit_cast<std::uint32_t>(fp16_to_float(static_cast<std::uint16_t>(h)));
    for (std::uint32_t d : {0u, 1u, 0xFFFu, 0x1000u, 0x1001u}) {
      patterns.push_back(f + d);
      patterns.push_back(f - d);
    }
  }
  CpuExecutor ex(CpuExecutor::Options{.threads = 2});
  Hyper h;
  h.lr = 0.f;
  for (Isa isa_kind : supported_isas()) {
    SCOPED_TRACE(isa_name(isa_kind));
    ScopedIsa isa(isa_kind);
    for (DType half : {DType::kBF16, DType::kF16}) {
      SCOPED_TRACE(to_string(half));
      Problem p(Variant{Opt::kAdam, DType::kF32, DType::kF32, half}, patterns.size(), 0);
      for (std::size_t i = 0; i < p.size(); ++i) {
        p.master.f32()[i] = from_bits(patterns[i]);
        p.grad.f32()[i] = 0.f;
      }
      run_step(ex, p, h, 1);
      for (std::size_t i = 0; i < p.size(); ++i) {
        const float x = from_bits(patterns[i]);
        const std::uint16_t want = half == DType::kBF16 ? float_to_bf16(x) : float_to_fp16(x);
        ASSERT_EQ(p.half.u16()[i], want) << std::hex << "fp32 bits " << patterns[i];
        if (!std::isnan(x)) {
          ASSERT_EQ(p.master.f32()[i], x);
        }
      }
    }
  }
}

// With beta1 = 0 and grad_scale 1, Adam's m is the gradient as the path read it: every fp16
// and bf16 value goes through each SIMD load path and must come out as half.h converts it.
TEST(CpuOptimizerInvariance, HalfGradientsAreReadExactlyOnEveryPath) {
  CpuExecutor ex(CpuExecutor::Options{.threads = 1});
  Hyper h;
  h.beta1 = 0.f;
  for (Isa isa_kind : supported_isas()) {
    SCOPED_TRACE(isa_name(isa_kind));
    ScopedIsa isa(isa_kind);
    for (DType grad : {DType::kBF16, DType::kF16}) {
      SCOPED_TRACE(to_string(grad));
      Problem p(Variant{Opt::kAdam, grad, DType::kF32, std::nullopt}, 0x10000, 3);
      for (std::size_t i = 0; i < p.size(); ++i) {
        p.grad.u16()[i] = static_cast<std::uint16_t>(i);
        p.master.f32()[i] = 1.f;
      }
      run_step(ex, p, h, 1);
      for (std::size_t i = 0; i < p.size(); ++i) {
        const auto bits = static_cast<std::uint16_t>(i);
        float want = grad == DType::kBF16 ? bf16_to_float(bits) : fp16_to_float(bits);
        if (want == 0.f) want = 0.f;  // 0 * m + (-0) is +0
        ASSERT_EQ(std::bit_cast<std::uint32_t>(p.s1.f32()[i]), std::bit_cast<std::uint32_t>(want))
            << std::hex << "16-bit " << bits;
      }
    }
  }
}

}  // namespace
}  // namespace zoro::optim::testing
