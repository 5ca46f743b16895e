// runtime/base/half.h against an independent definition: the exact value of every 16-bit
// pattern, and fp32 -> 16-bit rounding computed in double from those values (nearest, ties
// to the even pattern), over every fp32 upper half with its lower bits at and around each
// rounding boundary, plus the special classes. (The SIMD paths are checked against half.h in
// cpu_optimizer_invariance_test.cpp.)
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "runtime/base/half.h"

namespace zoro {
namespace {

// The value of a binary16-like pattern with `exp_bits` exponent and `man_bits` mantissa bits,
// computed from the definition.
double decode(std::uint32_t bits, int exp_bits, int man_bits) {
  const std::uint32_t sign = bits >> (exp_bits + man_bits);
  const std::uint32_t e = (bits >> man_bits) & ((1u << exp_bits) - 1);
  const std::uint32_t m = bits & ((1u << man_bits) - 1);
  const int bias = (1 << (exp_bits - 1)) - 1;
  double v;
  if (e == (1u << exp_bits) - 1) {
    v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - bias - man_bits);
  } else {
    v = std::ldexp(static_cast<double>(m | (1u << man_bits)),
                   static_cast<int>(e) - bias - man_bits);
  }
  return sign ? -v : v;
}

double bf16_value(std::uint16_t h) { return decode(h, 8, 7); }
double fp16_value(std::uint16_t h) { return decode(h, 5, 10); }

TEST(HalfConversion, EverySixteenBitValueConvertsExactly) {
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    for (auto [to_float, value, name] : {std::tuple{&bf16_to_float, &bf16_value, "bf16"},
                                         std::tuple{&fp16_to_float, &fp16_value, "fp16"}}) {
      const float f = to_float(bits);
      const double want = value(bits);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(f)) << name << " " << std::hex << h;
        ASSERT_EQ(std::signbit(f), (h & 0x8000u) != 0) << name << " " << std::hex << h;
        ASSERT_TRUE(std::bit_cast<std::uint32_t>(f) & 0x00400000u) << "quiet " << std::hex << h;
      } else {
        ASSERT_EQ(static_cast<double>(f), want) << name << " " << std::hex << h;
        ASSERT_EQ(std::signbit(f), std::signbit(want)) << name << " " << std::hex << h;
      }
    }
  }
}

// Round-to-nearest-even of x among all finite patterns (and Inf beyond the largest's half
// ulp), found from the sorted list of values: the independent definition.
template <class Value>
std::uint16_t nearest_even(double x, Value value, std::uint16_t inf_bits, double max_finite,
                           double half_ulp_of_max) {
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  if (a >= max_finite + half_ulp_of_max) return sign | inf_bits;  // ties go to Inf (even)
  // Binary search over the positive finite patterns (monotonic in their bits).
  std::uint32_t lo = 0, hi = inf_bits;  // value(lo) <= a < value(hi) region
  while (hi - lo > 1) {
    const std::uint32_t mid = (lo + hi) / 2;
    if (value(static_cast<std::uint16_t>(mid)) <= a)
      lo = mid;
    else
      hi = mid;
  }
  const double dl = a - value(static_cast<std::uint16_t>(lo));
  const double dh = value(static_cast<std::uint16_t>(hi)) - a;
  std::uint32_t r = dl < dh ? lo : dh < dl ? hi : ((lo & 1u) ? hi : lo);
  return static_cast<std::uint16_t>(sign | r);
}

TEST(HalfConversion, FloatToHalfRoundsToNearestEvenOnEveryBoundary) {
  std::vector<std::uint32_t> patterns;
  for (std::uint32_t hi = 0; hi < 0x10000u; ++hi) {
    for (std::uint32_t lo : {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) {
      patterns.push_back(hi << 16 | lo);
    }
  }
  for (std::uint32_t h = 0; h < 0x7C00u; ++h) {
    const auto f = std::bit_cast<std::uint32_t>(fp16_to_float(static_cast<std::uint16_t>(h)));
    for (std::uint32_t d : {1u, 0xFFFu, 0x1000u, 0x1001u, 0x2000u}) {
      patterns.push_back(f + d);
      patterns.push_back(f - d);
      patterns.push_back((f + d) | 0x80000000u);
    }
    // Around fp16 subnormals the dropped bits depend on the exponent: also the midpoints.
    const double v = fp16_value(static_cast<std::uint16_t>(h));
    const double next = fp16_value(static_cast<std::uint16_t>(h + 1));
    const auto mid = std::bit_cast<std::uint32_t>(static_cast<float>((v + next) / 2));
    for (std::uint32_t m : {mid - 1, mid, mid + 1}) patterns.push_back(m);
  }
  for (std::uint32_t bits : patterns) {
    const float x = std::bit_cast<float>(bits);
    if (std::isnan(x)) {
      // NaN: sign and top payload bits kept, quiet bit set (the x86 instructions' rule).
      ASSERT_EQ(float_to_bf16(x), static_cast<std::uint16_t>((bits >> 16) | 0x40u));
      ASSERT_EQ(float_to_fp16(x), static_cast<std::uint16_t>(((bits >> 16) & 0x8000u) | 0x7E00u |
                                                             ((bits >> 13) & 0x3FFu)));
      continue;
    }
    ASSERT_EQ(float_to_bf16(x),
              nearest_even(x, bf16_value, 0x7F80, bf16_value(0x7F7F), std::ldexp(1.0, 127 - 8)))
        << std::hex << bits;
    ASSERT_EQ(float_to_fp16(x), nearest_even(x, fp16_value, 0x7C00, 65504.0, 16.0))
        << std::hex << bits;
  }
}

TEST(HalfConversion, SpecialClasses) {
  constexpr float inf = std::numeric_limits<float>::infinity();
  static_assert(float_to_bf16(inf) == 0x7F80 && float_to_bf16(-inf) == 0xFF80);
  static_assert(float_to_fp16(inf) == 0x7C00 && float_to_fp16(-inf) == 0xFC00);
  static_assert(float_to_fp16(65504.f) == 0x7BFF && float_to_fp16(65520.f) == 0x7C00);
  static_assert(float_to_fp16(65519.996f) == 0x7BFF);
  static_assert(float_to_bf16(-0.f) == 0x8000 && float_to_fp16(-0.f) == 0x8000);
  static_assert(float_to_fp16(0x1p-24f) == 0x0001 && float_to_fp16(0x1p-25f) == 0x0000);
  static_assert(float_to_fp16(0x1.8p-25f) == 0x0001);
  static_assert(float_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);  // rounds up
  static_assert(float_to_bf16(std::numeric_limits<float>::denorm_min()) == 0x0000);
  static_assert(float_to_bf16(0x1p-133f) == 0x0001);  // bf16 subnormals are kept
  static_assert(bf16_to_float(0x3F80) == 1.f && fp16_to_float(0x3C00) == 1.f);
  static_assert(fp16_to_float(0x0001) == 0x1p-24f);
  // Signaling NaN in: quiet NaN out, both ways.
  EXPECT_TRUE(std::isnan(bf16_to_float(0x7F81)));
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x7F800001u)), 0x7FC0);
  EXPECT_EQ(float_to_fp16(std::bit_cast<float>(0xFF800001u)), 0xFE00);
}

}  // namespace
}  // namespace zoro
