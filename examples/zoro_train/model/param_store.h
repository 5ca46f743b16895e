// ParamStore: where the model's parameters live, and what happens to their gradients. The
// model (gpt.h) computes against this one interface; two implementations:
//
//   EngineParams  the offload engine (runtime/engine.h): fp32 master weights, Adam moments
//                 and the gradient accumulator in pinned host memory; working weights and a
//                 ring of gradient buckets on the device. Each gradient the model hands over
//                 is written into its engine bucket slot (cast to grad_dtype) and released
//                 with grads_ready at once, so its copy down overlaps the rest of backward.
//   DeviceParams  the baseline without offload (zoro-train --no-offload): fp32 master,
//                 moments and gradient accumulator in device memory, AdamW on the device
//                 (kernels::ref::adamw_step on the host backend, kernels::cuda::adamw_step on
//                 CUDA), bit-identical to the engine's CPU optimizer with fp32 moments.
//
// Both follow the engine's semantics exactly (Note [Store semantics]), so that on the host
// backend with fp32 weights and gradients the two give bit-identical training runs.
//
// Note [Store semantics]:
// - Tensors are registered in gpt_tensors() order (Note [Tensor order]); a tensor index is
//   its position there. Working weights are config.dtype on the device.
// - A micro-step is begin_micro_step(), then hand_grad() once per tensor that has a gradient,
//   then end_micro_step(). hand_grad(t, g) takes the fp32 gradient g (device memory, written
//   by work already enqueued on compute_stream()) and consumes it with work enqueued on
//   compute_stream() before returning: g may be overwritten by work enqueued afterwards. It
//   also promises that work enqueued afterwards in this step no longer reads t's weights
//   (the engine's grads_ready contract: with DPU, new weights may arrive behind it).
// - Gradients of the micro-steps of an optimizer step are summed in fp32 (the first
//   contribution stored, later ones added); the last micro-step (config.grad_accum_steps)
//   ends the step: the global norm (per tensor the sum of squares of Note [Deterministic
//   norm] in offload/grad_fold.h, summed in registration order, divided by the loss scale),
//   clip factor min(1, clip_norm / (norm + 1e-6)), an Inf/NaN skips the step and lowers the
//   fp16 loss scale, else AdamW with grad_scale = clip / loss_scale.
// - The gradient of a scaled loss is expected when loss_scale() != 1 (fp16).
// - One difference: the engine rounds each gradient to grad_dtype on its way to the host;
//   DeviceParams accumulates the fp32 gradient as it is (it never crosses a link), so the two
//   agree bit for bit when grad_dtype is fp32, and within rounding otherwise. DeviceParams
//   reads the norm back at each step boundary (one wait for the compute stream per step).
//
// Threading: one host thread drives a store (the trainer's). Errors: zoro::Error family.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "examples/zoro_train/model/gpt_config.h"
#include "offload/layout.h"
#include "runtime/base/dtype.h"
#include "runtime/config.h"
#include "runtime/device/device.h"
#include "runtime/engine.h"
#include "runtime/loss_scaler.h"

namespace zoro::comm {
class Communicator;
}

namespace zoro::train {

namespace detail {
class DeviceOps;  // device_ops.h: the backend's elementwise work (casts, folds, AdamW)
}

// Fills tensor `tensor`'s initial fp32 values (values.size() == its numel).
using TensorInit = std::function<void(std::size_t tensor, std::span<float> values)>;

class ParamStore {
 public:
  virtual ~ParamStore() = default;

  virtual const std::vector<TensorSpec>& tensors() const = 0;
  virtual const Config& config() const = 0;
  DType dtype() const { return config().dtype; }
  virtual device::Device& device() = 0;
  // The stream the model computes on.
  virtual device::Stream& compute_stream() = 0;
  // Whether the optimizer state lives in host memory (the engine).
  virtual bool offloaded() const = 0;

  // Device pointer to tensor t's working weights (dtype(); 16-bit as raw bits).
  virtual const void* param_data(std::size_t t) = 0;

  // ---- a micro-step (Note [Store semantics]) ----
  virtual void begin_micro_step() = 0;
  virtual void hand_grad(std::size_t t, const float* grad) = 0;
  // On the last micro-step of an optimizer step: norm, clipping, update (report.boundary).
  virtual StepReport end_micro_step() = 0;
  // Multiply the loss by this before backward (1 unless fp16 loss scaling).
  virtual double loss_scale() const = 0;

  // The learning rate of the updates launched from now on (a schedule calls it per step).
  virtual void set_lr(double lr) = 0;
  // Optimizer steps ended so far (applied or skipped).
  virtual std::int64_t step() const = 0;
  // Waits until every update is applied and the device holds the new working weights.
  virtual void flush() = 0;

  // Tensor t's fp32 master weights (flushes first).
  virtual std::vector<float> master(std::size_t t) = 0;
  // Tensor t's working weights as on the device, widened to fp32 (flushes first).
  virtual std::vector<float> working(std::size_t t) = 0;

