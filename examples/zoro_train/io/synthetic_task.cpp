#include "examples/zoro_train/io/synthetic_task.h"

#include <algorithm>

#include "runtime/base/check.h"

namespace zoro::train {

TaskScore& TaskScore::operator+=(const TaskScore& other) {
  answer_chars += other.answer_chars;
  correct_chars += other.correct_chars;
  answers += other.answers;
  correct_answers += other.correct_answers;
  return *this;
}

SyntheticTask::SyntheticTask(SyntheticTaskOptions options) : options_(options) {
  ZORO_CHECK(options_.max_digits >= 1 && options_.max_digits <= 9,
             "synthetic task max_digits " << options_.max_digits << " must be in [1, 9]");
}

bool SyntheticTask::held_out(std::uint64_t a, std::uint64_t b) {
  return detail::mix({0x5EEDull, a, b}) % 16 == 0;
}

namespace {
std::string padded(std::uint64_t v, int width) {
  std::string s = std::to_string(v);
  if (static_cast<int>(s.size()) < width)
    s.insert(0, static_cast<std::size_t>(width) - s.size(), '0');
  return s;
}
}  // namespace

std::string SyntheticTask::problem_line(std::uint64_t a, std::uint64_t b, int width) {
  std::string sum = padded(a + b, width > 0 ? width + 1 : 0);
  std::reverse(sum.begin(), sum.end());
  return padded(a, width) + "+" + padded(b, width) + "=" + sum + "\n";
}

std::pair<std::uint64_t, std::uint64_t> SyntheticTask::draw(Split split, std::uint64_t h,
                                                            std::uint64_t i) const {
  const auto operand = [&](std::uint64_t r) {
    const auto digits = 1 + static_cast<int>(r % static_cast<std::uint64_t>(options_.max_digits));
    std::uint64_t lo = 1;
    for (int d = 1; d < digits; ++d) lo *= 10;
    const std::uint64_t hi = lo * 10;
    if (digits == 1) lo = 0;
    return lo + (r / static_cast<std::uint64_t>(options_.max_digits)) % (hi - lo);
  };
  // Rejection until the pair is of the wanted split: 1/16 of draws for validation. Both splits
  // are non-empty for every max_digits: the single-digit pairs, which every setting draws,
  // already hold some of each (the held_out hash is fixed; RowsAreWellFormedReversedSums
  // draws both splits with max_digits = 1), so this loop ends.
  for (std::uint64_t attempt = 0;; ++attempt) {
    const std::uint64_t a = operand(detail::mix({h, i, attempt, 0}));
    const std::uint64_t b = operand(detail::mix({h, i, attempt, 1}));
    if (held_out(a, b) == (split == Split::kValidation)) return {a, b};
  }
}

void SyntheticTask::make_batch(Split split, const BatchKey& key, int batch, int seq_len,
                               std::span<std::int32_t> inputs,
                               std::span<std::int32_t> targets) const {
  detail::check_batch_request(key, batch, seq_len, inputs.size(), targets.size());
  const auto T = static_cast<std::size_t>(seq_len);
  std::vector<std::int32_t> window;
  window.reserve(T + 32);
  for (std::size_t r = 0; r < static_cast<std::size_t>(batch); ++r) {
    const std::uint64_t h = detail::mix(
        {key.seed, static_cast<std::uint64_t>(split), static_cast<std::uint64_t>(key.rank),
         static_cast<std::uint64_t>(key.world_size), static_cast<std::uint64_t>(key.step),
         static_cast<std::uint64_t>(key.micro_step), r});
    window.clear();
    for (std::uint64_t i = 0; window.size() < T + 1; ++i) {
      const auto [a, b] = draw(split, h, i);
      for (const char c : problem_line(a, b, width()))
        window.push_back(static_cast<unsigned char>(c));
    }
    std::copy(window.begin(), window.begin() + seq_len,
              inputs.begin() + static_cast<std::ptrdiff_t>(r * T));
    std::copy(window.begin() + 1, window.begin() + seq_len + 1,
              targets.begin() + static_cast<std::ptrdiff_t>(r * T));
  }
}

std::vector<std::uint8_t> SyntheticTask::answer_mask(std::span<const std::int32_t> inputs,
                                                     std::span<const std::int32_t> targets,
                                                     int batch, int seq_len) {
  detail::check_batch_request({}, batch, seq_len, inputs.size(), targets.size());
  std::vector<std::uint8_t> mask(inputs.size(), 0);
  const auto T = static_cast<std::size_t>(seq_len);
  for (std::size_t r = 0; r < static_cast<std::size_t>(batch); ++r) {
    bool in_answer = false;
    for (std::size_t t = 0; t < T; ++t) {
      const std::int32_t c = inputs[r * T + t];
      if (c == '\n') in_answer = false;
      if (c == '=') in_answer = true;
      mask[r * T + t] = in_answer ? 1 : 0;
    }
  }
  return mask;
}

TaskScore SyntheticTask::score(std::span<const std::int32_t> inputs,
                               std::span<const std::int32_t> targets,
                               std::span<const std::int32_t> predictions, int batch, int seq_len) {
  ZORO_CHECK(predictions.size() == targets.size(),
             "predictions hold " << predictions.size() << " tokens, targets " << targets.size());
  const std::vector<std::uint8_t> mask = answer_mask(inputs, targets, batch, seq_len);
  const auto T = static_cast<std::size_t>(seq_len);
  TaskScore s;
  for (std::size_t r = 0; r < static_cast<std::size_t>(batch); ++r) {
    bool all_right = true;
    for (std::size_t t = 0; t < T; ++t) {
      const std::size_t i = r * T + t;
      if (mask[i] == 0) {
        all_right = true;  // the next answer starts afresh
        continue;
      }
      const bool right = predictions[i] == targets[i];
      ++s.answer_chars;
      s.correct_chars += right ? 1 : 0;
      all_right = all_right && right;
      if (targets[i] == '\n') {  // the answer ends inside the window
        ++s.answers;
        s.correct_answers += all_right ? 1 : 0;
        all_right = true;
      }
    }
  }
  return s;
}

std::vector<std::string> SyntheticTask::sample_prompts(int count, std::uint64_t seed) const {
  ZORO_CHECK(count >= 0, "prompt count " << count << " is negative");
  std::vector<std::string> prompts;
  const std::uint64_t h = detail::mix({seed, 0x50524F4D5054ull});
  for (int i = 0; i < count; ++i) {
    const auto [a, b] = draw(Split::kValidation, h, static_cast<std::uint64_t>(i));
    const std::string line = problem_line(a, b, width());
    prompts.push_back(line.substr(0, line.find('=') + 1));
  }
  return prompts;
}

std::optional<std::string> SyntheticTask::expected_completion(std::string_view prompt, int width) {
  const std::size_t plus = prompt.find('+');
  if (plus == std::string_view::npos || prompt.empty() || prompt.back() != '=') return {};
  const std::string_view a = prompt.substr(0, plus);
  const std::string_view b = prompt.substr(plus + 1, prompt.size() - plus - 2);
  const auto digits = [](std::string_view s) {
    return !s.empty() && s.size() <= 18 &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!digits(a) || !digits(b)) return {};
  if (width > 0 && (a.size() != static_cast<std::size_t>(width) ||
                    b.size() != static_cast<std::size_t>(width))) {
    return {};
  }
  const std::string line =
      problem_line(std::stoull(std::string(a)), std::stoull(std::string(b)), width);
  return line.substr(line.find('=') + 1);
}

}  // namespace zoro::train
