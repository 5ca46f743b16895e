// zoro-train's command line: TrainOptions and its parser.
//
// With no arguments the options describe the embedded default run: the "default" preset
// (a tiny model, the model library defines its shape) learning the synthetic addition task
// (synthetic_task.h) with byte tokens, on the GPU if there is one, else on the host backend.
//
// parse_train_options() validates every value and combination and throws InvalidArgument
// naming the flag (and CLI11's own message for an unknown flag or a malformed value). It
// never exits: --help returns options with exit_now set and the help text in help_text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/dtype.h"

namespace zoro::train {

struct TrainOptions {
  // Model: a preset, optionally with some of its dimensions overridden (0: the preset's).
  std::string preset = "default";  // default | tiny | gpt2 | gpt2-medium | gpt2-large | gpt2-xl
  int layers = 0;
  int heads = 0;
  int channels = 0;
  int vocab = 0;    // padded vocabulary; at least the tokenizer's
  int max_seq = 0;  // positions; at least seq_len

  // Data: a text file, or the embedded synthetic task when empty.
  std::string data;
  std::string tokenizer = "byte";  // byte | gpt2
  std::string bpe_encoder;         // encoder.json (gpt2)
  std::string bpe_merges;          // vocab.bpe (gpt2)

  // Weights.
  std::string init_weights;  // safetensors to start from; random initialisation when empty
  std::string save_weights;  // safetensors written at the end; none when empty

  // Schedule.
  std::int64_t steps = 1200;  // the default run: ~100 s on 2 CPU cores, ~100% held-out accuracy
  int micro_batch = 16;
  int seq_len = 48;
  int grad_accum = 1;
  double lr = 3e-3;
  double min_lr = 3e-4;  // cosine decay to this after the warm-up
  std::int64_t warmup_steps = 20;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-8;
  double clip = 1.0;  // gradient-norm clipping; 0 disables

  // Precision and placement. dtype: nullopt is "auto" (bf16 on CUDA, fp32 on the host).
  std::optional<DType> dtype;
  bool no_offload = false;  // optimizer on the device: the baseline for comparisons
  bool dpu = false;         // delayed parameter update
  bool recompute = false;   // per-layer activation recomputation
  std::string device = "auto";
  std::string engine_config;  // optional zoro::Config TOML for the engine's other knobs

  // Checkpoints.
  std::string checkpoint_dir;
  std::int64_t checkpoint_every = 0;  // steps; 0: only at the end and when a budget stops
  bool resume = false;

  // Reporting and stopping.
  std::uint64_t seed = 1337;
  std::string json_log;
  std::int64_t log_every = 50;
  std::int64_t eval_every = 100;  // 0 disables evaluation
  int eval_batches = 4;
  int sample_tokens = 64;         // 0 disables the final sample
  double budget_hours = 0;        // 0: no budget
  double stop_gain_per_hour = 0;  // 0: no early stop
  int stop_window = 5;

  bool exit_now = false;  // --help was given: print help_text and exit 0
  std::string help_text;

  bool uses_embedded_task() const { return data.empty(); }
};

TrainOptions parse_train_options(int argc, const char* const* argv);
// The same from arguments without the program name (tests).
TrainOptions parse_train_options(const std::vector<std::string>& args);

// Throws InvalidArgument naming the flag for a value or combination that is not allowed.
void validate(const TrainOptions& options);

}  // namespace zoro::train
