// zoro::Error family: the only exceptions zoro's public API throws.
//
// Contract: every error carries where it was raised (file:line), what failed (the statement
// or condition) and why (the library's own message, or ours), in what(). Callers catch by
// category: InvalidArgument for bad input from the user (config, CLI, files, peers),
// OutOfMemory when a capacity or budget would be exceeded (the message names requested and
// free bytes), BackendError for a failed call into CUDA, cuBLAS, NCCL, MPI or hwloc, and
// IoError for the file system.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace zoro {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Bad input: a config key, a command-line flag, a file's contents, a peer's message.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A capacity, budget or pool would be exceeded.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

// A file could not be read or written, or its contents are not what they claim to be.
class IoError : public Error {
 public:
  using Error::Error;
};

// A call into an external library failed. library() is "CUDA", "cuBLAS", "NCCL", "MPI",
// "hwloc" or "system"; code() is that library's own status code.
class BackendError : public Error {
 public:
  BackendError(const std::string& what, std::string library, long code)
      : Error(what), library_(std::move(library)), code_(code) {}
  const std::string& library() const noexcept { return library_; }
  long code() const noexcept { return code_; }

 private:
  std::string library_;
  long code_;
};

// An operation is not supported on this backend or build (e.g. CUDA asked of a CPU build).
class Unsupported : public Error {
 public:
  using Error::Error;
};

namespace detail {
// "file:line: <what> (<detail>)"; the file is shortened to its path below the repo root.
std::string format_error(const char* file, int line, std::string_view what,
                         std::string_view detail);

[[noreturn]] void throw_invalid_argument(const char* file, int line, std::string_view cond,
                                         const std::string& msg);
[[noreturn]] void throw_backend_error(const char* file, int line, std::string_view stmt,
                                      const char* library, long code, std::string_view msg);
}  // namespace detail

}  // namespace zoro
