// Helpers of the io tests: a scratch directory, file writing, and error assertions.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace zoro::train::testing {

// A fresh directory under the system's temporary directory, removed with its contents.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("zoro_io_test." + std::to_string(::getpid()) + "." + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::string& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  ASSERT_TRUE(out.good()) << path;
}

}  // namespace zoro::train::testing

// Expects `stmt` to throw `Type` whose what() contains `fragment`.
#define ZORO_EXPECT_ERROR(Type, stmt, fragment)                                         \
  do {                                                                                  \
    try {                                                                               \
      stmt;                                                                             \
      ADD_FAILURE() << #stmt " did not throw; expected " #Type " with: " << (fragment); \
    } catch (const Type& zoro_e_) {                                                     \
      EXPECT_NE(std::string(zoro_e_.what()).find(fragment), std::string::npos)          \
          << "message: " << zoro_e_.what() << "\nexpected to contain: " << (fragment);  \
    }                                                                                   \
  } while (0)
