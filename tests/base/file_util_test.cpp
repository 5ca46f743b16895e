// Atomic file writes and whole-file reads, including the failures (IoError naming the path).
#include "runtime/base/file_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "runtime/base/error.h"

namespace zoro {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("zoro_base_test_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(FileUtilTest, WritesAndReadsBack) {
  const std::string file = path("a.txt");
  write_file_atomically(file, "hello\n");
  EXPECT_EQ(read_file(file), "hello\n");
  write_file_atomically(file, "replaced");
  EXPECT_EQ(read_file(file), "replaced");
  write_file_atomically(file, "");
  EXPECT_EQ(read_file(file), "");
}

TEST_F(FileUtilTest, KeepsBinaryContentsWhole) {
  std::string binary(1 << 20, '\0');
  for (std::size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<char>(i * 131 % 251);
  const std::string file = path("blob.bin");
  write_file_atomically(file, binary);
  EXPECT_EQ(read_file(file), binary);
}

TEST_F(FileUtilTest, LeavesNoTemporaryFiles) {
  write_file_atomically(path("one"), "1");
  write_file_atomically(path("one"), "2");
  write_file_atomically(path("two"), "3");
  std::size_t entries = 0;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    ++entries;
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
  }
  EXPECT_EQ(entries, 2u);
}

TEST_F(FileUtilTest, MissingDirectoryIsAnIoErrorNamingThePath) {
  const std::string file = path("no/such/dir/out.json");
  try {
    write_file_atomically(file, "x");
    FAIL() << "no throw";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(path("no/such/dir/out.json")), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(path("no")));
}

TEST_F(FileUtilTest, ReadingAMissingFileIsAnIoErrorNamingThePath) {
  const std::string file = path("absent.txt");
  try {
    (void)read_file(file);
    FAIL() << "no throw";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace zoro
