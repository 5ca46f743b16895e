// parse_bytes / format_bytes: every unit, whitespace, decimals, and every way to be wrong.
#include "runtime/base/units.h"

#include <gtest/gtest.h>

#include <limits>
#include <ostream>
#include <string>

#include "runtime/base/error.h"

namespace zoro {
namespace {

TEST(ParseBytesTest, AcceptsEveryUnit) {
  EXPECT_EQ(parse_bytes("0"), 0u);
  EXPECT_EQ(parse_bytes("1000000"), 1000000u);
  EXPECT_EQ(parse_bytes("512B"), 512u);
  EXPECT_EQ(parse_bytes("64k"), 64 * kKiB);
  EXPECT_EQ(parse_bytes("64KB"), 64 * kKiB);
  EXPECT_EQ(parse_bytes("64KiB"), 64 * kKiB);
  EXPECT_EQ(parse_bytes("256MiB"), 256 * kMiB);
  EXPECT_EQ(parse_bytes("256mb"), 256 * kMiB);
  EXPECT_EQ(parse_bytes("3G"), 3 * kGiB);
  EXPECT_EQ(parse_bytes("2TiB"), 2 * 1024 * kGiB);
  EXPECT_EQ(parse_bytes("1.5GiB"), kGiB + kGiB / 2);
  EXPECT_EQ(parse_bytes("0.5k"), 512u);
  EXPECT_EQ(parse_bytes("  7 MiB  "), 7 * kMiB);
  EXPECT_EQ(parse_bytes("18446744073709551615"), std::numeric_limits<std::size_t>::max());
  EXPECT_EQ(parse_bytes("17179869183GiB"), 17179869183ull * kGiB);
}

struct BadBytes {
  const char* text;
  const char* problem;
};

// Shown by gtest (and ctest's test list) instead of the struct's raw bytes.
void PrintTo(const BadBytes& bad, std::ostream* out) { *out << "'" << bad.text << "'"; }

class ParseBytesBadInputTest : public ::testing::TestWithParam<BadBytes> {};

TEST_P(ParseBytesBadInputTest, IsRefusedNamingWhatAndWhy) {
  const BadBytes& bad = GetParam();
  try {
    (void)parse_bytes(bad.text, "pool_size");
    FAIL() << "'" << bad.text << "' was accepted";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(std::string("pool_size='") + bad.text + "'"), std::string::npos) << what;
    EXPECT_NE(what.find(bad.problem), std::string::npos) << what << "\n  lacks: " << bad.problem;
  }
}

INSTANTIATE_TEST_SUITE_P(Texts, ParseBytesBadInputTest,
                         ::testing::Values(BadBytes{"", "is empty"}, BadBytes{"   ", "is empty"},
                                           BadBytes{"MiB", "does not start with a number"},
                                           BadBytes{"-5", "does not start with a number"},
                                           BadBytes{"12XB", "unknown unit"},
                                           BadBytes{"5 PiB", "unknown unit"},
                                           BadBytes{"1.5", "fractional number of bytes"},
                                           BadBytes{"1.5B", "fractional number of bytes"},
                                           BadBytes{"1.2.3M", "is not a number"},
                                           BadBytes{"18446744073709551616", "is not a number"},
                                           BadBytes{"17179869184GiB", "overflows 64 bits"},
                                           BadBytes{"16777216TiB", "overflows 64 bits"},
                                           BadBytes{"99999999999.5TiB", "overflows 64 bits"}),
                         [](const ::testing::TestParamInfo<BadBytes>& param_info) {
                           return "text" + std::to_string(param_info.index);
                         });

TEST(FormatBytesTest, PicksTheLargestWholeUnit) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1024), "1.0 KiB");
  EXPECT_EQ(format_bytes(256 * kMiB), "256.0 MiB");
  EXPECT_EQ(format_bytes(kGiB + kGiB / 2), "1.50 GiB");
}

TEST(FormatBytesTest, RoundTripsThroughParse) {
  for (std::size_t bytes : {std::size_t{512}, 3 * kKiB, 17 * kMiB, 5 * kGiB}) {
    std::string text = format_bytes(bytes);
    EXPECT_EQ(parse_bytes(text), bytes) << text;
  }
}

TEST(UnitsTest, PhysicalMemoryAndAlignment) {
  EXPECT_GT(physical_memory_bytes(), 64 * kMiB);
  static_assert(align_up(0, 256) == 0);
  static_assert(align_up(1, 256) == 256);
  static_assert(align_up(256, 256) == 256);
  static_assert(align_up(257, 256) == 512);
}

}  // namespace
}  // namespace zoro
