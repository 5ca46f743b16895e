// Random test inputs with a fresh seed each run. The seed is printed (SCOPED_TRACE) so a
// failure can be replayed with ZORO_TEST_SEED=<seed>.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace zoro::testing {

// ZORO_TEST_SEED when set, else a fresh random seed; the same value for the whole process.
std::uint64_t test_seed();

// A generator seeded from test_seed() and `stream` (so that two tests draw different data).
std::mt19937_64 make_rng(std::uint64_t stream = 0);

std::vector<float> random_floats(std::mt19937_64& rng, std::size_t n, float lo = -1.f,
                                 float hi = 1.f);
std::vector<std::uint8_t> random_bytes(std::mt19937_64& rng, std::size_t n);

}  // namespace zoro::testing

// Put at the top of a test that draws random data: shows the seed on failure.
#define ZORO_TRACE_SEED() \
  SCOPED_TRACE(::testing::Message() << "ZORO_TEST_SEED=" << ::zoro::testing::test_seed())
