#include "runtime/base/units.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "runtime/base/check.h"

namespace zoro {

std::size_t parse_bytes(std::string_view text, std::string_view what) {
  auto fail = [&](const char* why) {
    ZORO_THROW(InvalidArgument,
               what << "='" << text << "' " << why << " (expected e.g. 512MiB, 1.5GiB, 4096)");
  };
  std::string_view s = text;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  if (s.empty()) fail("is empty");
  std::size_t num_end = 0;
  while (num_end < s.size() &&
         (std::isdigit(static_cast<unsigned char>(s[num_end])) || s[num_end] == '.')) {
    ++num_end;
  }
  if (num_end == 0) fail("does not start with a number");
  std::string_view number = s.substr(0, num_end);
  std::string unit(s.substr(num_end));
  unit.erase(
      std::remove_if(unit.begin(), unit.end(), [](unsigned char c) { return std::isspace(c); }),
      unit.end());
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  double scale = 1;
  if (unit.empty() || unit == "b") {
    scale = 1;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    scale = static_cast<double>(kKiB);
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    scale = static_cast<double>(kMiB);
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    scale = static_cast<double>(kGiB);
  } else if (unit == "t" || unit == "tb" || unit == "tib") {
    scale = static_cast<double>(kGiB) * 1024.0;
  } else {
    fail("has an unknown unit");
  }
  if (number.find('.') == std::string_view::npos) {
    std::uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
    if (ec != std::errc() || ptr != number.data() + number.size()) fail("is not a number");
    const auto mult = static_cast<std::uint64_t>(scale);
    if (value > std::numeric_limits<std::size_t>::max() / mult) fail("overflows 64 bits");
    return static_cast<std::size_t>(value * mult);
  }
  if (unit.empty() || unit == "b") fail("has a fractional number of bytes");
  if (std::count(number.begin(), number.end(), '.') > 1) fail("is not a number");
  const double value = std::strtod(std::string(number).c_str(), nullptr) * scale;
  if (!std::isfinite(value) || value >= 1.8e19) fail("overflows 64 bits");
  return static_cast<std::size_t>(std::llround(value));
}

std::string format_bytes(std::size_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (bytes >= kGiB) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / static_cast<double>(kGiB));
  } else if (bytes >= kMiB) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / static_cast<double>(kMiB));
  } else if (bytes >= kKiB) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / static_cast<double>(kKiB));
  } else {
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  }
  return buf;
}

std::size_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGESIZE);
  ZORO_SYS_CHECK(pages);
  ZORO_SYS_CHECK(page_size);
  return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page_size);
}

}  // namespace zoro
