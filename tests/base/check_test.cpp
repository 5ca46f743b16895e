// The error family and the ZORO_CHECK macros: type, and every part of the message (where,
// what failed, why).
#include "runtime/base/check.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "runtime/base/error.h"

namespace zoro {
namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ErrorTest, FormatShortensThePathAndJoinsTheParts) {
  EXPECT_EQ(detail::format_error("/home/ci/zoro/runtime/device/host/x.cpp", 12, "what", "why"),
            "runtime/device/host/x.cpp:12: what: why");
  EXPECT_EQ(detail::format_error("/a/b/tests/base/y.cpp", 3, "", "only why"),
            "tests/base/y.cpp:3: only why");
  EXPECT_EQ(detail::format_error("z.cpp", 1, "only what", ""), "z.cpp:1: only what");
}

TEST(ErrorTest, CategoriesDeriveFromError) {
  EXPECT_THROW(throw InvalidArgument("x"), Error);
  EXPECT_THROW(throw OutOfMemory("x"), Error);
  EXPECT_THROW(throw IoError("x"), Error);
  EXPECT_THROW(throw Unsupported("x"), Error);
  EXPECT_THROW(throw BackendError("x", "CUDA", 2), Error);
  EXPECT_THROW(throw Error("x"), std::runtime_error);
  const BackendError error("failed", "NCCL", 5);
  EXPECT_EQ(error.library(), "NCCL");
  EXPECT_EQ(error.code(), 5);
  EXPECT_STREQ(error.what(), "failed");
}

int check_positive(int n) {
  ZORO_CHECK(n > 0, "n=" << n << " must be positive");
  return n;
}

TEST(CheckTest, ThrowsInvalidArgumentWithWhereWhatAndWhy) {
  EXPECT_EQ(check_positive(3), 3);
  try {
    check_positive(-4);
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "tests/base/check_test.cpp:")) << what;
    EXPECT_FALSE(contains(what, "/work/")) << "the path is shortened: " << what;
    EXPECT_TRUE(contains(what, "check failed: n > 0")) << what;
    EXPECT_TRUE(contains(what, "n=-4 must be positive")) << what;
  }
}

TEST(CheckTest, MessageIsNotBuiltWhenTheCheckPasses) {
  int evaluated = 0;
  auto count = [&] { return ++evaluated; };
  ZORO_CHECK(true, "never " << count());
  EXPECT_EQ(evaluated, 0);
}

TEST(CheckTest, TypedChecksAndThrows) {
  EXPECT_THROW(ZORO_CHECK_T(OutOfMemory, 1 > 2, "full"), OutOfMemory);
  EXPECT_THROW(ZORO_CHECK_T(IoError, false, "disk"), IoError);
  try {
    ZORO_THROW(Unsupported, "feature " << 7 << " missing");
  } catch (const Unsupported& e) {
    EXPECT_TRUE(contains(e.what(), "feature 7 missing")) << e.what();
    EXPECT_FALSE(contains(e.what(), "check failed")) << e.what();
  }
}

TEST(CheckTest, AssertIsABugNotBadInput) {
  try {
    ZORO_ASSERT(1 + 1 == 3);
    FAIL() << "no throw";
  } catch (const InvalidArgument&) {
    FAIL() << "an internal invariant is not the caller's bad input";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "1 + 1 == 3")) << e.what();
    EXPECT_TRUE(contains(e.what(), "a bug in zoro")) << e.what();
  }
}

int fails_with(int err) {
  errno = err;
  return -1;
}

TEST(CheckTest, SysCheckThrowsBackendErrorWithErrno) {
  ZORO_SYS_CHECK(0);  // success: nothing
  try {
    ZORO_SYS_CHECK(fails_with(ENOENT));
    FAIL() << "no throw";
  } catch (const BackendError& e) {
    EXPECT_EQ(e.library(), "system");
    EXPECT_EQ(e.code(), ENOENT);
    EXPECT_TRUE(contains(e.what(), "fails_with(ENOENT)")) << e.what();
    EXPECT_TRUE(contains(e.what(), std::strerror(ENOENT))) << e.what();
  }
}

TEST(CheckTest, HwlocCheckAndItsNoThrowVariant) {
  try {
    ZORO_HWLOC_CHECK(fails_with(EINVAL));
    FAIL() << "no throw";
  } catch (const BackendError& e) {
    EXPECT_EQ(e.library(), "hwloc");
    EXPECT_EQ(e.code(), EINVAL);
  }
  EXPECT_NO_THROW(ZORO_HWLOC_CHECK_NOTHROW(fails_with(EINVAL)));
}

TEST(CheckTest, BackendErrorHelperNamesLibraryStatementAndCode) {
  try {
    detail::throw_backend_error("/x/runtime/device/cuda/a.cpp", 9, "cudaMalloc(&p, n)", "CUDA", 2,
                                "out of memory");
  } catch (const BackendError& e) {
    EXPECT_EQ(std::string(e.what()),
              "runtime/device/cuda/a.cpp:9: CUDA call failed: cudaMalloc(&p, n): out of memory "
              "(code 2)");
    EXPECT_EQ(e.library(), "CUDA");
    EXPECT_EQ(e.code(), 2);
  }
}

}  // namespace
}  // namespace zoro
