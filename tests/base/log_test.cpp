// Log levels: parsing, the threshold, and that a disabled line costs no formatting.
#include "runtime/base/log.h"

#include <gtest/gtest.h>

#include <string>

#include "runtime/base/error.h"

namespace zoro {
namespace {

using log::Level;

TEST(LogTest, ParsesLevelsCaseInsensitively) {
  EXPECT_EQ(log::parse_level("off"), Level::kOff);
  EXPECT_EQ(log::parse_level("none"), Level::kOff);
  EXPECT_EQ(log::parse_level("error"), Level::kError);
  EXPECT_EQ(log::parse_level("WARN"), Level::kWarn);
  EXPECT_EQ(log::parse_level("Warning"), Level::kWarn);
  EXPECT_EQ(log::parse_level("info"), Level::kInfo);
  EXPECT_EQ(log::parse_level("DeBuG"), Level::kDebug);
}

TEST(LogTest, RefusesUnknownLevelsNamingThem) {
  for (const char* bad : {"", "verbose", "warn ", "3"}) {
    try {
      (void)log::parse_level(bad);
      FAIL() << "'" << bad << "' accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos)
          << e.what();
    }
  }
}

// Restores the threshold the process had, whatever the test did.
class ThresholdGuard {
 public:
  ThresholdGuard() : saved_(log::threshold()) {}
  ~ThresholdGuard() { log::set_threshold(saved_); }
  ThresholdGuard(const ThresholdGuard&) = delete;
  ThresholdGuard& operator=(const ThresholdGuard&) = delete;

 private:
  Level saved_;
};

TEST(LogTest, ThresholdGatesLevels) {
  ThresholdGuard guard;
  log::set_threshold(Level::kWarn);
  EXPECT_EQ(log::threshold(), Level::kWarn);
  EXPECT_TRUE(log::enabled(Level::kError));
  EXPECT_TRUE(log::enabled(Level::kWarn));
  EXPECT_FALSE(log::enabled(Level::kInfo));
  log::set_threshold(Level::kOff);
  EXPECT_FALSE(log::enabled(Level::kError));
  log::set_threshold(Level::kDebug);
  EXPECT_TRUE(log::enabled(Level::kDebug));
}

TEST(LogTest, DisabledLineDoesNotEvaluateItsArguments) {
  ThresholdGuard guard;
  log::set_threshold(Level::kError);
  int evaluated = 0;
  auto count = [&] { return ++evaluated; };
  ZORO_LOG(kDebug) << "never " << count();
  EXPECT_EQ(evaluated, 0);
  ::testing::internal::CaptureStderr();
  ZORO_LOG(kError) << "logged " << count();
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(evaluated, 1);
  EXPECT_NE(out.find("logged 1"), std::string::npos) << out;
  EXPECT_NE(out.find("log_test.cpp:"), std::string::npos) << out;
  EXPECT_EQ(out.back(), '\n');
}

}  // namespace
}  // namespace zoro
