// The ZORO_CHECK macro family. One family for all of zoro; the library-specific ones
// (ZORO_CUDA_CHECK, ZORO_CUBLAS_CHECK, ZORO_NCCL_CHECK, ZORO_MPI_CHECK) live in the headers
// of the code that may include those libraries (runtime/base/cuda_check.h, ...) and expand
// to the same detail::throw_backend_error.
//
//   ZORO_CHECK(cond, msg)          throws InvalidArgument("cond failed: msg") — bad input
//   ZORO_CHECK_T(Type, cond, msg)  the same with another zoro::Error type
//   ZORO_ASSERT(cond)              an internal invariant: throws zoro::Error ("bug")
//   ZORO_HWLOC_CHECK(stmt)         hwloc's int calls: -1 (errno set) throws BackendError
//   ZORO_SYS_CHECK(stmt)           POSIX calls returning -1 with errno
//   *_NOTHROW variants             log instead of throwing: for destructors and callbacks
//
// `msg` is a stream expression: ZORO_CHECK(n > 0, "n=" << n << " must be positive").
#pragma once

#include <cerrno>
#include <cstring>
#include <sstream>

#include "runtime/base/error.h"
#include "runtime/base/log.h"

#define ZORO_STRINGIFY_IMPL(x) #x
#define ZORO_STRINGIFY(x) ZORO_STRINGIFY_IMPL(x)

#define ZORO_CHECK_T(Type, cond, msg)                                                     \
  do {                                                                                    \
    if (!(cond)) [[unlikely]] {                                                           \
      std::ostringstream zoro_msg_;                                                       \
      zoro_msg_ << msg;                                                                   \
      throw Type(::zoro::detail::format_error(__FILE__, __LINE__, "check failed: " #cond, \
                                              zoro_msg_.str()));                          \
    }                                                                                     \
  } while (0)

#define ZORO_CHECK(cond, msg) ZORO_CHECK_T(::zoro::InvalidArgument, cond, msg)

#define ZORO_ASSERT(cond) \
  ZORO_CHECK_T(::zoro::Error, cond, "internal invariant violated (a bug in zoro)")

// Throw a typed error with a formatted message, unconditionally.
#define ZORO_THROW(Type, msg)                                                          \
  do {                                                                                 \
    std::ostringstream zoro_msg_;                                                      \
    zoro_msg_ << msg;                                                                  \
    throw Type(::zoro::detail::format_error(__FILE__, __LINE__, "", zoro_msg_.str())); \
  } while (0)

#define ZORO_SYS_CHECK(stmt)                                                                \
  do {                                                                                      \
    if ((stmt) == -1) [[unlikely]] {                                                        \
      const int zoro_errno_ = errno;                                                        \
      ::zoro::detail::throw_backend_error(__FILE__, __LINE__, #stmt, "system", zoro_errno_, \
                                          std::strerror(zoro_errno_));                      \
    }                                                                                       \
  } while (0)

// hwloc's int-returning calls report failure as -1 with errno.
#define ZORO_HWLOC_CHECK(stmt)                                                             \
  do {                                                                                     \
    if ((stmt) < 0) [[unlikely]] {                                                         \
      const int zoro_errno_ = errno;                                                       \
      ::zoro::detail::throw_backend_error(__FILE__, __LINE__, #stmt, "hwloc", zoro_errno_, \
                                          std::strerror(zoro_errno_));                     \
    }                                                                                      \
  } while (0)

#define ZORO_HWLOC_CHECK_NOTHROW(stmt)                                   \
  do {                                                                   \
    if ((stmt) < 0) [[unlikely]] {                                       \
      ZORO_LOG(kWarn) << __FILE__ << ":" << __LINE__                     \
                      << ": " #stmt " failed: " << std::strerror(errno); \
    }                                                                    \
  } while (0)
