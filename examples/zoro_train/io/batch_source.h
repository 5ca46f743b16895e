// Where zoro-train's batches come from: a text dataset (dataset.h) or the embedded synthetic
// task (synthetic_task.h), behind one interface the batch loader reads.
//
// Note [Stateless sampling]: a batch is a pure function of its BatchKey (seed, rank,
// world_size, step, micro_step) and of the split, B and T. There is no iterator to save in a
// checkpoint: a run resumed at step s asks for the keys an uninterrupted run would have asked
// for and sees exactly the same batches. Distinct ranks see distinct data: TokenDataset gives
// each rank a disjoint share of the window starts; SyntheticTask gives each rank its own
// stream of generated problems.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>

namespace zoro::train {

enum class Split : std::uint8_t { kTrain, kValidation };
const char* to_string(Split split);

struct BatchKey {
  std::uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
  std::int64_t step = 0;  // optimizer step (for validation: the eval batch index)
  int micro_step = 0;     // gradient-accumulation micro-step within the step
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Writes batch `key` of `split`: `inputs` and `targets` are [batch][seq_len] row-major, and
  // each row is a window w of seq_len + 1 tokens with inputs = w[0..T), targets = w[1..T].
  // Throws InvalidArgument for spans of the wrong size, a bad key (rank outside [0, world),
  // negative step) or a seq_len the source cannot serve. Thread-safe (const).
  virtual void make_batch(Split split, const BatchKey& key, int batch, int seq_len,
                          std::span<std::int32_t> inputs,
                          std::span<std::int32_t> targets) const = 0;
  // Token ids are in [0, vocab_size()).
  virtual int vocab_size() const = 0;
};

namespace detail {
// The key checks every source shares.
void check_batch_request(const BatchKey& key, int batch, int seq_len, std::size_t inputs_size,
                         std::size_t targets_size);
// A 64-bit hash of the words given (splitmix64 chained): the counter-based generator behind
// Note [Stateless sampling].
std::uint64_t mix(std::initializer_list<std::uint64_t> words);
}  // namespace detail

}  // namespace zoro::train
