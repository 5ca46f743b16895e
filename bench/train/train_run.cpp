#include "bench/train/train_run.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <sstream>

#include "bench/common/report.h"
#include "examples/zoro_train/model/gpt.h"
#include "examples/zoro_train/model/gpt_weights.h"
#include "examples/zoro_train/model/param_store.h"
#include "examples/zoro_train/model/trainer.h"
#include "runtime/base/error.h"
#include "runtime/base/units.h"
#include "runtime/config.h"

namespace zoro::bench {

namespace {

using zoro::train::DeviceBatch;
using zoro::train::GptConfig;

Config store_config(const device::Device& dev, const GptConfig& model, Mode mode, const Setting& s,
                    const RunOptions& o) {
  Config c;
  c.device = dev.info().spec;
  c.dtype = o.dtype;
  c.grad_dtype = o.dtype;
  c.optimizer = OptimizerKind::kAdamW;
  c.lr = o.lr;
  c.clip_norm = 1.0;
  c.grad_accum_steps = s.grad_accum;
  c.dpu = mode == Mode::kOffloadDpu;
  c.dpu_warmup_steps = 1;
  c.cpu_threads = o.cpu_threads;
  c.trace = false;
  // As zoro-train sizes them: about a quarter of the gradient per bucket, at most the default
  // (EngineParams raises it to the largest tensor's gradient).
  const std::size_t grad_bytes = model.num_params() * size_of(c.grad_dtype);
  c.bucket_bytes = std::min(c.bucket_bytes, align_up(grad_bytes / 4 + 1, std::size_t{1} << 16));
  c.validate();
  return c;
}

// grad_accum micro-batches of random tokens, inputs then targets, in one device buffer.
struct Batches {
  device::Buffer tokens;
  std::vector<DeviceBatch> micro;
};

Batches make_batches(device::Device& dev, const GptConfig& model, const Setting& s,
                     std::uint64_t seed) {
  const std::size_t per = static_cast<std::size_t>(s.micro_batch) * s.seq_len;
  const std::size_t n = 2 * per * static_cast<std::size_t>(s.grad_accum);
  std::vector<std::int32_t> host(n);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int32_t> token(0, model.vocab - 1);
  for (auto& t : host) t = token(rng);
  Batches b;
  b.tokens = dev.allocate(device::MemoryKind::kDevice, n * sizeof(std::int32_t));
  dev.copy(b.tokens.data(), host.data(), n * sizeof(std::int32_t));
  const auto* base = static_cast<const std::int32_t*>(b.tokens.data());
  for (int m = 0; m < s.grad_accum; ++m) {
    const std::int32_t* in = base + 2 * per * static_cast<std::size_t>(m);
    b.micro.push_back({in, in + per, s.micro_batch, s.seq_len});
  }
  return b;
}

std::optional<double> median_of(const std::vector<double>& v) {
  if (v.empty()) return std::nullopt;
  return median(v);
}

}  // namespace

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::kOffload:
      return "offload (sync)";
    case Mode::kOffloadDpu:
      return "offload + DPU";
    case Mode::kNoOffload:
      return "no offload";
  }
  return "?";
}

const char* mode_key(Mode mode) {
  switch (mode) {
    case Mode::kOffload:
      return "offload";
    case Mode::kOffloadDpu:
      return "dpu";
    case Mode::kNoOffload:
      return "no_offload";
  }
  return "?";
}

std::string Setting::to_string() const {
  std::ostringstream s;
  s << micro_batch << "x" << seq_len << "x" << grad_accum;
  return s.str();
}

