// TokenDataset: splits, windows, stateless sampling (same key, same batch; ranks disjoint),
// and the errors a user's data file can cause.
#include "examples/zoro_train/io/dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "runtime/base/error.h"
#include "tests/support/random.h"
#include "tests/train/io/test_util.h"

namespace zoro::train {
namespace {

using testing::TempDir;

// tokens[i] = i: a window's first input names its start.
TokenDataset identity_dataset(int n, int seq_len) {
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) tokens[static_cast<std::size_t>(i)] = i;
  return TokenDataset(std::move(tokens), n, {.seq_len = seq_len});
}

struct Batch {
  std::vector<std::int32_t> inputs, targets;
};

Batch make(const BatchSource& source, Split split, BatchKey key, int batch, int seq_len) {
  Batch b;
  b.inputs.resize(static_cast<std::size_t>(batch * seq_len));
  b.targets.resize(b.inputs.size());
  source.make_batch(split, key, batch, seq_len, b.inputs, b.targets);
  return b;
}

TEST(TokenDataset, ReadsAFileIntoWindows) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(10);
  const auto bytes = zoro::testing::random_bytes(rng, 3000);
  const TempDir dir;
  testing::write_text(dir.file("data.txt"), std::string(bytes.begin(), bytes.end()));
  const ByteTokenizer tok;
  const int T = 16;
  const auto ds = TokenDataset::from_file(dir.file("data.txt"), tok, {.seq_len = T});
  ASSERT_EQ(ds.token_count(), bytes.size());
  EXPECT_EQ(ds.vocab_size(), 257);
  EXPECT_EQ(ds.split_end(Split::kValidation), 3000u);
  EXPECT_EQ(ds.split_begin(Split::kValidation), 3000u - 150u);  // 5%
  EXPECT_EQ(ds.split_end(Split::kTrain), ds.split_begin(Split::kValidation));
  EXPECT_FALSE(ds.validation_overlaps_train());

  const int B = 4;
  for (const Split split : {Split::kTrain, Split::kValidation}) {
    const Batch b = make(ds, split, {.seed = 7, .step = 3}, B, T);
    for (int r = 0; r < B; ++r) {
      // Find the row's window in the data: inputs then targets, shifted by one.
      const auto* row = b.inputs.data() + r * T;
      bool found = false;
      for (std::size_t s = ds.split_begin(split); s + T + 1 <= ds.split_end(split); ++s) {
        if (std::equal(row, row + T, ds.tokens().begin() + static_cast<std::ptrdiff_t>(s)) &&
            std::equal(b.targets.begin() + r * T, b.targets.begin() + (r + 1) * T,
                       ds.tokens().begin() + static_cast<std::ptrdiff_t>(s) + 1)) {
          found = true;
          break;
        }
      }
      EXPECT_TRUE(found) << to_string(split) << " row " << r << " is not a window of the split";
    }
  }
}

TEST(TokenDataset, SamplingIsAPureFunctionOfTheKey) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(11);
  const std::uint64_t seed = rng();
  const auto ds = identity_dataset(5000, 8);
  const BatchKey key{.seed = seed, .rank = 1, .world_size = 2, .step = 41, .micro_step = 2};
  const Batch a = make(ds, Split::kTrain, key, 6, 8);
  const Batch b = make(ds, Split::kTrain, key, 6, 8);
  EXPECT_EQ(a.inputs, b.inputs);
  EXPECT_EQ(a.targets, b.targets);
  for (std::size_t i = 0; i < a.inputs.size(); ++i) EXPECT_EQ(a.targets[i], a.inputs[i] + 1);
  // Any other coordinate gives another batch.
  for (BatchKey other : {BatchKey{seed + 1, 1, 2, 41, 2}, BatchKey{seed, 0, 2, 41, 2},
                         BatchKey{seed, 1, 2, 42, 2}, BatchKey{seed, 1, 2, 41, 1}}) {
    EXPECT_NE(make(ds, Split::kTrain, other, 6, 8).inputs, a.inputs);
  }
  // A shorter seq_len is served too.
  EXPECT_EQ(make(ds, Split::kTrain, key, 2, 5).inputs.size(), 10u);
}

