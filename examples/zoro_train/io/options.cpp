#include "examples/zoro_train/io/options.h"

#include <CLI/CLI.hpp>
#include <array>
#include <cmath>

#include "runtime/base/check.h"

namespace zoro::train {

namespace {

constexpr std::array<const char*, 6> kPresets = {"default",     "tiny",       "gpt2",
                                                 "gpt2-medium", "gpt2-large", "gpt2-xl"};

// A user's mistake: the message names the flag, without the condition's source text.
#define ZORO_FLAG_CHECK(cond, flag, msg)                           \
  do {                                                             \
    if (!(cond)) ZORO_THROW(InvalidArgument, flag << ": " << msg); \
  } while (0)

}  // namespace

void validate(const TrainOptions& o) {
  bool known_preset = false;
  for (const char* p : kPresets) known_preset = known_preset || o.preset == p;
  ZORO_FLAG_CHECK(
      known_preset, "--preset",
      "'" << o.preset << "' is not one of default, tiny, gpt2, gpt2-medium, gpt2-large, gpt2-xl");
  ZORO_FLAG_CHECK(o.layers >= 0, "--layers", o.layers << " must be positive");
  ZORO_FLAG_CHECK(o.heads >= 0, "--heads", o.heads << " must be positive");
  ZORO_FLAG_CHECK(o.channels >= 0, "--channels", o.channels << " must be positive");
  ZORO_FLAG_CHECK(o.vocab >= 0, "--vocab", o.vocab << " must be positive");
  ZORO_FLAG_CHECK(o.max_seq >= 0, "--max-seq", o.max_seq << " must be positive");
  if (o.heads > 0 && o.channels > 0) {
    ZORO_FLAG_CHECK(o.channels % o.heads == 0, "--channels",
                    o.channels << " is not a multiple of --heads " << o.heads);
  }

  ZORO_FLAG_CHECK(o.tokenizer == "byte" || o.tokenizer == "gpt2", "--tokenizer",
                  "'" << o.tokenizer << "' is not one of byte, gpt2");
  if (o.tokenizer == "gpt2") {
    ZORO_FLAG_CHECK(!o.bpe_encoder.empty() && !o.bpe_merges.empty(), "--tokenizer",
                    "gpt2 needs --bpe-encoder (encoder.json) and --bpe-merges (vocab.bpe)");
    ZORO_FLAG_CHECK(!o.data.empty(), "--tokenizer",
                    "gpt2 needs --data: the embedded task is byte-level");
  } else {
    ZORO_FLAG_CHECK(o.bpe_encoder.empty() && o.bpe_merges.empty(), "--bpe-encoder",
                    "--bpe-encoder/--bpe-merges are for --tokenizer gpt2");
  }
  const int tokenizer_vocab = o.tokenizer == "gpt2" ? 50257 : 257;
  if (o.vocab > 0) {
    ZORO_FLAG_CHECK(
        o.vocab >= tokenizer_vocab, "--vocab",
        o.vocab << " is smaller than the " << o.tokenizer << " tokenizer's " << tokenizer_vocab);
  }

  ZORO_FLAG_CHECK(o.steps > 0, "--steps", o.steps << " must be positive");
  ZORO_FLAG_CHECK(o.micro_batch > 0, "--micro-batch", o.micro_batch << " must be positive");
  ZORO_FLAG_CHECK(o.seq_len > 0, "--seq-len", o.seq_len << " must be positive");
  if (o.max_seq > 0) {
    ZORO_FLAG_CHECK(o.seq_len <= o.max_seq, "--seq-len",
                    o.seq_len << " exceeds --max-seq " << o.max_seq);
  }
  ZORO_FLAG_CHECK(o.grad_accum > 0, "--grad-accum", o.grad_accum << " must be positive");
  ZORO_FLAG_CHECK(std::isfinite(o.lr) && o.lr > 0, "--lr", o.lr << " must be positive");
  ZORO_FLAG_CHECK(std::isfinite(o.min_lr) && o.min_lr >= 0 && o.min_lr <= o.lr, "--min-lr",
                  o.min_lr << " must be in [0, --lr " << o.lr << "]");
  ZORO_FLAG_CHECK(o.warmup_steps >= 0, "--warmup-steps", o.warmup_steps << " is negative");
  ZORO_FLAG_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "--weight-decay",
                  o.weight_decay << " is negative");
  ZORO_FLAG_CHECK(o.beta1 >= 0 && o.beta1 < 1, "--beta1", o.beta1 << " must be in [0, 1)");
  ZORO_FLAG_CHECK(o.beta2 >= 0 && o.beta2 < 1, "--beta2", o.beta2 << " must be in [0, 1)");
  ZORO_FLAG_CHECK(std::isfinite(o.eps) && o.eps > 0, "--eps", o.eps << " must be positive");
  ZORO_FLAG_CHECK(std::isfinite(o.clip) && o.clip >= 0, "--clip",
                  o.clip << " is negative (0 disables clipping)");