RunResult run_mode(device::Device& dev, const GptConfig& model, Mode mode, const Setting& setting,
                   const RunOptions& o, bool require_finite_loss) {
  RunResult r;
  dev.synchronize();
  dev.reset_peak(device::MemoryKind::kDevice);
  dev.reset_peak(device::MemoryKind::kPinnedHost);
  StepSamples& t = r.samples;
  try {
    const Config cfg = store_config(dev, model, mode, setting, o);
    const zoro::train::TensorInit init = zoro::train::gpt2_init(model, o.seed);
    std::unique_ptr<zoro::train::ParamStore> store;
    if (mode == Mode::kNoOffload) {
      store = std::make_unique<zoro::train::DeviceParams>(cfg, dev, zoro::train::gpt_tensors(model),
                                                          init);
    } else {
      store = std::make_unique<zoro::train::EngineParams>(cfg, dev, zoro::train::gpt_tensors(model),
                                                          init);
    }
    zoro::train::GptOptions go;
    go.max_batch = setting.micro_batch;
    go.seq_len = setting.seq_len;
    zoro::train::Gpt gpt(model, *store, go);
    zoro::train::Trainer trainer(gpt);
    const Batches batches = make_batches(dev, model, setting, o.seed);
    const int total = o.warmup_steps + o.timed_steps;
    for (int i = 0; i < total; ++i) {
      const zoro::train::StepResult s = trainer.step(batches.micro);
      r.losses.push_back(s.loss);
      if (require_finite_loss && !std::isfinite(s.loss)) {
        std::ostringstream why;
        why << "the loss is " << s.loss << " at step " << i + 1;
        r.fits = false;
        r.failure = why.str();
        break;
      }
      if (i < o.warmup_steps) continue;
      t.step.push_back(s.step_ms);
      t.compute.push_back(s.compute_ms);
      t.optimizer.push_back(s.optimizer_ms);
      if (s.report.deferred) ++r.deferred_steps;
      if (s.report.timing) {
        t.exposed.push_back(s.report.timing->exposed_ms);
        t.d2h.push_back(s.report.timing->d2h_ms);
        t.h2d.push_back(s.report.timing->h2d_ms);
        t.update.push_back(s.report.timing->update_ms);
      }
    }
    trainer.flush();
    dev.synchronize();
    r.device_peak_bytes = dev.memory_stats(device::MemoryKind::kDevice).peak_bytes;
    r.pinned_host_peak_bytes = dev.memory_stats(device::MemoryKind::kPinnedHost).peak_bytes;
  } catch (const OutOfMemory& e) {
    r.fits = false;
    r.failure = e.what();
  }
  summarize(r, model, setting);
  return r;
}

void StepSamples::append(const StepSamples& o) {
  auto add = [](std::vector<double>& to, const std::vector<double>& from) {
    to.insert(to.end(), from.begin(), from.end());
  };
  add(step, o.step);
  add(compute, o.compute);
  add(optimizer, o.optimizer);
  add(exposed, o.exposed);
  add(d2h, o.d2h);
  add(h2d, o.h2d);
  add(update, o.update);
}

void summarize(RunResult& r, const GptConfig& model, const Setting& setting) {
  const StepSamples& t = r.samples;
  if (!r.fits || t.step.empty()) return;
  r.step_ms = median(t.step);
  r.compute_ms = median(t.compute);
  r.optimizer_ms = median(t.optimizer);
  r.exposed_ms = median_of(t.exposed);
  r.d2h_ms = median_of(t.d2h);
  r.h2d_ms = median_of(t.h2d);
  r.update_ms = median_of(t.update);
  r.tokens_per_s = static_cast<double>(setting.tokens()) / (r.step_ms / 1e3);
  r.tflops = model.flops_per_token(setting.seq_len) * r.tokens_per_s / 1e12;
}

void merge(RunResult& into, const RunResult& later, const GptConfig& model,
           const Setting& setting) {
  if (!into.fits) return;
  if (!later.fits) {
    into = later;
    return;
  }
  into.samples.append(later.samples);
  into.device_peak_bytes = std::max(into.device_peak_bytes, later.device_peak_bytes);
  into.pinned_host_peak_bytes = std::max(into.pinned_host_peak_bytes, later.pinned_host_peak_bytes);
  into.losses.insert(into.losses.end(), later.losses.begin(), later.losses.end());
  into.deferred_steps += later.deferred_steps;
  summarize(into, model, setting);
}

}  // namespace zoro::bench
