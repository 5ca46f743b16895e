// zoro::Config: everything the engine is told, validated before anything is allocated.
//
// Read from TOML (Config::from_file("run.toml")) or built in code; validate() checks every
// field and throws InvalidArgument naming the key ("optimizer.lr") and the bad value. Unknown
// keys are errors too (a typo must not silently fall back to a default). The file format:
//
//   device = "auto"                      # auto | host[:mem=SIZE] | cuda[:N][:mem=SIZE]
//   [precision]
//   dtype = "bf16"                       # working weights on the device: bf16 | fp16 | fp32
//   grad_dtype = "bf16"                  # gradients on the device and across the link (16-bit)
//   moments = "fp32"                     # fp32 | bf16
//   [optimizer]
//   name = "adamw"                       # adam | adamw | adagrad | lion
//   lr = 3e-4
//   betas = [0.9, 0.999]
//   eps = 1e-8
//   weight_decay = 0.01
//   clip_norm = 1.0                      # 0 disables clipping
//   [loss_scale]                         # dynamic loss scaling (fp16 only; bf16 runs unscaled)
//   init = 65536.0
//   growth_interval = 2000
//   growth_factor = 2.0
//   backoff_factor = 0.5
//   min = 1.0
//   [offload]
//   bucket_bytes = "32MiB"               # one device gradient bucket
//   bucket_count = 4                     # the ring
//   grad_accum_steps = 1
//   dpu = false                          # delayed parameter update ...
//   dpu_warmup_steps = 10                # ... after this many synchronous steps
//   host_budget = "0"                    # pinned host bytes; 0: 80% of physical memory
//   cpu_threads = 0                      # CPU optimizer threads; 0: the cores near the GPU
//   chunk_elems = 16777216               # CPU update / H2D copy chunk
//   trace = false                        # record a timeline (Chrome trace)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/base/dtype.h"

namespace zoro {

enum class OptimizerKind : std::uint8_t { kAdam, kAdamW, kAdagrad, kLion };
const char* to_string(OptimizerKind kind);

struct LossScaleConfig {
  double init = 65536.0;
  int growth_interval = 2000;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  double min = 1.0;
};

struct Config {
  std::string device = "auto";

  DType dtype = DType::kBF16;
  DType grad_dtype = DType::kBF16;
  DType moments = DType::kF32;

  OptimizerKind optimizer = OptimizerKind::kAdamW;
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  double clip_norm = 1.0;

  LossScaleConfig loss_scale;

  std::size_t bucket_bytes = std::size_t{32} << 20;
  int bucket_count = 4;
  int grad_accum_steps = 1;
  bool dpu = false;
  int dpu_warmup_steps = 10;
  std::size_t host_budget_bytes = 0;
  int cpu_threads = 0;
  std::size_t chunk_elems = std::size_t{16} << 20;
  bool trace = false;

  // Parses and validates. `origin` names the source in messages (a path, "<string>").
  static Config from_toml(std::string_view text, std::string_view origin = "<string>");
  // Reads and parses a file; IoError when it cannot be read.
  static Config from_file(const std::string& path);

  // Throws InvalidArgument naming the first bad key and its value.
  void validate() const;
  // Whether dynamic loss scaling is in force (fp16 working weights or gradients).
  bool uses_loss_scaling() const { return dtype == DType::kF16 || grad_dtype == DType::kF16; }
  // host_budget_bytes, or 80% of physical memory when it is 0.
  std::size_t effective_host_budget() const;

  // The config as TOML (round-trips through from_toml).
  std::string to_toml() const;
  // A digest of every field that changes the numerics or the layout of the state (not the
  // device, thread count or trace): ranks must agree on it; checkpoints record it.
  std::uint64_t fingerprint() const;
};

}  // namespace zoro
