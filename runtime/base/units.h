// Byte sizes for people: parse "256MiB", "1.5GiB", "64k", "1000000" and print them back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zoro {

inline constexpr std::size_t kKiB = std::size_t{1} << 10;
inline constexpr std::size_t kMiB = std::size_t{1} << 20;
inline constexpr std::size_t kGiB = std::size_t{1} << 30;

// Accepts an unsigned number (decimals allowed with a unit) followed by an optional unit:
// B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB (case-insensitive; KB and KiB both mean 1024).
// Throws InvalidArgument naming `what` and the text for anything else, including overflow.
std::size_t parse_bytes(std::string_view text, std::string_view what = "size");

// "256.0 MiB", "1.50 GiB", "512 B".
std::string format_bytes(std::size_t bytes);

// Physical memory of this machine, in bytes.
std::size_t physical_memory_bytes();

// Rounds up to a multiple of `alignment` (a power of two).
constexpr std::size_t align_up(std::size_t n, std::size_t alignment) {
  return (n + alignment - 1) & ~(alignment - 1);
}

}  // namespace zoro
