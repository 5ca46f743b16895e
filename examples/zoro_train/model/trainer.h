// Trainer: one optimizer step of a Gpt on its ParamStore, as zoro-train's main loop drives it.
//
//   Trainer trainer(model);
//   trainer.set_lr(schedule(step));
//   StepResult r = trainer.step(micro_batches);   // grad_accum_steps micro-batches
//
// A step enqueues, per micro-batch, begin_micro_step / forward+backward (the gradient of
// dloss = loss_scale / micro-batches times the mean loss: the step's objective is the mean
// over micro-batches, scaled for fp16) / end_micro_step, without waiting for the device in
// between; it reads the micro-batches' losses once, after the last backward; the last
// end_micro_step ends the optimizer step (norm, clipping, overflow, update: Note [Store
// semantics] in param_store.h). Everything
// store-specific (offload, DPU, no offload) is in the store's config, so this loop is the
// same for every mode.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "examples/zoro_train/model/gpt.h"
#include "runtime/engine.h"

namespace zoro::train {

struct StepResult {
  std::int64_t step = 0;  // optimizer steps ended so far
  double loss = 0;        // mean of the micro-batches' mean losses
  double grad_norm = 0;   // of the unscaled gradient, before clipping (DPU: one step behind)
  double clip_factor = 1;
  bool applied = false;    // the update was applied (DPU: launched, see report.deferred)
  bool overflow = false;   // an Inf/NaN gradient skipped the step (fp16 lowers the scale)
  double loss_scale = 1;   // in force for the next step
  std::size_t tokens = 0;  // tokens processed (inputs) in this step
  // Host wall times (milliseconds). compute_ms: from the step's first enqueue until the compute
  // stream finished every micro-batch's forward and backward (their losses read: the step's one
  // wait for it). optimizer_ms: the stores' end_micro_step calls, the boundary's end-of-step
  // work (CPU update or its launch, or the device update) included; those of earlier
  // micro-steps run while the device computes, so the two may overlap. step_ms: the whole step.
  double compute_ms = 0;
  double optimizer_ms = 0;
  double step_ms = 0;
  StepReport report;  // the store's report of the last micro-step (the engine's, offloading)
};

class Trainer {
 public:
  explicit Trainer(Gpt& model);

  // One optimizer step over exactly config().grad_accum_steps micro-batches (InvalidArgument
  // otherwise). Rethrows a kernel's or the store's error.
  StepResult step(std::span<const DeviceBatch> micro_batches);
  // The mean loss of a batch without a gradient (evaluation).
  double eval_loss(const DeviceBatch& batch);

  void set_lr(double lr) { model_.params().set_lr(lr); }
  void save(const std::string& dir) { model_.params().save(dir); }
  void load(const std::string& dir) { model_.params().load(dir); }
  void flush() { model_.params().flush(); }
  Gpt& model() { return model_; }

 private:
  Gpt& model_;
};

}  // namespace zoro::train
