#include "offload/grad_fold.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "runtime/base/half.h"
#include "tests/support/random.h"

namespace zoro::offload {
namespace {

std::vector<std::uint16_t> to_wire(DType wire, const std::vector<float>& g) {
  std::vector<std::uint16_t> out;
  for (float x : g) out.push_back(wire == DType::kBF16 ? float_to_bf16(x) : float_to_fp16(x));
  return out;
}

float from_wire(DType wire, std::uint16_t bits) {
  return wire == DType::kBF16 ? bf16_to_float(bits) : fp16_to_float(bits);
}

class GradFold : public ::testing::TestWithParam<DType> {};

TEST_P(GradFold, StoresThenAddsAtTheFlatOffsetAcrossBlocks) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(1);
  const DType wire = GetParam();
  // Several norm blocks plus a ragged tail, placed after a prefix in both buffers.
  const std::size_t n = 3 * kNormBlockElems + 1234, bucket_at = 77, flat_at = 4096;
  const auto g1 = testing::random_floats(rng, n, -2, 2);
  const auto g2 = testing::random_floats(rng, n, -2, 2);
  std::vector<float> acc(flat_at + n + 50, 123.f);
  auto fold_one = [&](const std::vector<float>& g, bool first, bool norm) {
    FoldSegment s{bucket_at, flat_at, n, first, norm};
    if (wire == DType::kF32) {
      std::vector<float> bucket(bucket_at, 0.f);
      bucket.insert(bucket.end(), g.begin(), g.end());
      return fold_segment(bucket.data(), wire, s, acc.data());
    }
    std::vector<std::uint16_t> bucket(bucket_at, 0);
    const auto w = to_wire(wire, g);
    bucket.insert(bucket.end(), w.begin(), w.end());
    return fold_segment(bucket.data(), wire, s, acc.data());
  };
  const FoldResult r1 = fold_one(g1, true, false);
  EXPECT_FALSE(r1.non_finite);
  const FoldResult r2 = fold_one(g2, false, true);
  EXPECT_FALSE(r2.non_finite);
  for (std::size_t i = 0; i < n; ++i) {
    const float a = wire == DType::kF32 ? g1[i] : from_wire(wire, to_wire(wire, {g1[i]})[0]);
    const float b = wire == DType::kF32 ? g2[i] : from_wire(wire, to_wire(wire, {g2[i]})[0]);
    ASSERT_EQ(acc[flat_at + i], a + b) << "element " << i;
  }
  EXPECT_EQ(acc[flat_at - 1], 123.f);  // neighbours untouched
  EXPECT_EQ(acc[flat_at + n], 123.f);
  EXPECT_EQ(r2.sum_squares, sum_squares(acc.data() + flat_at, n));
  double naive = 0;
  for (std::size_t i = 0; i < n; ++i)
    naive += static_cast<double>(acc[flat_at + i]) * acc[flat_at + i];
  EXPECT_NEAR(r2.sum_squares, naive, 1e-9 * naive);
}

TEST_P(GradFold, FlagsInfAndNanInAnyBlock) {
  const DType wire = GetParam();
  const std::size_t n = 2 * kNormBlockElems + 5;
  for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    for (std::size_t at : {std::size_t{0}, kNormBlockElems + 3, n - 1}) {
      std::vector<float> g(n, 0.5f);
      g[at] = bad;
      std::vector<float> acc(n, 0.f);
      FoldSegment s{0, 0, n, true, true};
      FoldResult r;
      if (wire == DType::kF32) {
        r = fold_segment(g.data(), wire, s, acc.data());
      } else {
        const auto w = to_wire(wire, g);
        r = fold_segment(w.data(), wire, s, acc.data());
      }
      EXPECT_TRUE(r.non_finite) << "value " << bad << " at " << at;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Wire, GradFold, ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const auto& param_info) {
                           return std::string(to_string(param_info.param));
                         });

}  // namespace
}  // namespace zoro::offload
