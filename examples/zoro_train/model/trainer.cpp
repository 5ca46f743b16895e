#include "examples/zoro_train/model/trainer.h"

#include <chrono>

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
  double loss_sum = 0;
  for (const DeviceBatch& batch : micro_batches) {
    const auto tc = Clock::now();
    params.begin_micro_step();
    model_.forward_backward(batch, dloss);
    // Waiting here for the compute stream costs no overlap: the gradient copies, folds and
    // (with DPU) the previous update keep running on their own streams and threads.
    for (double l : model_.take_losses()) loss_sum += l;
    r.compute_ms += ms_since(tc);
    const auto to = Clock::now();
    r.report = params.end_micro_step();
    r.optimizer_ms += ms_since(to);
    r.tokens += static_cast<std::size_t>(batch.B) * static_cast<std::size_t>(batch.T);
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