  ZORO_FLAG_CHECK(!(o.no_offload && o.dpu), "--dpu",
                  "delays the CPU update of offloading; it cannot go with --no-offload");
  ZORO_FLAG_CHECK(!o.device.empty(), "--device", "is empty");

  ZORO_FLAG_CHECK(o.checkpoint_every >= 0, "--checkpoint-every",
                  o.checkpoint_every << " is negative");
  ZORO_FLAG_CHECK(!o.resume || !o.checkpoint_dir.empty(), "--resume",
                  "needs --checkpoint-dir to resume from");
  ZORO_FLAG_CHECK(o.checkpoint_every == 0 || !o.checkpoint_dir.empty(), "--checkpoint-every",
                  "needs --checkpoint-dir to write to");

  ZORO_FLAG_CHECK(o.log_every > 0, "--log-every", o.log_every << " must be positive");
  ZORO_FLAG_CHECK(o.eval_every >= 0, "--eval-every",
                  o.eval_every << " is negative (0 disables evaluation)");
  ZORO_FLAG_CHECK(o.eval_batches > 0, "--eval-batches", o.eval_batches << " must be positive");
  ZORO_FLAG_CHECK(o.sample_tokens >= 0, "--sample-tokens",
                  o.sample_tokens << " is negative (0 disables the sample)");
  ZORO_FLAG_CHECK(std::isfinite(o.budget_hours) && o.budget_hours >= 0, "--budget-hours",
                  o.budget_hours << " is negative (0: no budget)");
  ZORO_FLAG_CHECK(std::isfinite(o.stop_gain_per_hour) && o.stop_gain_per_hour >= 0,
                  "--stop-gain-per-hour", o.stop_gain_per_hour << " is negative (0: off)");
  ZORO_FLAG_CHECK(o.stop_window >= 2, "--stop-window",
                  o.stop_window << " must be at least 2 evals");
  ZORO_FLAG_CHECK(o.stop_gain_per_hour == 0 || o.eval_every > 0, "--stop-gain-per-hour",
                  "needs evaluations (--eval-every > 0)");
}

