#include "examples/zoro_train/io/dataset.h"

#include <algorithm>
#include <cmath>

#include "examples/zoro_train/io/mapped_file.h"
#include "runtime/base/check.h"

namespace zoro::train {

TokenDataset TokenDataset::from_file(const std::string& path, const Tokenizer& tokenizer,
                                     DatasetOptions options) {
  std::vector<std::int32_t> tokens;
  {
    const MappedFile file = MappedFile::open(path);
    if (file.size() == 0) ZORO_THROW(IoError, "data file '" << path << "' is empty");
    if (dynamic_cast<const ByteTokenizer*>(&tokenizer) != nullptr) {
      ByteTokenizer::encode_into(file.text(), tokens);  // no copy of the text
    } else {
      tokens = tokenizer.encode(file.text());
    }
  }
  return TokenDataset(std::move(tokens), tokenizer.vocab_size(), options,
                      "data file '" + path + "'");
}

TokenDataset::TokenDataset(std::vector<std::int32_t> tokens, int vocab_size, DatasetOptions options,
                           std::string origin)
    : tokens_(std::move(tokens)),
      vocab_size_(vocab_size),
      options_(options),
      origin_(std::move(origin)) {
  ZORO_CHECK(options_.seq_len > 0, "seq_len " << options_.seq_len << " must be positive");
  ZORO_CHECK(options_.val_fraction > 0 && options_.val_fraction <= 0.5,
             "val_fraction " << options_.val_fraction << " must be in (0, 0.5]");
  ZORO_CHECK(vocab_size_ > 0, "vocab_size " << vocab_size_ << " must be positive");
  const std::size_t window = static_cast<std::size_t>(options_.seq_len) + 1;
  const std::size_t n = tokens_.size();
  ZORO_CHECK(n >= window, origin_ << " has " << n << " tokens, fewer than one sequence + 1 ("
                                  << window << " for seq_len " << options_.seq_len << ")");
  for (std::size_t i = 0; i < n; ++i) {
    ZORO_CHECK(tokens_[i] >= 0 && tokens_[i] < vocab_size_,
               origin_ << ": token " << i << " is " << tokens_[i] << ", outside [0, " << vocab_size_
                       << ")");
  }
  const auto val = std::max<std::size_t>(
      window, static_cast<std::size_t>(std::ceil(options_.val_fraction * static_cast<double>(n))));
  if (n >= val + window) {
    train_end_ = n - val;
    val_begin_ = train_end_;
  } else {  // too small for two disjoint splits: validate on the last window
    train_end_ = n;
    val_begin_ = n - window;
  }
}

std::size_t TokenDataset::split_begin(Split split) const {
  return split == Split::kTrain ? 0 : val_begin_;
}
std::size_t TokenDataset::split_end(Split split) const {
  return split == Split::kTrain ? train_end_ : tokens_.size();
}

void TokenDataset::make_batch(Split split, const BatchKey& key, int batch, int seq_len,
                              std::span<std::int32_t> inputs,
                              std::span<std::int32_t> targets) const {
  detail::check_batch_request(key, batch, seq_len, inputs.size(), targets.size());
  ZORO_CHECK(seq_len <= options_.seq_len,
             "seq_len " << seq_len << " exceeds the dataset's " << options_.seq_len);
  const std::size_t T = static_cast<std::size_t>(seq_len);
  const std::size_t begin = split_begin(split);
  const std::size_t starts = split_end(split) - begin - T;  // windows of T + 1 tokens
  const auto world = static_cast<std::size_t>(key.world_size);
  const auto rank = static_cast<std::size_t>(key.rank);
  const std::size_t share_begin = starts * rank / world;
  const std::size_t share = starts * (rank + 1) / world - share_begin;
  ZORO_CHECK(share > 0, origin_ << ": the " << to_string(split) << " split has " << starts
                                << " window start(s) of " << T + 1 << " tokens, too few for "
                                << world << " ranks");
  for (std::size_t b = 0; b < static_cast<std::size_t>(batch); ++b) {
    const std::uint64_t h = detail::mix({key.seed, static_cast<std::uint64_t>(split), rank, world,
                                         static_cast<std::uint64_t>(key.step),
                                         static_cast<std::uint64_t>(key.micro_step), b});
    const std::size_t start = begin + share_begin + static_cast<std::size_t>(h % share);
    const std::int32_t* w = tokens_.data() + start;
    std::copy(w, w + T, inputs.begin() + static_cast<std::ptrdiff_t>(b * T));
    std::copy(w + 1, w + T + 1, targets.begin() + static_cast<std::ptrdiff_t>(b * T));
  }
}

}  // namespace zoro::train
