// One measured run of zoro-train's GPT in one mode (offload, offload + DPU, no offload) at one
// tokens-per-step setting: a fresh parameter store, model and trainer on the given device,
// synthetic random tokens, some warm-up steps then timed ones, the figures of the timed steps.
// Used by both questions of zoro-bench-train (throughput and the largest shape that fits).
//
// Contract: a mode that does not fit (OutOfMemory while building the store or the model, or
// during a step) comes back as a result with fits = false and the error's message (which
// names the numbers); any other error propagates. Everything the run allocated is freed
// before return, so runs in a row on one device start from the same free memory.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "examples/zoro_train/model/gpt_config.h"
#include "runtime/base/dtype.h"
#include "runtime/device/device.h"

namespace zoro::bench {

enum class Mode { kOffload, kOffloadDpu, kNoOffload };
const char* mode_name(Mode mode);  // "offload (sync)", ...
const char* mode_key(Mode mode);   // "offload", "dpu", "no_offload" (JSON)

// Tokens per optimizer step = micro_batch * seq_len * grad_accum.
struct Setting {
  int micro_batch = 8;
  int seq_len = 64;
  int grad_accum = 1;
  std::size_t tokens() const {
    return static_cast<std::size_t>(micro_batch) * static_cast<std::size_t>(seq_len) *
           static_cast<std::size_t>(grad_accum);
  }
  std::string to_string() const;  // "8x48x1"
};

struct RunOptions {
  DType dtype = DType::kF32;  // working weights and gradients
  int warmup_steps = 3;       // untimed (with DPU, more than dpu_warmup_steps = 1)
  int timed_steps = 5;
  int cpu_threads = 0;  // CPU optimizer threads; 0: the engine's default
  double lr = 1e-4;
  std::uint64_t seed = 1;
};

// Every timed step's figures (milliseconds), before the medians.
struct StepSamples {
  std::vector<double> step, compute, optimizer, exposed, d2h, h2d, update;
  void append(const StepSamples& other);
};

struct RunResult {
  bool fits = true;
  std::string failure;  // the OutOfMemory message, or "loss is nan at step 2"
  // Medians over the timed steps (milliseconds).
  double step_ms = 0;
  double compute_ms = 0;
  double optimizer_ms = 0;
  // The engine's device-measured figures (offload modes only).
  std::optional<double> exposed_ms, d2h_ms, h2d_ms, update_ms;
  double tokens_per_s = 0;
  double tflops = 0;                  // model FLOPs (GptConfig::flops_per_token) per second
  std::size_t device_peak_bytes = 0;  // high-water mark of device memory during the run
  std::size_t pinned_host_peak_bytes = 0;
  std::vector<double> losses;  // every step's, warm-up included
  int deferred_steps = 0;      // timed steps whose update was deferred (DPU)
  StepSamples samples;
};

// Sets the medians, tokens/s and TFLOPS of `r` from r.samples (nothing when it has none).
void summarize(RunResult& r, const zoro::train::GptConfig& model, const Setting& setting);

// Folds a later run of the same mode and setting into `into` (--rounds): samples appended,
// peaks the larger, losses and deferred steps added up; a run that did not fit wins.
void merge(RunResult& into, const RunResult& later, const zoro::train::GptConfig& model,
           const Setting& setting);

// Trains `model` in `mode` at `setting`. A non-finite loss makes fits = false with a failure
// naming the step when `require_finite_loss` (the search); otherwise it is only recorded.
RunResult run_mode(device::Device& dev, const zoro::train::GptConfig& model, Mode mode,
                   const Setting& setting, const RunOptions& options,
                   bool require_finite_loss = false);

}  // namespace zoro::bench