TEST(TokenDataset, RanksDrawFromDisjointShares) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(12);
  const int T = 4;
  const auto ds = identity_dataset(400, T);
  const std::size_t starts = ds.split_end(Split::kTrain) - T;
  const int world = 3;
  std::vector<std::set<std::int32_t>> seen(world);
  for (int rank = 0; rank < world; ++rank) {
    for (std::int64_t step = 0; step < 20; ++step) {
      const Batch b = make(ds, Split::kTrain,
                           {.seed = rng(), .rank = rank, .world_size = world, .step = step}, 4, T);
      for (int r = 0; r < 4; ++r) {
        const std::int32_t start = b.inputs[static_cast<std::size_t>(r * T)];
        EXPECT_GE(static_cast<std::size_t>(start), starts * rank / world);
        EXPECT_LT(static_cast<std::size_t>(start), starts * (rank + 1) / world);
        seen[static_cast<std::size_t>(rank)].insert(start);
      }
    }
  }
  for (int a = 0; a < world; ++a) {
    for (int b = a + 1; b < world; ++b) {
      for (const auto s : seen[static_cast<std::size_t>(a)]) {
        EXPECT_EQ(seen[static_cast<std::size_t>(b)].count(s), 0u);
      }
    }
  }
}

TEST(TokenDataset, TinyFileValidatesOnItsLastWindow) {
  const auto ds = identity_dataset(12, 8);  // 9 tokens per window: no room for two splits
  EXPECT_TRUE(ds.validation_overlaps_train());
  EXPECT_EQ(ds.split_begin(Split::kValidation), 3u);
  const Batch b = make(ds, Split::kValidation, {}, 1, 8);
  EXPECT_EQ(b.inputs.front(), 3);
  EXPECT_EQ(b.targets.back(), 11);
}

TEST(TokenDataset, ReportsBadInput) {
  const TempDir dir;
  const ByteTokenizer tok;
  ZORO_EXPECT_ERROR(IoError, TokenDataset::from_file(dir.file("nope.txt"), tok, {}),
                    dir.file("nope.txt"));
  testing::write_text(dir.file("empty.txt"), "");
  ZORO_EXPECT_ERROR(IoError, TokenDataset::from_file(dir.file("empty.txt"), tok, {}),
                    "data file '" + dir.file("empty.txt") + "' is empty");
  ZORO_EXPECT_ERROR(IoError, TokenDataset::from_file(dir.file(""), tok, {}), "not a regular file");
  testing::write_text(dir.file("short.txt"), "0123456789");
  ZORO_EXPECT_ERROR(InvalidArgument,
                    TokenDataset::from_file(dir.file("short.txt"), tok, {.seq_len = 10}),
                    "has 10 tokens, fewer than one sequence + 1 (11 for seq_len 10)");
  EXPECT_NO_THROW(TokenDataset::from_file(dir.file("short.txt"), tok, {.seq_len = 9}));

  const auto ds = identity_dataset(20, 8);
  ZORO_EXPECT_ERROR(InvalidArgument,
                    make(ds, Split::kValidation, {.rank = 0, .world_size = 4}, 1, 8),
                    "has 1 window start(s) of 9 tokens, too few for 4 ranks");
  ZORO_EXPECT_ERROR(InvalidArgument, make(ds, Split::kTrain, {.rank = 2, .world_size = 2}, 1, 8),
                    "rank 2 is outside [0, world_size=2)");
  ZORO_EXPECT_ERROR(InvalidArgument, make(ds, Split::kTrain, {}, 1, 9),
                    "seq_len 9 exceeds the dataset's 8");
  std::vector<std::int32_t> small(10);
  ZORO_EXPECT_ERROR(InvalidArgument, ds.make_batch(Split::kTrain, {}, 2, 8, small, small),
                    "needs 16");
  ZORO_EXPECT_ERROR(InvalidArgument, TokenDataset({1, 2, 300}, 257, {.seq_len = 1}),
                    "token 2 is 300, outside [0, 257)");
}

// Any tokenizer: here one that maps each byte to its value modulo 7.
class ModSevenTokenizer final : public Tokenizer {
 public:
  std::vector<std::int32_t> encode(std::string_view text) const override {
    std::vector<std::int32_t> out;
    for (const char c : text) out.push_back(static_cast<unsigned char>(c) % 7);
    return out;
  }
  std::string decode(std::span<const std::int32_t>) const override { return {}; }
  int vocab_size() const override { return 7; }
  std::int32_t eot_id() const override { return 6; }
  std::string name() const override { return "mod7"; }
};

TEST(TokenDataset, UsesTheGivenTokenizer) {
  const TempDir dir;
  testing::write_text(dir.file("d.txt"), std::string(100, 'A'));  // 65 % 7 == 2
  const auto ds = TokenDataset::from_file(dir.file("d.txt"), ModSevenTokenizer(), {.seq_len = 4});
  EXPECT_EQ(ds.vocab_size(), 7);
  const Batch b = make(ds, Split::kTrain, {}, 2, 4);
  for (const auto t : b.inputs) EXPECT_EQ(t, 2);
}

}  // namespace
}  // namespace zoro::train