  // Checkpoints: atomically writes dir/zoro.ckpt; load refuses a foreign, truncated or
  // corrupted one naming the problem. Only between optimizer steps.
  virtual void save(const std::string& dir) = 0;
  virtual void load(const std::string& dir) = 0;

  // The engine, for EngineParams (plan printing, traces); nullptr otherwise.
  virtual Engine* engine() { return nullptr; }
};

// The smallest engine bucket that holds the largest tensor's gradient in `grad_dtype`.
std::size_t min_bucket_bytes(const std::vector<TensorSpec>& tensors, DType grad_dtype);

class EngineParams final : public ParamStore {
 public:
  // Registers every tensor with a new engine on `device` (which must outlive this), raising
  // config.offload bucket_bytes to min_bucket_bytes() when smaller, and finalizes it (memory
  // plan checks: OutOfMemory with the numbers when it does not fit). With `comm` (which must
  // outlive this), the engine is one rank of a data-parallel run (Note [Partitioned step] in
  // runtime/engine.h): every rank must construct it with the same model and config.
  EngineParams(Config config, device::Device& device, std::vector<TensorSpec> tensors,
               const TensorInit& init, comm::Communicator* comm = nullptr);
  ~EngineParams() override;

  const std::vector<TensorSpec>& tensors() const override { return tensors_; }
  const Config& config() const override { return engine_->config(); }
  device::Device& device() override { return engine_->device(); }
  device::Stream& compute_stream() override { return engine_->compute_stream(); }
  bool offloaded() const override { return true; }
  const void* param_data(std::size_t t) override;
  void begin_micro_step() override { engine_->begin_step(); }
  void hand_grad(std::size_t t, const float* grad) override;
  StepReport end_micro_step() override { return engine_->end_step(); }
  double loss_scale() const override { return engine_->loss_scale(); }
  void set_lr(double lr) override { engine_->set_lr(lr); }
  std::int64_t step() const override { return engine_->step(); }
  void flush() override { engine_->flush(); }
  std::vector<float> master(std::size_t t) override;
  std::vector<float> working(std::size_t t) override;
  void save(const std::string& dir) override { engine_->save_checkpoint(dir); }
  void load(const std::string& dir) override { engine_->load_checkpoint(dir); }
  Engine* engine() override { return engine_.get(); }

 private:
  ParamId id(std::size_t t) const;
  std::vector<TensorSpec> tensors_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<detail::DeviceOps> ops_;
  std::vector<ParamId> ids_;
};

class DeviceParams final : public ParamStore {
 public:
  // Allocates master, moments, accumulator and working weights on `device` (OutOfMemory
  // naming the numbers when they do not fit). Supports config.optimizer adam and adamw with
  // fp32 moments, and no DPU (InvalidArgument otherwise: those need the engine).
  DeviceParams(Config config, device::Device& device, std::vector<TensorSpec> tensors,
               const TensorInit& init);
  ~DeviceParams() override;

  const std::vector<TensorSpec>& tensors() const override { return tensors_; }
  const Config& config() const override { return config_; }
  device::Device& device() override { return device_; }
  device::Stream& compute_stream() override { return *compute_; }
  bool offloaded() const override { return false; }
  const void* param_data(std::size_t t) override;
  void begin_micro_step() override;
  void hand_grad(std::size_t t, const float* grad) override;
  StepReport end_micro_step() override;
  double loss_scale() const override { return scaler_.scale(); }
  void set_lr(double lr) override;
  std::int64_t step() const override { return steps_done_; }
  void flush() override;
  std::vector<float> master(std::size_t t) override;
  std::vector<float> working(std::size_t t) override;
  // The engine's checkpoint format (runtime/checkpoint.h) with the engine's flat layout and
  // sections, so the files of the two stores have the same shape.
  void save(const std::string& dir) override;
  void load(const std::string& dir) override;

  // Device bytes this store allocated.
  std::size_t device_bytes() const;

 private:
  void refresh_working();
  const offload::ParamSlot& slot(std::size_t t) const;

  Config config_;
  device::Device& device_;
  std::vector<TensorSpec> tensors_;
  offload::FlatLayout layout_;
  std::unique_ptr<device::Stream> compute_;
  std::unique_ptr<detail::DeviceOps> ops_;
  device::Buffer master_, m_, v_, acc_, working_;  // working_ empty for fp32 (the master)
  device::Buffer norms_;                           // per tensor sum of squares (double)
  device::Buffer flags_;                           // non-finite flag (int)
  std::vector<std::uint8_t> touched_;              // tensor got a gradient this step
  bool in_micro_step_ = false;
  int micro_step_ = 0;
  std::int64_t steps_done_ = 0;
  std::int64_t optimizer_t_ = 0;
  double lr_ = 0;
  LossScaler scaler_;
};

}  // namespace zoro::train
