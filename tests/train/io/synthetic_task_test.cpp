// The embedded task: well-formed problems, the held-out split, stateless sampling, the answer
// mask and the accuracy metric.
#include "examples/zoro_train/io/synthetic_task.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "runtime/base/error.h"
#include "tests/support/random.h"
#include "tests/train/io/test_util.h"

namespace zoro::train {
namespace {

struct Batch {
  std::vector<std::int32_t> inputs, targets;
};

Batch make(const SyntheticTask& task, Split split, BatchKey key, int batch, int seq_len) {
  Batch b;
  b.inputs.resize(static_cast<std::size_t>(batch * seq_len));
  b.targets.resize(b.inputs.size());
  task.make_batch(split, key, batch, seq_len, b.inputs, b.targets);
  return b;
}

// Row r's window (T + 1 bytes) as text.
std::string window_text(const Batch& b, int r, int T) {
  std::string s;
  for (int t = 0; t < T; ++t) s.push_back(static_cast<char>(b.inputs[r * T + t]));
  s.push_back(static_cast<char>(b.targets[r * T + T - 1]));
  return s;
}

TEST(SyntheticTask, RowsAreWellFormedReversedSums) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(20);
  for (const int digits : {1, 2, 3})
    for (const bool fixed : {true, false}) {
      const SyntheticTask task({.max_digits = digits, .fixed_width = fixed});
      for (const Split split : {Split::kTrain, Split::kValidation}) {
        const int B = 8, T = 40;
        const Batch b = make(task, split, {.seed = rng(), .step = 5}, B, T);
        for (std::size_t i = 0; i + 1 < b.inputs.size(); ++i) {
          if ((i + 1) % T != 0) {
            EXPECT_EQ(b.targets[i], b.inputs[i + 1]);
          }
        }
        for (int r = 0; r < B; ++r) {
          const std::string w = window_text(b, r, T);
          std::size_t pos = 0;
          int lines = 0;
          for (std::size_t nl; (nl = w.find('\n', pos)) != std::string::npos; pos = nl + 1) {
            const std::string line = w.substr(pos, nl - pos);
            const auto plus = line.find('+');
            const auto eq = line.find('=');
            ASSERT_TRUE(plus != std::string::npos && eq != std::string::npos && plus < eq) << line;
            const auto a = std::stoull(line.substr(0, plus));
            const auto c = std::stoull(line.substr(plus + 1, eq - plus - 1));
            std::string sum = line.substr(eq + 1);
            std::reverse(sum.begin(), sum.end());
            EXPECT_EQ(std::stoull(sum), a + c) << line;
            const auto limit = static_cast<std::uint64_t>(std::pow(10, digits));
            EXPECT_LT(a, limit);
            EXPECT_LT(c, limit);
            EXPECT_EQ(SyntheticTask::held_out(a, c), split == Split::kValidation) << line;
            EXPECT_EQ(SyntheticTask::problem_line(a, c, task.width()), line + "\n");
            ++lines;
          }
          EXPECT_GE(lines, 1);
        }
      }
    }
}

TEST(SyntheticTask, SamplingIsAPureFunctionOfTheKey) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(21);
  const SyntheticTask task;
  const std::uint64_t seed = rng();
  const BatchKey key{.seed = seed, .rank = 0, .world_size = 2, .step = 9, .micro_step = 1};
  const Batch a = make(task, Split::kTrain, key, 4, 32);
  EXPECT_EQ(make(task, Split::kTrain, key, 4, 32).inputs, a.inputs);
  for (BatchKey other : {BatchKey{seed, 1, 2, 9, 1}, BatchKey{seed, 0, 2, 10, 1},
                         BatchKey{seed, 0, 2, 9, 0}, BatchKey{seed ^ 1, 0, 2, 9, 1}}) {
    EXPECT_NE(make(task, Split::kTrain, other, 4, 32).inputs, a.inputs);
  }
  EXPECT_NE(make(task, Split::kValidation, key, 4, 32).inputs, a.inputs);
  EXPECT_EQ(task.vocab_size(), 257);
}

TEST(SyntheticTask, AnswerMaskCoversAnswersAndTheirNewline) {
  // Window "12+34=64\n5+5=01\n7+" ; targets are the window shifted by one.
  const std::string w = "12+34=64\n5+5=01\n7+";
  const int T = static_cast<int>(w.size()) - 1;
  std::vector<std::int32_t> in(w.begin(), w.end() - 1), tg(w.begin() + 1, w.end());
  const auto mask = SyntheticTask::answer_mask(in, tg, 1, T);
  std::string marked;
  for (int t = 0; t < T; ++t) marked.push_back(mask[t] ? tg[t] == '\n' ? 'N' : tg[t] : '.');
  EXPECT_EQ(marked, ".....64N....01N..");
}

