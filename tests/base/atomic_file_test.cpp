#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "runtime/base/dtype.h"
#include "runtime/base/error.h"
#include "runtime/base/file_util.h"
#include "tests/support/random.h"

namespace zoro {
namespace {

std::filesystem::path scratch_dir(const std::string& name) {
  auto dir =
      std::filesystem::temp_directory_path() / ("zoro-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::size_t count_entries(const std::filesystem::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

TEST(AtomicFileWriter, StreamsThenAppearsWholeOnCommit) {
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(3);
  const auto dir = scratch_dir("atomic");
  const std::string path = (dir / "state.bin").string();
  write_file_atomically(path, "old");
  const auto part1 = testing::random_bytes(rng, 100'000);
  const auto part2 = testing::random_bytes(rng, 12'345);
  {
    AtomicFileWriter writer(path);
    writer.write(part1.data(), part1.size());
    writer.write(part2.data(), part2.size());
    EXPECT_EQ(read_file(path), "old");  // nothing visible before commit
    EXPECT_EQ(writer.bytes_written(), part1.size() + part2.size());
    writer.commit();
  }
  std::string expected(part1.begin(), part1.end());
  expected.append(part2.begin(), part2.end());
  EXPECT_EQ(read_file(path), expected);
  EXPECT_EQ(count_entries(dir), 1u);  // no temporary left behind
  std::filesystem::remove_all(dir);
}

TEST(AtomicFileWriter, AbandonedWriteLeavesTheOldFileAndNoTemporary) {
  const auto dir = scratch_dir("abandon");
  const std::string path = (dir / "ckpt").string();
  write_file_atomically(path, "keep me");
  {
    AtomicFileWriter writer(path);
    writer.write("partial", 7);
  }  // destroyed without commit, as when an exception unwinds a save
  EXPECT_EQ(read_file(path), "keep me");
  EXPECT_EQ(count_entries(dir), 1u);
  std::filesystem::remove_all(dir);
}

TEST(AtomicFileWriter, MissingDirectoryIsAnIoErrorNamingThePath) {
  try {
    AtomicFileWriter writer("/nonexistent-zoro-dir/x/file");
    ADD_FAILURE() << "opened a file in a missing directory";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-zoro-dir/x/file"), std::string::npos)
        << e.what();
  }
}

TEST(Crc32c, KnownVectorsAndIncrementalUse) {
  // The check value of CRC-32C ("123456789") and the iSCSI test pattern of 32 zero bytes.
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  ZORO_TRACE_SEED();
  auto rng = testing::make_rng(5);
  const auto data = testing::random_bytes(rng, 4099);
  for (std::size_t split : {0ul, 1ul, 7ul, 8ul, 1000ul, 4099ul}) {
    const std::uint32_t whole = crc32c(data.data(), data.size());
    const std::uint32_t part =
        crc32c(data.data() + split, data.size() - split, crc32c(data.data(), split));
    EXPECT_EQ(whole, part) << "split at " << split;
  }
}

TEST(DType, ParsesNamesAndRefusesOthers) {
  EXPECT_EQ(parse_dtype("bf16"), DType::kBF16);
  EXPECT_EQ(parse_dtype("float16"), DType::kF16);
  EXPECT_EQ(parse_dtype("fp32"), DType::kF32);
  EXPECT_EQ(size_of(DType::kBF16), 2u);
  EXPECT_EQ(size_of(DType::kF32), 4u);
  try {
    (void)parse_dtype("int8", "--dtype");
    ADD_FAILURE() << "int8 accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--dtype='int8'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace zoro
