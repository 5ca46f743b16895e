// TokenDataset: a text file as a stream of tokens, split into train and validation, sampled as
// windows of T + 1 tokens (Note [Stateless sampling] in batch_source.h).
//
// The file is memory-mapped and tokenized once (the int32 tokens are the only copy of the
// text kept; the map is released after). The last val_fraction of the tokens (at least one
// window of seq_len + 1) is the validation split; when the file is too small to give both
// splits a window, the validation split is the file's last window and overlaps the train
// split (validation_overlaps_train() says so, for a warning).
//
// Sampling: window starts are drawn uniformly from the split, each rank from its own
// contiguous 1/world_size of the start positions, by a hash of (seed, split, rank,
// world_size, step, micro_step, row).
//
// Errors: a missing, unreadable or empty file -> IoError naming the path; a file with fewer
// than seq_len + 1 tokens -> InvalidArgument saying how many it has and needs; a rank whose
// share of a split has no window -> InvalidArgument at make_batch.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "examples/zoro_train/io/batch_source.h"
#include "examples/zoro_train/io/tokenizer.h"

namespace zoro::train {

struct DatasetOptions {
  int seq_len = 64;            // T; windows are T + 1 tokens
  double val_fraction = 0.05;  // in (0, 0.5]
};

class TokenDataset final : public BatchSource {
 public:
  // Reads and tokenizes `path`.
  static TokenDataset from_file(const std::string& path, const Tokenizer& tokenizer,
                                DatasetOptions options);
  // From tokens already at hand (tests, other front ends); `origin` names them in errors.
  TokenDataset(std::vector<std::int32_t> tokens, int vocab_size, DatasetOptions options,
               std::string origin = "tokens");

  // make_batch serves any seq_len <= options.seq_len.
  void make_batch(Split split, const BatchKey& key, int batch, int seq_len,
                  std::span<std::int32_t> inputs, std::span<std::int32_t> targets) const override;
  int vocab_size() const override { return vocab_size_; }

  std::size_t token_count() const { return tokens_.size(); }
  // [begin, end) of each split in token_count() positions.
  std::size_t split_begin(Split split) const;
  std::size_t split_end(Split split) const;
  bool validation_overlaps_train() const { return val_begin_ < train_end_; }
  std::span<const std::int32_t> tokens() const { return tokens_; }

 private:
  std::vector<std::int32_t> tokens_;
  int vocab_size_;
  DatasetOptions options_;
  std::string origin_;
  std::size_t train_end_ = 0;
  std::size_t val_begin_ = 0;
};

}  // namespace zoro::train
