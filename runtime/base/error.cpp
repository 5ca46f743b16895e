#include "runtime/base/error.h"

#include <sstream>

namespace zoro::detail {

namespace {
// Paths are shown from the project root down ("runtime/device/host/stream.cpp"), whatever
// directory the build ran in.
std::string_view short_path(const char* file) {
  std::string_view path(file);
  for (std::string_view root : {"/runtime/", "/offload/", "/comm/", "/kernels/", "/examples/",
                                "/bench/", "/tests/", "/python_stub/"}) {
    if (auto pos = path.rfind(root); pos != std::string_view::npos) return path.substr(pos + 1);
  }
  return path;
}
}  // namespace

std::string format_error(const char* file, int line, std::string_view what,
                         std::string_view detail) {
  std::ostringstream out;
  out << short_path(file) << ":" << line << ": ";
  if (!what.empty()) {
    out << what;
    if (!detail.empty()) out << ": ";
  }
  out << detail;
  return out.str();
}

void throw_invalid_argument(const char* file, int line, std::string_view cond,
                            const std::string& msg) {
  throw InvalidArgument(format_error(file, line, cond, msg));
}

void throw_backend_error(const char* file, int line, std::string_view stmt, const char* library,
                         long code, std::string_view msg) {
  std::ostringstream what;
  what << library << " call failed: " << stmt;
  std::ostringstream detail;
  detail << msg << " (code " << code << ")";
  throw BackendError(format_error(file, line, what.str(), detail.str()), library, code);
}

}  // namespace zoro::detail
