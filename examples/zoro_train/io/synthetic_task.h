// The embedded default task of zoro-train: addition with the answer's digits reversed.
//
//   "47+85=231\n"   (47 + 85 = 132, written least significant digit first)
//
// Reversed answers are what a small transformer learns fastest: each answer digit depends
// only on the two operand digits of its place and the carry from the digit just written.
// The text is generated, not shipped (no data, no licence question), as byte tokens
// (ByteTokenizer ids, vocab 257), deterministically (Note [Stateless sampling],
// batch_source.h): row r of batch `key` is a run of problems drawn by a hash of (seed, split,
// rank, world_size, step, micro_step, r), starting at a line boundary and cut at T + 1 tokens.
// Each operand has 1..max_digits digits (the count uniform, then the value). A fixed 1/16 of
// all (a, b) pairs is held out of the train split and makes up the validation split, so the
// eval loss and accuracy measure generalisation, not memory.
//
// Accuracy (score): with teacher forcing, the answer positions are the targets after a '='
// up to and including the '\n' that ends the line (the model must also know where the
// answer stops). char accuracy = correct answer positions / answer positions; exact accuracy
// = answers whose every position is right / answers that end inside the window.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "examples/zoro_train/io/batch_source.h"

namespace zoro::train {

struct SyntheticTaskOptions {
  int max_digits = 2;  // operands below 10^max_digits; 1..9
  // Note [Fixed width]: operands zero-padded to max_digits digits and answers to max_digits + 1
  // ("07+85=290\n"), so every line has the same length and each character's role is given by
  // its position in the line: a small model learns the carries instead of first having to
  // find where the operands' digits are. false: unpadded ("7+85=29\n").
  bool fixed_width = true;
};

// Counts of one or more scored batches; add them up across eval batches with +=.
struct TaskScore {
  std::int64_t answer_chars = 0;
  std::int64_t correct_chars = 0;
  std::int64_t answers = 0;  // complete answers in the windows
  std::int64_t correct_answers = 0;
  double char_accuracy() const {
    return answer_chars == 0 ? 0.0 : static_cast<double>(correct_chars) / answer_chars;
  }
  double exact_accuracy() const {
    return answers == 0 ? 0.0 : static_cast<double>(correct_answers) / answers;
  }
  TaskScore& operator+=(const TaskScore& other);
};

class SyntheticTask final : public BatchSource {
 public:
  explicit SyntheticTask(SyntheticTaskOptions options = {});

  void make_batch(Split split, const BatchKey& key, int batch, int seq_len,
                  std::span<std::int32_t> inputs, std::span<std::int32_t> targets) const override;
  int vocab_size() const override { return 257; }

  // 1 where targets[i] is an answer position (see the header comment), else 0; [batch][T].
  static std::vector<std::uint8_t> answer_mask(std::span<const std::int32_t> inputs,
                                               std::span<const std::int32_t> targets, int batch,
                                               int seq_len);
  // Scores per-position argmax predictions ([batch][T], the model's guess for targets).
  static TaskScore score(std::span<const std::int32_t> inputs,
                         std::span<const std::int32_t> targets,
                         std::span<const std::int32_t> predictions, int batch, int seq_len);

  // `count` prompts "a+b=" of held-out (validation) problems, for the final sample.
  std::vector<std::string> sample_prompts(int count, std::uint64_t seed) const;
  // The width lines are padded to (Note [Fixed width]): max_digits, or 0 for unpadded lines.
  int width() const { return options_.fixed_width ? options_.max_digits : 0; }
  // The text a perfect model writes after `prompt` ("47+85=" -> "231\n"; with width 3,
  // "047+085=" -> "2310\n"); nullopt when the prompt is not "<digits>+<digits>=" (with
  // width > 0: exactly width digits each).
  static std::optional<std::string> expected_completion(std::string_view prompt, int width = 0);
  // One problem's line, "47+85=231\n"; with width > 0 operands padded to width digits and the
  // reversed answer to width + 1 ("07+85=290\n" for width 2).
  static std::string problem_line(std::uint64_t a, std::uint64_t b, int width = 0);
  // Whether (a, b) belongs to the validation split.
  static bool held_out(std::uint64_t a, std::uint64_t b);

  const SyntheticTaskOptions& options() const { return options_; }

 private:
  // The i-th problem of the stream seeded by `h`, drawn from `split`.
  std::pair<std::uint64_t, std::uint64_t> draw(Split split, std::uint64_t h, std::uint64_t i) const;
  SyntheticTaskOptions options_;
};

}  // namespace zoro::train
