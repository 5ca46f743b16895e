#include "runtime/base/log.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/base/error.h"

namespace zoro::log {

namespace {
constexpr int kUnset = -1;
std::atomic<int> g_threshold{kUnset};

const char* level_name(Level level) {
  switch (level) {
    case Level::kError:
      return "E";
    case Level::kWarn:
      return "W";
    case Level::kInfo:
      return "I";
    case Level::kDebug:
      return "D";
    case Level::kOff:
      return "-";
  }
  return "?";
}
}  // namespace

Level parse_level(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "off" || lower == "none") return Level::kOff;
  if (lower == "error") return Level::kError;
  if (lower == "warn" || lower == "warning") return Level::kWarn;
  if (lower == "info") return Level::kInfo;
  if (lower == "debug") return Level::kDebug;
  throw InvalidArgument("ZORO_LOG='" + std::string(text) +
                        "' is not one of off, error, warn, info, debug");
}

Level threshold() {
  int value = g_threshold.load(std::memory_order_relaxed);
  if (value != kUnset) return static_cast<Level>(value);
  Level level = Level::kWarn;
  if (const char* env = std::getenv("ZORO_LOG"); env != nullptr && *env != '\0') {
    try {
      level = parse_level(env);
    } catch (const InvalidArgument& e) {
      std::fprintf(stderr, "[zoro W] %s; using warn\n", e.what());
    }
  }
  int expected = kUnset;
  g_threshold.compare_exchange_strong(expected, static_cast<int>(level));
  return static_cast<Level>(g_threshold.load(std::memory_order_relaxed));
}

void set_threshold(Level level) { g_threshold.store(static_cast<int>(level)); }

Line::Line(Level level, const char* file, int line) : level_(level) {
  std::string_view path(file);
  if (auto slash = path.rfind('/'); slash != std::string_view::npos) path = path.substr(slash + 1);
  stream_ << "[zoro " << level_name(level) << " " << path << ":" << line << "] ";
}

Line::~Line() {
  stream_ << '\n';
  const std::string text = stream_.str();
  // One fwrite per line: POSIX stdio locks the stream per call, so lines never interleave.
  std::fwrite(text.data(), 1, text.size(), stderr);
  (void)level_;
}

}  // namespace zoro::log
