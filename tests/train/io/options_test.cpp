// The command line: the defaults are the embedded run, every flag parses, every validation
// error names its flag, unknown flags and bad values are refused, --help does not exit.
#include "examples/zoro_train/io/options.h"

#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "tests/train/io/test_util.h"

namespace zoro::train {
namespace {

TrainOptions parse(std::vector<std::string> args) { return parse_train_options(args); }

TEST(TrainOptions, DefaultsAreTheEmbeddedRun) {
  const TrainOptions o = parse({});
  EXPECT_FALSE(o.exit_now);
  EXPECT_EQ(o.preset, "default");
  EXPECT_TRUE(o.uses_embedded_task());
  EXPECT_EQ(o.tokenizer, "byte");
  EXPECT_EQ(o.device, "auto");
  EXPECT_FALSE(o.dtype.has_value());
  EXPECT_FALSE(o.no_offload || o.dpu || o.recompute || o.resume);
  EXPECT_GT(o.steps, 0);
  EXPECT_GT(o.eval_every, 0);
  EXPECT_GT(o.sample_tokens, 0);
  EXPECT_EQ(o.budget_hours, 0.0);
  EXPECT_NO_THROW(validate(o));
  // The argc/argv entry point, as main() calls it.
  const char* argv[] = {"zoro-train", "--steps", "5"};
  EXPECT_EQ(parse_train_options(3, argv).steps, 5);
}

TEST(TrainOptions, ParsesEveryFlag) {
  const TrainOptions o = parse({"--preset",
                                "gpt2",
                                "--layers",
                                "4",
                                "--heads",
                                "4",
                                "--channels",
                                "128",
                                "--vocab",
                                "50304",
                                "--max-seq",
                                "256",
                                "--data",
                                "corpus.txt",
                                "--tokenizer",
                                "gpt2",
                                "--bpe-encoder",
                                "enc.json",
                                "--bpe-merges",
                                "vocab.bpe",
                                "--init-weights",
                                "in.st",
                                "--save-weights",
                                "out.st",
                                "--steps",
                                "1000",
                                "--micro-batch",
                                "4",
                                "--seq-len",
                                "128",
                                "--grad-accum",
                                "8",
                                "--lr",
                                "6e-4",
                                "--min-lr",
                                "6e-5",
                                "--warmup-steps",
                                "100",
                                "--weight-decay",
                                "0.1",
                                "--beta1",
                                "0.85",
                                "--beta2",
                                "0.95",
                                "--eps",
                                "1e-6",
                                "--clip",
                                "0.5",
                                "--dtype",
                                "fp16",
                                "--dpu",
                                "--recompute",
                                "--checkpoint-dir",
                                "ck",
                                "--checkpoint-every",
                                "50",
                                "--resume",
                                "--device",
                                "host:mem=256MiB",
                                "--seed",
                                "99",
                                "--json-log",
                                "log.jsonl",
                                "--log-every",
                                "5",
                                "--eval-every",
                                "20",
                                "--eval-batches",
                                "3",
                                "--sample-tokens",
                                "0",
                                "--budget-hours",
                                "1.5",
                                "--stop-gain-per-hour",
                                "0.02",
                                "--stop-window",
                                "4",
                                "--engine-config",
                                "run.toml"});
  EXPECT_EQ(o.preset, "gpt2");
  EXPECT_EQ(o.layers, 4);
  EXPECT_EQ(o.heads, 4);
  EXPECT_EQ(o.channels, 128);
  EXPECT_EQ(o.vocab, 50304);
  EXPECT_EQ(o.max_seq, 256);
  EXPECT_EQ(o.data, "corpus.txt");
  EXPECT_EQ(o.tokenizer, "gpt2");
  EXPECT_EQ(o.bpe_encoder, "enc.json");
  EXPECT_EQ(o.bpe_merges, "vocab.bpe");
  EXPECT_EQ(o.init_weights, "in.st");
  EXPECT_EQ(o.save_weights, "out.st");
  EXPECT_EQ(o.steps, 1000);
  EXPECT_EQ(o.micro_batch, 4);
  EXPECT_EQ(o.seq_len, 128);
  EXPECT_EQ(o.grad_accum, 8);
  EXPECT_DOUBLE_EQ(o.lr, 6e-4);
  EXPECT_DOUBLE_EQ(o.min_lr, 6e-5);
  EXPECT_EQ(o.warmup_steps, 100);
  EXPECT_DOUBLE_EQ(o.weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(o.beta1, 0.85);
  EXPECT_DOUBLE_EQ(o.beta2, 0.95);
  EXPECT_DOUBLE_EQ(o.eps, 1e-6);
  EXPECT_DOUBLE_EQ(o.clip, 0.5);
  EXPECT_EQ(o.dtype, DType::kF16);
  EXPECT_TRUE(o.dpu);
  EXPECT_TRUE(o.recompute);
  EXPECT_FALSE(o.no_offload);
  EXPECT_EQ(o.checkpoint_dir, "ck");
  EXPECT_EQ(o.checkpoint_every, 50);
  EXPECT_TRUE(o.resume);
  EXPECT_EQ(o.device, "host:mem=256MiB");
  EXPECT_EQ(o.seed, 99u);
  EXPECT_EQ(o.json_log, "log.jsonl");
  EXPECT_EQ(o.log_every, 5);
  EXPECT_EQ(o.eval_every, 20);
  EXPECT_EQ(o.eval_batches, 3);
  EXPECT_EQ(o.sample_tokens, 0);
  EXPECT_DOUBLE_EQ(o.budget_hours, 1.5);
  EXPECT_DOUBLE_EQ(o.stop_gain_per_hour, 0.02);
  EXPECT_EQ(o.stop_window, 4);
  EXPECT_EQ(o.engine_config, "run.toml");
  EXPECT_FALSE(o.uses_embedded_task());
  EXPECT_TRUE(parse({"--no-offload"}).no_offload);
  EXPECT_EQ(parse({"--dtype=bf16"}).dtype, DType::kBF16);
  EXPECT_FALSE(parse({"--dtype", "auto"}).dtype.has_value());
}

void expect_refused(std::vector<std::string> args, const std::string& fragment) {
  std::string joined;
  for (const auto& a : args) joined += a + " ";
  SCOPED_TRACE(joined);
  ZORO_EXPECT_ERROR(InvalidArgument, parse(std::move(args)), fragment);
}

TEST(TrainOptions, EveryValidationErrorNamesItsFlag) {
  expect_refused({"--preset", "gpt5"}, "--preset: 'gpt5' is not one of");
  expect_refused({"--layers=-2"}, "--layers: -2");
  expect_refused({"--heads=-1"}, "--heads: -1");
  expect_refused({"--channels=-8"}, "--channels: -8");
  expect_refused({"--vocab=-1"}, "--vocab: -1");
  expect_refused({"--max-seq=-1"}, "--max-seq: -1");
  expect_refused({"--channels", "100", "--heads", "3"},
                 "--channels: 100 is not a multiple of --heads 3");
  expect_refused({"--tokenizer", "sentencepiece"}, "--tokenizer: 'sentencepiece'");
  expect_refused({"--tokenizer", "gpt2", "--data", "x.txt"},
                 "--tokenizer: gpt2 needs --bpe-encoder");
  expect_refused({"--tokenizer", "gpt2", "--bpe-encoder", "e", "--bpe-merges", "m"},
                 "--tokenizer: gpt2 needs --data");
  expect_refused({"--bpe-encoder", "e.json"}, "--bpe-encoder: --bpe-encoder/--bpe-merges are for");
  expect_refused({"--vocab", "100"}, "--vocab: 100 is smaller than the byte tokenizer's 257");
  expect_refused({"--steps=-5"}, "--steps: -5 must be positive");
  expect_refused({"--steps", "0"}, "--steps: 0 must be positive");
  expect_refused({"--micro-batch", "0"}, "--micro-batch: 0");
  expect_refused({"--seq-len", "0"}, "--seq-len: 0");
  expect_refused({"--seq-len", "512", "--max-seq", "256"}, "--seq-len: 512 exceeds --max-seq 256");
  expect_refused({"--grad-accum", "0"}, "--grad-accum: 0");
  expect_refused({"--lr", "0"}, "--lr: 0 must be positive");
  expect_refused({"--lr", "1e-3", "--min-lr", "1e-2"}, "--min-lr: 0.01 must be in [0, --lr 0.001]");
  expect_refused({"--warmup-steps=-1"}, "--warmup-steps: -1");
  expect_refused({"--weight-decay=-0.1"}, "--weight-decay: -0.1");
  expect_refused({"--beta1", "1"}, "--beta1: 1 must be in [0, 1)");
  expect_refused({"--beta2", "1.5"}, "--beta2: 1.5 must be in [0, 1)");
  expect_refused({"--eps", "0"}, "--eps: 0 must be positive");
  expect_refused({"--clip=-1"}, "--clip: -1 is negative");
  expect_refused({"--dtype", "int8"}, "--dtype: 'int8' is not one of auto, bf16, fp16, fp32");
  expect_refused({"--no-offload", "--dpu"}, "--dpu: delays the CPU update");
  expect_refused({"--device", ""}, "--device: is empty");
  expect_refused({"--resume"}, "--resume: needs --checkpoint-dir");
  expect_refused({"--checkpoint-every", "10"}, "--checkpoint-every: needs --checkpoint-dir");
  expect_refused({"--checkpoint-every=-1", "--checkpoint-dir", "d"}, "--checkpoint-every: -1");
  expect_refused({"--log-every", "0"}, "--log-every: 0");
  expect_refused({"--eval-every=-1"}, "--eval-every: -1");
  expect_refused({"--eval-batches", "0"}, "--eval-batches: 0");
  expect_refused({"--sample-tokens=-1"}, "--sample-tokens: -1");
  expect_refused({"--budget-hours=-1"}, "--budget-hours: -1");
  expect_refused({"--stop-gain-per-hour=-1"}, "--stop-gain-per-hour: -1");
  expect_refused({"--stop-window", "1"}, "--stop-window: 1 must be at least 2");
  expect_refused({"--stop-gain-per-hour", "0.1", "--eval-every", "0"},
                 "--stop-gain-per-hour: needs evaluations");
}

TEST(TrainOptions, UnknownFlagsAndBadValuesAreRefused) {
  expect_refused({"--stepz", "10"}, "--stepz");
  expect_refused({"--steps", "ten"}, "ten");
  expect_refused({"--steps"}, "--steps");
  expect_refused({"--lr", "fast"}, "fast");
  expect_refused({"stray"}, "stray");
}

TEST(TrainOptions, HelpIsReturnedNotPrinted) {
  for (const char* flag : {"--help", "-h"}) {
    const TrainOptions o = parse({"--steps", "3", flag});
    EXPECT_TRUE(o.exit_now);
    for (const char* documented : {"--preset",
                                   "--layers",
                                   "--heads",
                                   "--channels",
                                   "--vocab",
                                   "--max-seq",
                                   "--data",
                                   "--tokenizer",
                                   "--bpe-encoder",
                                   "--bpe-merges",
                                   "--init-weights",
                                   "--save-weights",
                                   "--steps",
                                   "--micro-batch",
                                   "--seq-len",
                                   "--grad-accum",
                                   "--lr",
                                   "--min-lr",
                                   "--warmup-steps",
                                   "--weight-decay",
                                   "--beta1",
                                   "--beta2",
                                   "--eps",
                                   "--clip",
                                   "--dtype",
                                   "--no-offload",
                                   "--dpu",
                                   "--recompute",
                                   "--checkpoint-dir",
                                   "--checkpoint-every",
                                   "--resume",
                                   "--device",
                                   "--seed",
                                   "--json-log",
                                   "--eval-every",
                                   "--eval-batches",
                                   "--sample-tokens",
                                   "--budget-hours",
                                   "--stop-gain-per-hour",
                                   "--stop-window",
                                   "--engine-config",
                                   "--log-every"}) {
      EXPECT_NE(o.help_text.find(documented), std::string::npos) << documented;
    }
  }
}

}  // namespace
}  // namespace zoro::train
