#include "examples/zoro_train/model/trainer.h"

#include <chrono>
#include <vector>

#include "runtime/base/check.h"

namespace zoro::train {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
}  // namespace

Trainer::Trainer(Gpt& model) : model_(model) {}

StepResult Trainer::step(std::span<const DeviceBatch> micro_batches) {
  ParamStore& params = model_.params();
  const int accum = params.config().grad_accum_steps;
  ZORO_CHECK(
      static_cast<int>(micro_batches.size()) == accum,
      "step(): " << micro_batches.size() << " micro-batches given, grad_accum_steps is " << accum);
  const auto t0 = Clock::now();
  StepResult r;
  const float dloss = static_cast<float>(params.loss_scale() / accum);
  // Every micro-batch is enqueued without waiting for the device, so the host runs ahead of
  // the compute stream. The losses are read (the step's one wait for the compute stream) after
  // the last backward is enqueued and before the boundary's end_micro_step: what the boundary
  // ships (the last gradients, wte's last of all) is the compute stream's last work anyway, so
  // the wait costs about the host's wake-up, and compute_ms stays free of the update. A step
  // of more micro-batches than the model keeps losses for (Gpt::kMaxPendingLosses) also reads them
  // every that many.
  std::vector<double> losses;
  losses.reserve(static_cast<std::size_t>(accum));
  auto read_losses = [&] {
    for (double l : model_.take_losses()) losses.push_back(l);
  };
  for (int i = 0; i < accum; ++i) {
    const DeviceBatch& batch = micro_batches[static_cast<std::size_t>(i)];
    params.begin_micro_step();
    model_.forward_backward(batch, dloss);
    r.tokens += static_cast<std::size_t>(batch.B) * static_cast<std::size_t>(batch.T);
    const bool last = i + 1 == accum;
    if (last || (i + 1) % Gpt::kMaxPendingLosses == 0) read_losses();
    if (last) r.compute_ms = ms_since(t0);
    const auto to = Clock::now();
    r.report = params.end_micro_step();
    r.optimizer_ms += ms_since(to);
  }
  // This step's are the last `accum` (a forward() with targets whose loss nobody took comes
  // first); summed in micro-batch order.
  ZORO_ASSERT(losses.size() >= static_cast<std::size_t>(accum));
  double loss_sum = 0;
  for (std::size_t i = losses.size() - static_cast<std::size_t>(accum); i < losses.size(); ++i) {
    loss_sum += losses[i];
  }
  r.loss = loss_sum / accum;
  r.step = r.report.step;
  r.grad_norm = r.report.grad_norm;
  r.clip_factor = r.report.clip_factor;
  r.applied = r.report.applied;
  r.overflow = r.report.overflow;
  r.loss_scale = r.report.loss_scale;
  r.step_ms = ms_since(t0);
  return r;
}

double Trainer::eval_loss(const DeviceBatch& batch) {
  ZORO_CHECK(batch.targets != nullptr, "eval_loss() needs targets");
  model_.forward(batch);
  const auto losses = model_.take_losses();
  ZORO_ASSERT(losses.size() == 1);
  return losses[0];
}

}  // namespace zoro::train
