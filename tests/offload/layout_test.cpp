#include "offload/layout.h"

#include <gtest/gtest.h>

#include <random>

#include "runtime/base/error.h"
#include "tests/support/random.h"

namespace zoro::offload {
namespace {

TEST(FlatLayout, OffsetsAreAlignedContiguousAndFindable) {
  FlatLayout layout;
  const ParamId a = layout.add("wte", {50, 7});  // 350 elements
  const ParamId b = layout.add("ln.bias", {3});
  const ParamId c = layout.add("fc", {64, 2});
  EXPECT_EQ(layout.slot(a).offset, 0u);
  EXPECT_EQ(layout.slot(a).numel, 350u);
  EXPECT_EQ(layout.slot(b).offset, 384u);  // 350 rounded up to 64
  EXPECT_EQ(layout.slot(c).offset, 448u);
  EXPECT_EQ(layout.total_elems(), 576u);
  EXPECT_EQ(layout.param_elems(), 350u + 3u + 128u);
  EXPECT_EQ(layout.find("ln.bias").id, b);
  EXPECT_EQ(layout.size(), 3u);
}

TEST(FlatLayout, RandomLayoutsNeverOverlap) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(11);
  std::uniform_int_distribution<int> dim(1, 300);
  FlatLayout layout;
  for (int i = 0; i < 200; ++i) layout.add("p" + std::to_string(i), {dim(rng), dim(rng) % 5 + 1});
  std::size_t prev_end = 0;
  for (const auto& s : layout.slots()) {
    EXPECT_EQ(s.offset % kFlatAlignElems, 0u) << s.name;
    EXPECT_GE(s.offset, prev_end) << s.name;
    EXPECT_LT(s.offset - prev_end, kFlatAlignElems) << s.name;
    prev_end = s.end();
  }
  EXPECT_LE(prev_end, layout.total_elems());
}

TEST(FlatLayout, FingerprintSeesNamesShapesAndOrder) {
  FlatLayout a, b, c, d;
  a.add("x", {4, 4});
  a.add("y", {8});
  b.add("x", {4, 4});
  b.add("y", {8});
  c.add("y", {8});
  c.add("x", {4, 4});
  d.add("x", {16});
  d.add("y", {8});
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  EXPECT_NE(a.fingerprint(), c.fingerprint());
  EXPECT_NE(a.fingerprint(), d.fingerprint());
}

TEST(FlatLayout, ShardsCoverTheSpaceAlignedAndBalanced) {
  FlatLayout layout;
  layout.add("w", {1000, 13});
  for (int world = 1; world <= 7; ++world) {
    std::size_t next = 0, min_size = SIZE_MAX, max_size = 0;
    for (int r = 0; r < world; ++r) {
      const auto s = layout.shard(r, world);
      EXPECT_EQ(s.begin, next);
      EXPECT_EQ(s.begin % kFlatAlignElems, 0u);
      next = s.end;
      min_size = std::min(min_size, s.size());
      max_size = std::max(max_size, s.size());
    }
    EXPECT_EQ(next, layout.total_elems()) << "world " << world;
    EXPECT_LE(max_size - min_size, kFlatAlignElems) << "world " << world;
  }
}

TEST(FlatLayout, BadInputNamesTheProblem) {
  FlatLayout layout;
  layout.add("w", {2, 2});
  auto expect_error = [](auto&& fn, const std::string& fragment) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one mentioning '" << fragment << "'";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error([&] { layout.add("w", {3}); }, "registered twice");
  expect_error([&] { layout.add("", {3}); }, "name is empty");
  expect_error([&] { layout.add("v", {}); }, "empty shape");
  expect_error([&] { layout.add("v", {3, 0}); }, "dimension 1 is 0");
  expect_error([&] { layout.add("v", {1 << 30, 1 << 30}); }, "overflows");
  expect_error([&] { (void)layout.find("nope"); }, "no parameter named 'nope'");
  expect_error([&] { (void)layout.shard(2, 2); }, "rank 2");
  expect_error([&] { (void)layout.shard(0, 0); }, "world size 0");
}

}  // namespace
}  // namespace zoro::offload
