// Logging gated by the ZORO_LOG environment variable: error, warn (the default), info,
// debug or off. Read once, at the first log call. Thread-safe: each line is written whole.
//
//   ZORO_LOG(kInfo) << "pinned " << bytes << " bytes on node " << node;
#pragma once

#include <sstream>
#include <string_view>

namespace zoro::log {

enum class Level : int { kOff = 0, kError = 1, kWarn = 2, kInfo = 3, kDebug = 4 };

// The level in force (parsed from ZORO_LOG once; an unknown value warns and keeps kWarn).
Level threshold();
// Override (tests, the trainer's --verbose); thread-safe.
void set_threshold(Level level);
// Parses "error", "warn", "info", "debug", "off" (case-insensitive); throws InvalidArgument.
Level parse_level(std::string_view text);
inline bool enabled(Level level) {
  return static_cast<int>(level) <= static_cast<int>(threshold());
}

// One log line, emitted (to stderr) when destroyed.
class Line {
 public:
  Line(Level level, const char* file, int line);
  ~Line();
  Line(const Line&) = delete;
  Line& operator=(const Line&) = delete;
  template <class T>
  Line& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  Level level_;
  std::ostringstream stream_;
};

}  // namespace zoro::log

#define ZORO_LOG(level)                                   \
  if (!::zoro::log::enabled(::zoro::log::Level::level)) { \
  } else                                                  \
    ::zoro::log::Line(::zoro::log::Level::level, __FILE__, __LINE__)