TEST(SyntheticTask, ScoresCharactersAndWholeAnswers) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(22);
  const SyntheticTask task({.max_digits = 3});
  const int B = 6, T = 48;
  const Batch b = make(task, Split::kValidation, {.seed = rng()}, B, T);
  const auto mask = SyntheticTask::answer_mask(b.inputs, b.targets, B, T);

  TaskScore perfect = SyntheticTask::score(b.inputs, b.targets, b.targets, B, T);
  const auto answer_chars = std::count(mask.begin(), mask.end(), 1);
  EXPECT_EQ(perfect.answer_chars, answer_chars);
  EXPECT_EQ(perfect.correct_chars, answer_chars);
  EXPECT_GT(perfect.answers, B);  // several complete answers per row
  EXPECT_EQ(perfect.correct_answers, perfect.answers);
  EXPECT_DOUBLE_EQ(perfect.char_accuracy(), 1.0);
  EXPECT_DOUBLE_EQ(perfect.exact_accuracy(), 1.0);

  // Wrong predictions outside answers do not count; one wrong answer char costs one char and
  // (when its answer is complete in the window) one answer.
  std::vector<std::int32_t> pred = b.targets;
  for (std::size_t i = 0; i < pred.size(); ++i) {
    if (!mask[i]) pred[i] = 'x';
  }
  std::vector<std::size_t> answer_positions;
  for (std::size_t i = 0; i < mask.size(); ++i) {
    if (mask[i]) answer_positions.push_back(i);
  }
  const std::size_t wrong = answer_positions[rng() % answer_positions.size()];
  pred[wrong] = 'x';
  // Is the answer holding `wrong` complete (a '\n' target before the row ends)?
  bool complete = false;
  for (std::size_t i = wrong; i < (wrong / T + 1) * T && mask[i]; ++i) {
    if (b.targets[i] == '\n') complete = true;
  }
  const TaskScore s = SyntheticTask::score(b.inputs, b.targets, pred, B, T);
  EXPECT_EQ(s.correct_chars, answer_chars - 1);
  EXPECT_EQ(s.answers, perfect.answers);
  EXPECT_EQ(s.correct_answers, perfect.answers - (complete ? 1 : 0));

  TaskScore sum = s;
  sum += perfect;
  EXPECT_EQ(sum.answer_chars, 2 * answer_chars);
  EXPECT_EQ(sum.correct_answers, s.correct_answers + perfect.answers);
  EXPECT_EQ(TaskScore{}.char_accuracy(), 0.0);
}

TEST(SyntheticTask, PromptsAreHeldOutProblems) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(23);
  const SyntheticTask task;
  const auto seed = rng();
  const auto prompts = task.sample_prompts(5, seed);
  ASSERT_EQ(prompts.size(), 5u);
  EXPECT_EQ(task.sample_prompts(5, seed), prompts);
  for (const std::string& p : prompts) {
    const auto plus = p.find('+');
    ASSERT_NE(plus, std::string::npos);
    ASSERT_EQ(p.back(), '=');
    const auto a = std::stoull(p.substr(0, plus));
    const auto c = std::stoull(p.substr(plus + 1, p.size() - plus - 2));
    EXPECT_TRUE(SyntheticTask::held_out(a, c)) << p;
    const auto completion = SyntheticTask::expected_completion(p, task.width());
    ASSERT_TRUE(completion.has_value());
    EXPECT_EQ(p + *completion, SyntheticTask::problem_line(a, c, task.width()));
  }
  // Note [Fixed width]: every line of the default task has the same length.
  EXPECT_EQ(task.width(), 2);
  EXPECT_EQ(SyntheticTask::problem_line(7, 85, 2), "07+85=290\n");
  EXPECT_EQ(SyntheticTask::expected_completion("07+85=", 2), "290\n");
  EXPECT_FALSE(SyntheticTask::expected_completion("7+85=", 2).has_value());
  EXPECT_EQ(SyntheticTask::expected_completion("47+85="), "231\n");
  EXPECT_EQ(SyntheticTask::expected_completion("0+0="), "0\n");
  for (const char* bad : {"47+85", "+85=", "47+=", "4a+1=", "", "=", "1+2+3="}) {
    EXPECT_FALSE(SyntheticTask::expected_completion(bad).has_value()) << bad;
  }
  ZORO_EXPECT_ERROR(InvalidArgument, SyntheticTask({.max_digits = 0}), "max_digits 0");
}

}  // namespace
}  // namespace zoro::train
