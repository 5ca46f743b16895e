// The learning-rate schedule, the JSON log and the stopping rules.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <numbers>

#include "examples/zoro_train/io/json_log.h"
#include "examples/zoro_train/io/lr_schedule.h"
#include "examples/zoro_train/io/stop_rule.h"
#include "runtime/base/error.h"
#include "tests/support/random.h"
#include "tests/train/io/test_util.h"

namespace zoro::train {
namespace {

TEST(LrSchedule, WarmsUpLinearlyThenDecaysByCosine) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(50);
  std::uniform_real_distribution<double> u(1e-4, 1e-2);
  const LrSchedule s{.lr = u(rng),
                     .min_lr = 0,
                     .warmup_steps = static_cast<std::int64_t>(1 + rng() % 20),
                     .total_steps = 0};
  LrSchedule sched = s;
  sched.min_lr = sched.lr * 0.1;
  sched.total_steps = sched.warmup_steps + 1 + static_cast<std::int64_t>(rng() % 200);
  for (std::int64_t k = 0; k < sched.warmup_steps; ++k) {
    EXPECT_DOUBLE_EQ(lr_at(sched, k), sched.lr * (k + 1) / sched.warmup_steps);
  }
  EXPECT_DOUBLE_EQ(lr_at(sched, sched.warmup_steps), sched.lr);  // the peak
  const std::int64_t decay = sched.total_steps - sched.warmup_steps;
  double previous = sched.lr;
  for (std::int64_t k = sched.warmup_steps + 1; k < sched.total_steps; ++k) {
    const double lr = lr_at(sched, k);
    EXPECT_LE(lr, previous);  // monotone
    EXPECT_GE(lr, sched.min_lr);
    const double p = static_cast<double>(k - sched.warmup_steps) / static_cast<double>(decay);
    EXPECT_NEAR(
        lr, sched.min_lr + (sched.lr - sched.min_lr) * 0.5 * (1 + std::cos(std::numbers::pi * p)),
        1e-15);
    previous = lr;
  }
  // Halfway through the decay the rate is the mean of the two ends.
  if (decay % 2 == 0) {
    EXPECT_NEAR(lr_at(sched, sched.warmup_steps + decay / 2), (sched.lr + sched.min_lr) / 2, 1e-15);
  }
  EXPECT_DOUBLE_EQ(lr_at(sched, sched.total_steps), sched.min_lr);
  EXPECT_DOUBLE_EQ(lr_at(sched, sched.total_steps + 1000), sched.min_lr);
  // No warm-up: the first step runs at the peak.
  EXPECT_DOUBLE_EQ(lr_at({.lr = 0.5, .min_lr = 0.1, .warmup_steps = 0, .total_steps = 10}, 0), 0.5);
  ZORO_EXPECT_ERROR(InvalidArgument, lr_at(sched, -1), "step -1");
  ZORO_EXPECT_ERROR(InvalidArgument, lr_at({.lr = 0.1, .min_lr = 0.2}, 0), "min_lr 0.2");
  ZORO_EXPECT_ERROR(InvalidArgument, lr_at({.lr = 0}, 0), "lr 0 must be positive");
  ZORO_EXPECT_ERROR(InvalidArgument, lr_at({.lr = 1, .total_steps = 0}, 0), "total_steps 0");
}

std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(JsonLogWriter, WritesOneObjectPerLineAndAppendsOnResume) {
  const testing::TempDir dir;
  const std::string path = dir.file("log.jsonl");
  {
    JsonLogWriter log(path, /*append=*/false);
    log.write({{"step", 1}, {"loss", 2.5}});
    // Visible before the writer closes: nothing is buffered in the process.
    ASSERT_EQ(read_lines(path).size(), 1u);
    log.write({{"step", 2}, {"loss", 2.25}, {"note", "line\nbreak"}});
  }
  {
    JsonLogWriter log(path, /*append=*/true);  // a resumed run keeps the history
    log.write({{"step", 3}});
  }
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_EQ(lines[1]["note"], "line\nbreak");
  EXPECT_EQ(lines[2]["step"], 3);
  {
    JsonLogWriter log(path, /*append=*/false);  // a fresh run starts afresh
    log.write({{"step", 1}});
  }
  EXPECT_EQ(read_lines(path).size(), 1u);

  ZORO_EXPECT_ERROR(IoError, JsonLogWriter(dir.file("missing/dir/log.jsonl"), true),
                    "cannot open the JSON log '" + dir.file("missing/dir/log.jsonl") + "'");
  JsonLogWriter log(path, true);
  ZORO_EXPECT_ERROR(InvalidArgument, log.write(nlohmann::json::array({1, 2})),
                    "a record must be an object");
  ZORO_EXPECT_ERROR(InvalidArgument, log.write({{"bad", std::string("\xFF")}}), "log.jsonl");
  JsonLogWriter full("/dev/full", true);
  ZORO_EXPECT_ERROR(IoError, full.write({{"step", 1}}), "cannot write the JSON log '/dev/full'");
}

TEST(StopRule, BudgetStopsWhenSpent) {
  const StopRule rule{.budget_hours = 2.0};
  EXPECT_FALSE(should_stop(rule, 1.99, {}).has_value());
  const auto why = should_stop(rule, 2.0, {});
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("compute budget of 2 h is spent"), std::string::npos) << *why;
  EXPECT_FALSE(should_stop({}, 1e6, {}).has_value());  // no budget
}