TrainOptions parse_train_options(int argc, const char* const* argv) {
  TrainOptions o;
  CLI::App app{
      "zoro-train: trains a GPT-2-style model with zoro's offload engine.\n"
      "Without arguments: a tiny model learns the embedded addition task (\"47+85=231\", "
      "answers reversed) on the GPU if there is one, else on the host backend.",
      "zoro-train"};
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(34);

  std::string dtype = "auto";
  auto* model = "Model";
  app.add_option("--preset", o.preset,
                 "model shape: default (tiny, for the embedded task), tiny, gpt2, "
                 "gpt2-medium, gpt2-large, gpt2-xl")
      ->group(model);
  app.add_option("--layers", o.layers, "transformer blocks (0: the preset's)")->group(model);
  app.add_option("--heads", o.heads, "attention heads (0: the preset's)")->group(model);
  app.add_option("--channels", o.channels, "embedding width (0: the preset's)")->group(model);
  app.add_option("--vocab", o.vocab, "padded vocabulary size (0: the preset's)")->group(model);
  app.add_option("--max-seq", o.max_seq, "positions (0: the preset's)")->group(model);

  auto* data = "Data";
  app.add_option("--data", o.data, "text file to train on (empty: the embedded task)")->group(data);
  app.add_option("--tokenizer", o.tokenizer, "byte | gpt2 (needs the two BPE files)")->group(data);
  app.add_option("--bpe-encoder", o.bpe_encoder, "GPT-2 encoder.json")->group(data);
  app.add_option("--bpe-merges", o.bpe_merges, "GPT-2 vocab.bpe")->group(data);

  auto* weights = "Weights";
  app.add_option("--init-weights", o.init_weights,
                 "safetensors file to start from (GPT-2 names; empty: random init)")
      ->group(weights);
  app.add_option("--save-weights", o.save_weights, "safetensors file written at the end")
      ->group(weights);

  auto* schedule = "Schedule";
  app.add_option("--steps", o.steps, "optimizer steps")->group(schedule);
  app.add_option("--micro-batch", o.micro_batch, "sequences per micro-step (B)")->group(schedule);
  app.add_option("--seq-len", o.seq_len, "tokens per sequence (T)")->group(schedule);
  app.add_option("--grad-accum", o.grad_accum, "micro-steps per optimizer step")->group(schedule);
  app.add_option("--lr", o.lr, "peak learning rate")->group(schedule);
  app.add_option("--min-lr", o.min_lr, "final learning rate of the cosine decay")->group(schedule);
  app.add_option("--warmup-steps", o.warmup_steps, "linear warm-up steps")->group(schedule);
  app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay")->group(schedule);
  app.add_option("--beta1", o.beta1, "Adam beta1")->group(schedule);
  app.add_option("--beta2", o.beta2, "Adam beta2")->group(schedule);
  app.add_option("--eps", o.eps, "Adam epsilon")->group(schedule);
  app.add_option("--clip", o.clip, "gradient-norm clipping (0: off)")->group(schedule);

  auto* engine = "Engine";
  app.add_option("--dtype", dtype,
                 "working weights: auto (bf16 on CUDA, fp32 on the host) | bf16 | fp16 | fp32")
      ->group(engine);
  app.add_flag("--no-offload", o.no_offload,
               "optimizer state on the device (the baseline for comparisons)")
      ->group(engine);
  app.add_flag("--dpu", o.dpu, "delayed parameter update (weights one step stale)")->group(engine);
  app.add_flag("--recompute", o.recompute, "recompute each layer's activations in backward")
      ->group(engine);
  app.add_option("--device", o.device,
                 "auto | host[:mem=SIZE] | cuda[:N][:mem=SIZE] (e.g. host:mem=256MiB)")
      ->group(engine);
  app.add_option("--engine-config", o.engine_config,
                 "zoro::Config TOML for the other engine knobs (buckets, host budget, threads)")
      ->group(engine);

  auto* checkpoints = "Checkpoints";
  app.add_option("--checkpoint-dir", o.checkpoint_dir, "where checkpoints go")->group(checkpoints);
  app.add_option("--checkpoint-every", o.checkpoint_every,
                 "steps between checkpoints (0: at the end and when a budget stops)")
      ->group(checkpoints);
  app.add_flag("--resume", o.resume, "continue from the checkpoint in --checkpoint-dir")
      ->group(checkpoints);

  auto* run = "Reporting and stopping";
  app.add_option("--seed", o.seed, "seed of the initialisation and of the data")->group(run);
  app.add_option("--json-log", o.json_log, "one JSON object per step (appended to with --resume)")
      ->group(run);
  app.add_option("--log-every", o.log_every, "steps between progress lines")->group(run);
  app.add_option("--eval-every", o.eval_every, "steps between eval losses (0: none)")->group(run);
  app.add_option("--eval-batches", o.eval_batches, "validation batches per eval")->group(run);
  app.add_option("--sample-tokens", o.sample_tokens,
                 "tokens generated for the final sample (0: none)")
      ->group(run);
  app.add_option("--budget-hours", o.budget_hours,
                 "stop (with a checkpoint) once this much time is spent (0: no budget)")
      ->group(run);
  app.add_option("--stop-gain-per-hour", o.stop_gain_per_hour,
                 "stop early when the eval loss gained per hour over the last --stop-window "
                 "evals falls below this (0: off)")
      ->group(run);
  app.add_option("--stop-window", o.stop_window, "evals the early-stopping rule looks at")
      ->group(run);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success&) {  // --help
    o.exit_now = true;
    o.help_text = app.help();
    return o;
  } catch (const CLI::ParseError& e) {
    ZORO_THROW(InvalidArgument, "command line: " << e.what() << " (see --help)");
  }
  if (dtype != "auto") {
    try {
      o.dtype = parse_dtype(dtype, "--dtype");
    } catch (const InvalidArgument&) {
      ZORO_THROW(InvalidArgument,
                 "--dtype: '" << dtype << "' is not one of auto, bf16, fp16, fp32");
    }
  }
  validate(o);
  return o;
}

TrainOptions parse_train_options(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  argv.push_back("zoro-train");
  for (const std::string& a : args) argv.push_back(a.c_str());
  return parse_train_options(static_cast<int>(argv.size()), argv.data());
}

}  // namespace zoro::train
