#include "tests/support/random.h"

#include <cstdlib>
#include <string>

namespace zoro::testing {

std::uint64_t test_seed() {
  static const std::uint64_t seed = [] {
    if (const char* env = std::getenv("ZORO_TEST_SEED"); env != nullptr && *env != '\0') {
      return static_cast<std::uint64_t>(std::stoull(env));
    }
    return (static_cast<std::uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  }();
  return seed;
}

std::mt19937_64 make_rng(std::uint64_t stream) {
  std::seed_seq seq{static_cast<std::uint32_t>(test_seed()),
                    static_cast<std::uint32_t>(test_seed() >> 32),
                    static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)};
  return std::mt19937_64(seq);
}

std::vector<float> random_floats(std::mt19937_64& rng, std::size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> out(n);
  for (auto& v : out) v = dist(rng);
  return out;
}

std::vector<std::uint8_t> random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::vector<std::uint8_t> out(n);
  for (auto& v : out) v = static_cast<std::uint8_t>(rng());
  return out;
}

}  // namespace zoro::testing