TEST(StopRule, StopsWhenEvalGainPerHourFallsBelowThreshold) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(51);
  std::uniform_real_distribution<double> u(0.01, 1.0);
  const double threshold = u(rng);
  const StopRule rule{.min_gain_per_hour = threshold, .window = 3};
  // Loss falls fast (2x threshold per hour) for 5 evals, then slowly (threshold / 2).
  std::vector<EvalPoint> evals;
  double loss = 5, hours = 0;
  for (int i = 0; i < 10; ++i) {
    evals.push_back({.step = 100 * i, .hours = hours, .loss = loss});
    const double dt = u(rng);
    hours += dt;
    loss -= (i < 5 ? 2 * threshold : threshold / 2) * dt;
  }
  // Over the window ending at eval k, the gain is 2x threshold while k <= 4: no stop; it is
  // exactly threshold / 2 once the window lies in the slow part (k >= 7).
  for (std::size_t k = 0; k < evals.size(); ++k) {
    const auto why = should_stop(rule, evals[k].hours, std::span(evals).first(k + 1));
    if (k <= 5) {
      EXPECT_FALSE(why.has_value()) << k;
    } else if (k >= 7) {
      ASSERT_TRUE(why.has_value()) << k;
      EXPECT_NE(why->find("over the last 3 evals"), std::string::npos) << *why;
      EXPECT_NE(why->find("at step " + std::to_string(evals[k].step)), std::string::npos) << *why;
    }
  }
  // A rising loss is no gain at all.
  const std::vector<EvalPoint> rising = {{0, 0.0, 1.0}, {10, 1.0, 1.5}};
  EXPECT_TRUE(should_stop({.min_gain_per_hour = 1e-9, .window = 2}, 1.0, rising).has_value());
  // No elapsed time between the window's ends: no decision.
  const std::vector<EvalPoint> instant = {{0, 1.0, 2.0}, {10, 1.0, 2.0}};
  EXPECT_FALSE(should_stop({.min_gain_per_hour = 1, .window = 2}, 1.0, instant).has_value());
  ZORO_EXPECT_ERROR(InvalidArgument, should_stop({.window = 1}, 0, {}), "window 1");
  ZORO_EXPECT_ERROR(InvalidArgument, should_stop({.budget_hours = -1}, 0, {}), "budget_hours -1");
}

}  // namespace
}  // namespace zoro::train
