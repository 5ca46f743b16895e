#include "examples/zoro_train/io/batch_source.h"

#include "runtime/base/check.h"

namespace zoro::train {

const char* to_string(Split split) { return split == Split::kTrain ? "train" : "validation"; }

namespace detail {

void check_batch_request(const BatchKey& key, int batch, int seq_len, std::size_t inputs_size,
                         std::size_t targets_size) {
  ZORO_CHECK(batch > 0 && seq_len > 0,
             "batch " << batch << " x seq_len " << seq_len << ": both must be positive");
  ZORO_CHECK(key.world_size > 0 && key.rank >= 0 && key.rank < key.world_size,
             "rank " << key.rank << " is outside [0, world_size=" << key.world_size << ")");
  ZORO_CHECK(key.step >= 0 && key.micro_step >= 0,
             "step " << key.step << ", micro_step " << key.micro_step << ": negative");
  const std::size_t n = static_cast<std::size_t>(batch) * static_cast<std::size_t>(seq_len);
  ZORO_CHECK(inputs_size == n && targets_size == n,
             "inputs/targets hold " << inputs_size << "/" << targets_size << " tokens, batch "
                                    << batch << " x seq_len " << seq_len << " needs " << n);
}

std::uint64_t mix(std::initializer_list<std::uint64_t> words) {
  std::uint64_t h = 0x9E3779B97F4A7C15ull;
  for (const std::uint64_t w : words) {
    std::uint64_t z = h ^ (w + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    h = z ^ (z >> 31);
  }
  return h;
}

}  // namespace detail
}  // namespace zoro::train
