#include "examples/zoro_train/model/param_store.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "examples/zoro_train/model/device_ops.h"
#include "runtime/base/check.h"
#include "runtime/base/half.h"
#include "runtime/base/units.h"
#include "runtime/checkpoint.h"

namespace zoro::train {

namespace {

std::vector<float> widen(DType dtype, const void* src, std::size_t n) {
  std::vector<float> out(n);
  const auto* h = static_cast<const std::uint16_t*>(src);
  for (std::size_t i = 0; i < n; ++i) {
    switch (dtype) {
      case DType::kF32:
        out[i] = static_cast<const float*>(src)[i];
        break;
      case DType::kBF16:
        out[i] = bf16_to_float(h[i]);
        break;
      case DType::kF16:
        out[i] = fp16_to_float(h[i]);
        break;
    }
  }
  return out;
}

// Engine bucket slots are aligned to 256 bytes (runtime/engine_impl.h kSlotAlignBytes).
constexpr std::size_t kSlotAlignBytes = 256;

}  // namespace

std::size_t min_bucket_bytes(const std::vector<TensorSpec>& tensors, DType grad_dtype) {
  std::size_t largest = 0;
  for (const auto& t : tensors) largest = std::max(largest, t.numel());
  return align_up(largest * size_of(grad_dtype), kSlotAlignBytes);
}

// ---- EngineParams ---------------------------------------------------------------------------

EngineParams::EngineParams(Config config, device::Device& device, std::vector<TensorSpec> tensors,
                           const TensorInit& init, comm::Communicator* comm)
    : tensors_(std::move(tensors)) {
  ZORO_CHECK(static_cast<bool>(init), "EngineParams: no init function");
  config.bucket_bytes =
      std::max(config.bucket_bytes, min_bucket_bytes(tensors_, config.grad_dtype));
  engine_ = comm != nullptr ? std::make_unique<Engine>(std::move(config), device, *comm)
                            : std::make_unique<Engine>(std::move(config), device);
  ops_ = detail::DeviceOps::create(device);
  for (std::size_t t = 0; t < tensors_.size(); ++t) {
    ids_.push_back(engine_->add_parameter(tensors_[t].name, tensors_[t].shape,
                                          [&](std::span<float> v) { init(t, v); }));
  }
  engine_->finalize();
}

EngineParams::~EngineParams() = default;

ParamId EngineParams::id(std::size_t t) const {
  ZORO_CHECK(t < ids_.size(),
             "tensor index " << t << " out of range (" << ids_.size() << " tensors)");
  return ids_[t];
}

const void* EngineParams::param_data(std::size_t t) { return engine_->param_data(id(t)); }

void EngineParams::hand_grad(std::size_t t, const float* grad) {
  const ParamId p = id(t);
  const std::size_t n = tensors_[t].numel();
  void* slot = engine_->grad_slot(p);
  device::Stream& stream = engine_->compute_stream();
  const DType gd = engine_->config().grad_dtype;
  if (gd == DType::kF32) {
    stream.copy_async(slot, grad, n * 4);
  } else {
    ops_->cast_from_f32(slot, gd, grad, n, stream);
  }
  engine_->grads_ready({p});
}

std::vector<float> EngineParams::master(std::size_t t) { return engine_->master(id(t)); }
std::vector<float> EngineParams::working(std::size_t t) { return engine_->working(id(t)); }

// ---- DeviceParams ---------------------------------------------------------------------------

DeviceParams::DeviceParams(Config config, device::Device& device, std::vector<TensorSpec> tensors,
                           const TensorInit& init)
    : config_(std::move(config)),
      device_(device),
      tensors_(std::move(tensors)),
      scaler_(config_.loss_scale, config_.uses_loss_scaling()) {
  config_.validate();
  ZORO_CHECK(static_cast<bool>(init), "DeviceParams: no init function");
  ZORO_CHECK(
      config_.optimizer == OptimizerKind::kAdamW || config_.optimizer == OptimizerKind::kAdam,
      "optimizer.name=" << to_string(config_.optimizer)
                        << ": without offload only adam and adamw run on the device");
  ZORO_CHECK(config_.moments == DType::kF32,
             "precision.moments=" << to_string(config_.moments)
                                  << ": without offload the moments are fp32");
  ZORO_CHECK(!config_.dpu, "offload.dpu=true needs the offload engine (not --no-offload)");
  lr_ = config_.lr;
  for (const auto& t : tensors_) layout_.add(t.name, t.shape);
  ops_ = detail::DeviceOps::create(device_);
  compute_ = device_.create_stream({"compute", device::StreamPriority::kHigh});

  using device::MemoryKind;
  const std::size_t n = layout_.total_elems();
  master_ = device_.allocate(MemoryKind::kDevice, n * 4);
  m_ = device_.allocate(MemoryKind::kDevice, n * 4);
  v_ = device_.allocate(MemoryKind::kDevice, n * 4);
  acc_ = device_.allocate(MemoryKind::kDevice, n * 4);
  if (config_.dtype != DType::kF32) {
    working_ = device_.allocate(MemoryKind::kDevice, n * size_of(config_.dtype));
  }
  norms_ = device_.allocate(MemoryKind::kDevice, std::max<std::size_t>(1, tensors_.size()) * 8);
  flags_ = device_.allocate(MemoryKind::kDevice, sizeof(int));
  touched_.assign(tensors_.size(), 0);

  // Initial values: built on the host (padding zero, Note [Flat alignment]) and copied in.
  std::vector<float> host(n, 0.f);
  for (std::size_t t = 0; t < tensors_.size(); ++t) {
    const auto& s = slot(t);
    init(t, std::span<float>(host.data() + s.offset, s.numel));
  }
  device_.copy(master_.data(), host.data(), n * 4);
  compute_->memset_async(m_.data(), 0, n * 4);
  compute_->memset_async(v_.data(), 0, n * 4);
  compute_->memset_async(acc_.data(), 0, n * 4);
  compute_->memset_async(flags_.data(), 0, sizeof(int));
  refresh_working();
  compute_->synchronize();
}

DeviceParams::~DeviceParams() {
  try {
    compute_->synchronize();
  } catch (const std::exception& e) {
    ZORO_LOG(kError) << "DeviceParams shutdown: " << e.what();
  }
}

const offload::ParamSlot& DeviceParams::slot(std::size_t t) const {
  ZORO_CHECK(t < tensors_.size(),
             "tensor index " << t << " out of range (" << tensors_.size() << " tensors)");
  return layout_.slot(ParamId{static_cast<std::uint32_t>(t)});
}

std::size_t DeviceParams::device_bytes() const {
  return master_.bytes() + m_.bytes() + v_.bytes() + acc_.bytes() + working_.bytes() +
         norms_.bytes() + flags_.bytes();
}

void DeviceParams::refresh_working() {
  if (config_.dtype == DType::kF32) return;
  ops_->cast_from_f32(working_.data(), config_.dtype, master_.as<float>(), layout_.total_elems(),
                      *compute_);
}

const void* DeviceParams::param_data(std::size_t t) {
  const auto& s = slot(t);
  if (config_.dtype == DType::kF32) return master_.as<float>() + s.offset;
  return working_.as<std::byte>() + s.offset * size_of(config_.dtype);
}

void DeviceParams::set_lr(double lr) {
  ZORO_CHECK(std::isfinite(lr) && lr >= 0, "set_lr(" << lr
                                                     << "): the learning rate must be finite "
                                                        "and >= 0");
  lr_ = lr;
}

void DeviceParams::begin_micro_step() {
  ZORO_CHECK(!in_micro_step_, "begin_micro_step() called twice without end_micro_step()");
  in_micro_step_ = true;
  if (micro_step_ == 0) std::fill(touched_.begin(), touched_.end(), 0);
  ++micro_step_;
}

void DeviceParams::hand_grad(std::size_t t, const float* grad) {
  ZORO_CHECK(in_micro_step_, "hand_grad() outside begin_micro_step()/end_micro_step()");
  const auto& s = slot(t);
  ops_->accumulate(acc_.as<float>() + s.offset, grad, s.numel, touched_[t] == 0, flags_.as<int>(),
                   *compute_);
  touched_[t] = 1;
}

StepReport DeviceParams::end_micro_step() {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  ZORO_CHECK(in_micro_step_, "end_micro_step() without begin_micro_step()");
  in_micro_step_ = false;
  StepReport r;
  r.micro_step = micro_step_;
  if (micro_step_ < config_.grad_accum_steps) {
    r.step = steps_done_;
    r.loss_scale = scaler_.scale();
    return r;
  }
  micro_step_ = 0;
  r.boundary = true;
  // Note [Store semantics]: tensors without a gradient get a zero one; each tensor's sum of
  // squares of its accumulated gradient, then the global norm in registration order.
  for (std::size_t t = 0; t < tensors_.size(); ++t) {
    const auto& s = slot(t);
    float* a = acc_.as<float>() + s.offset;
    if (touched_[t] == 0) compute_->memset_async(a, 0, s.numel * 4);
    ops_->sum_squares(norms_.as<double>() + t, a, s.numel, *compute_);
  }
  compute_->synchronize();
  std::vector<double> norms(tensors_.size());
  int non_finite = 0;
  device_.copy(norms.data(), norms_.data(), norms.size() * 8);
  device_.copy(&non_finite, flags_.data(), sizeof(int));
  if (non_finite != 0) compute_->memset_async(flags_.data(), 0, sizeof(int));
  double total_sq = 0;
  for (double v : norms) total_sq += v;
  const double scale = scaler_.scale();
  r.grad_norm = std::sqrt(total_sq) / scale;
  r.overflow = non_finite != 0 || !std::isfinite(r.grad_norm);
  r.applied = scaler_.update(r.overflow);
  ++steps_done_;
  r.step = steps_done_;
  if (r.applied) {
    if (config_.clip_norm > 0)
      r.clip_factor = std::min(1.0, config_.clip_norm / (r.grad_norm + 1e-6));
    ++optimizer_t_;
    kernels::ref::AdamWConfig c;
    c.lr = static_cast<float>(lr_);
    c.beta1 = static_cast<float>(config_.beta1);
    c.beta2 = static_cast<float>(config_.beta2);
    c.eps = static_cast<float>(config_.eps);
    c.weight_decay = static_cast<float>(config_.weight_decay);
    c.decoupled_weight_decay = config_.optimizer == OptimizerKind::kAdamW;
    const std::size_t n = layout_.total_elems();
    const bool bf16 = config_.dtype == DType::kBF16;
    ops_->adamw(master_.as<float>(), m_.as<float>(), v_.as<float>(), acc_.as<float>(),
                bf16 ? working_.as<std::uint16_t>() : nullptr, n, c, optimizer_t_,
                static_cast<float>(r.clip_factor / scale), *compute_);
    if (config_.dtype == DType::kF16) refresh_working();
  }
  r.loss_scale = scaler_.scale();
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  r.update_ms = ms;
  r.end_step_ms = ms;
  return r;
}

void DeviceParams::flush() { compute_->synchronize(); }

std::vector<float> DeviceParams::master(std::size_t t) {
  flush();
  const auto& s = slot(t);
  std::vector<float> out(s.numel);
  device_.copy(out.data(), master_.as<float>() + s.offset, s.numel * 4);
  return out;
}

std::vector<float> DeviceParams::working(std::size_t t) {
  flush();
  const auto& s = slot(t);
  const std::size_t wb = size_of(config_.dtype);
  std::vector<std::byte> raw(s.numel * wb);
  device_.copy(raw.data(), static_cast<const std::byte*>(param_data(t)), raw.size());
  return widen(config_.dtype, raw.data(), s.numel);
}

void DeviceParams::save(const std::string& dir) {
  ZORO_CHECK(!in_micro_step_ && micro_step_ == 0,
             "save() inside an optimizer step (micro-step "
                 << micro_step_ << " of " << config_.grad_accum_steps << "): save between steps");
  flush();
  const std::size_t n = layout_.total_elems();
  CheckpointState st;
  st.layout_fingerprint = layout_.fingerprint();
  st.config_fingerprint = config_.fingerprint();
  st.config_toml = config_.to_toml();
  for (const auto& s : layout_.slots()) st.params.push_back({s.name, s.shape});
  st.total_elems = n;
  st.steps_done = steps_done_;
  st.optimizer_t = optimizer_t_;
  st.loss_scale = scaler_.scale();
  st.good_steps = scaler_.good_steps();
  const std::size_t wb = size_of(config_.dtype);
  std::vector<float> master(n), m(n), v(n);
  std::vector<std::byte> working(n * wb);
  device_.copy(master.data(), master_.data(), n * 4);
  device_.copy(m.data(), m_.data(), n * 4);
  device_.copy(v.data(), v_.data(), n * 4);
  device_.copy(working.data(), config_.dtype == DType::kF32 ? master_.data() : working_.data(),
               working.size());
  write_checkpoint(dir, st,
                   {{"master", master.data(), n * 4},
                    {"state0", m.data(), n * 4},
                    {"state1", v.data(), n * 4},
                    {"working", working.data(), working.size()}});
}

void DeviceParams::load(const std::string& dir) {
  ZORO_CHECK(!in_micro_step_ && micro_step_ == 0, "load() inside an optimizer step");
  flush();
  const std::size_t n = layout_.total_elems();
  CheckpointState expect;
  expect.layout_fingerprint = layout_.fingerprint();
  expect.config_fingerprint = config_.fingerprint();
  expect.config_toml = config_.to_toml();
  for (const auto& s : layout_.slots()) expect.params.push_back({s.name, s.shape});
  expect.total_elems = n;
  const std::size_t wb = size_of(config_.dtype);
  std::vector<float> master(n), m(n), v(n);
  std::vector<std::byte> working(n * wb);
  const CheckpointState st = read_checkpoint(dir, expect,
                                             {{"master", master.data(), n * 4},
                                              {"state0", m.data(), n * 4},
                                              {"state1", v.data(), n * 4},
                                              {"working", working.data(), working.size()}});
  device_.copy(master_.data(), master.data(), n * 4);
  device_.copy(m_.data(), m.data(), n * 4);
  device_.copy(v_.data(), v.data(), n * 4);
  if (config_.dtype != DType::kF32) device_.copy(working_.data(), working.data(), working.size());
  steps_done_ = st.steps_done;
  optimizer_t_ = st.optimizer_t;
  scaler_.restore(st.loss_scale, st.good_steps);
}

}  // namespace zoro::train
