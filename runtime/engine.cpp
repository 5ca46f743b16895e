#include "runtime/engine.h"

#include <cmath>
#include <limits>

#include "runtime/engine_impl.h"

namespace zoro {

// ---- construction and registration ------------------------------------------------------

Engine::Engine(Config config) : impl_(std::make_unique<Impl>()) {
  config.validate();
  impl_->cfg = std::move(config);
  impl_->lr = impl_->cfg.lr;
  impl_->owned_device = device::open_device(impl_->cfg.device);
  impl_->dev = impl_->owned_device.get();
}

Engine::Engine(Config config, device::Device& device) : impl_(std::make_unique<Impl>()) {
  config.validate();
  impl_->cfg = std::move(config);
  impl_->lr = impl_->cfg.lr;
  impl_->dev = &device;
}

Engine::Engine(Config config, device::Device& device, comm::Communicator& comm)
    : Engine(std::move(config), device) {
  impl_->comm = &comm;
  impl_->world = comm.size();
  impl_->rank = comm.rank();
}

Engine::~Engine() {
  if (!impl_->finalized) return;
  try {
    impl_->drain();
  } catch (const std::exception& e) {
    ZORO_LOG(kError) << "engine shutdown: " << e.what();
  }
  impl_->quiesce();
}

ParamId Engine::add_parameter(std::string name, std::vector<std::int64_t> shape,
                              std::span<const float> init) {
  ZORO_CHECK(!impl_->finalized, "add_parameter('" << name << "') after finalize()");
  const std::size_t numel = offload::FlatLayout::checked_numel(name, shape);
  ZORO_CHECK(init.size() == numel, "parameter '" << name << "' has " << numel << " elements but "
                                                 << init.size() << " initial values were given");
  const ParamId id = impl_->layout.add(std::move(name), std::move(shape));
  impl_->init_values.emplace_back(init.begin(), init.end());
  return id;
}

ParamId Engine::add_parameter(std::string name, std::vector<std::int64_t> shape,
                              const std::function<void(std::span<float>)>& init) {
  ZORO_CHECK(static_cast<bool>(init), "add_parameter('" << name << "'): no init function");
  std::vector<float> values(offload::FlatLayout::checked_numel(name, shape));
  init(values);
  return add_parameter(std::move(name), std::move(shape), values);
}

offload::MemoryPlan Engine::preview_plan() const {
  return offload::MemoryPlan(impl_->plan_options());
}

void Engine::finalize() {
  Impl& m = *impl_;
  ZORO_CHECK(!m.finalized, "finalize() called twice");
  ZORO_CHECK(m.layout.size() > 0, "finalize(): no parameters registered");
  if (m.comm != nullptr) {
    // Every rank throws together here when any disagrees, so none is left waiting in a
    // collective.
    m.comm->verify_agreement(m.cfg.fingerprint(),
                             "the config fingerprint (optimizer, precision and pipeline "
                             "settings; Config::fingerprint)");
    m.comm->verify_agreement(m.layout.fingerprint(),
                             "the model layout fingerprint (parameter names, shapes and "
                             "registration order)");
  }
  m.shard = m.layout.shard(m.rank, m.world);
  m.shard_counts.clear();
  for (int r = 0; r < m.world; ++r) {
    const std::size_t elems = m.layout.shard(r, m.world).size();
    ZORO_CHECK(elems > 0, "the model's " << m.total() << " flat elements ("
                                         << m.total() / offload::kFlatAlignElems << " units of "
                                         << offload::kFlatAlignElems
                                         << ") are too few to give each of " << m.world
                                         << " ranks a shard (rank " << r << " gets none)");
    m.shard_counts.push_back(elems);
  }
  for (const auto& slot : m.layout.slots()) {
    const std::size_t bytes = align_up(slot.numel * m.gbytes(), kSlotAlignBytes);
    ZORO_CHECK(bytes <= m.cfg.bucket_bytes,
               "parameter '" << slot.name << "' needs a " << format_bytes(bytes)
                             << " gradient slot but offload.bucket_bytes is "
                             << format_bytes(m.cfg.bucket_bytes)
                             << "; raise bucket_bytes to at least the largest parameter");
  }
  m.plan.emplace(m.plan_options());
  m.plan->check_fits(m.dev->info().memory_capacity_bytes, m.cfg.effective_host_budget());
  ZORO_LOG(kInfo) << "memory plan:\n" << m.plan->to_string();

  using device::MemoryKind;
  const std::size_t n = m.local();  // host-side arrays: this rank's shard
  m.compute = m.dev->create_stream({"compute", device::StreamPriority::kHigh});
  m.d2h = m.dev->create_stream({"d2h", device::StreamPriority::kNormal});
  m.fold = m.dev->create_stream({"fold", device::StreamPriority::kNormal});
  m.h2d = m.dev->create_stream({"h2d", device::StreamPriority::kNormal});
  m.trace = m.dev->trace() != nullptr ? m.dev->trace() : &m.own_trace;
  if (m.cfg.trace) m.trace->set_enabled(true);

  m.working = m.dev->allocate(MemoryKind::kDevice, m.total() * m.wbytes());
  m.buckets = m.dev->allocate(MemoryKind::kDevice,
                              m.cfg.bucket_bytes * static_cast<std::size_t>(m.cfg.bucket_count));
  m.master = m.dev->allocate(MemoryKind::kPinnedHost, n * 4);
  const std::size_t state_bytes = n * size_of(m.cfg.moments);
  m.state0 = m.dev->allocate(MemoryKind::kPinnedHost, state_bytes);
  std::memset(m.state0.data(), 0, state_bytes);
  if (optimizer_states(m.cfg.optimizer) == 2) {
    m.state1 = m.dev->allocate(MemoryKind::kPinnedHost, state_bytes);
    std::memset(m.state1.data(), 0, state_bytes);
  }
  for (int i = 0; i < (m.cfg.dpu ? 2 : 1); ++i) {
    m.acc[i] = m.dev->allocate(MemoryKind::kPinnedHost, n * 4);
    std::memset(m.acc[i].data(), 0, n * 4);
  }
  m.landing = m.dev->allocate(MemoryKind::kPinnedHost,
                              m.cfg.bucket_bytes * static_cast<std::size_t>(m.cfg.bucket_count));
  if (m.half_working()) m.staging = m.dev->allocate(MemoryKind::kPinnedHost, n * m.wbytes());
  if (m.partitioned()) {
    m.comm_stream = m.dev->create_stream({"comm", device::StreamPriority::kNormal});
    m.sorted = m.dev->allocate(MemoryKind::kDevice, m.cfg.bucket_bytes);
    const auto world = static_cast<std::size_t>(m.world);
    m.exchange_dev = m.dev->allocate(MemoryKind::kDevice, world * sizeof(NormPartial));
    m.exchange_host =
        m.dev->allocate(MemoryKind::kPinnedHost, 2 * (1 + world) * sizeof(NormPartial));
    for (auto& e : m.exchanged) e = m.dev->create_event();
    m.gathered = m.dev->create_event();
  }

  float* master = m.master.as<float>();
  std::memset(master, 0, n * 4);  // padding stays zero (Note [Flat alignment])
  for (const auto& slot : m.layout.slots()) {
    const auto [lo, hi] = Impl::clip(slot.offset, slot.end(), m.shard);  // all of it for one rank
    const auto& init = m.init_values[slot.id.value];
    std::copy(init.begin() + static_cast<std::ptrdiff_t>(lo - slot.offset),
              init.begin() + static_cast<std::ptrdiff_t>(hi - slot.offset),
              master + (lo - m.shard.begin));
  }
  m.init_values.clear();
  m.init_values.shrink_to_fit();
  if (m.half_working()) round_to(m.cfg.dtype, master, m.staging.data(), n);

  m.ring.resize(static_cast<std::size_t>(m.cfg.bucket_count));
  for (auto& b : m.ring) {
    b.sealed = m.dev->create_event();
    b.copied = m.dev->create_event();
    b.folded = m.dev->create_event();
    if (m.partitioned()) b.reduced = m.dev->create_event();
  }
  const std::size_t params = m.layout.size();
  m.touched_serial.assign(params, 0);
  m.slotted_micro.assign(params, 0);
  m.norm_serial.assign(params, 0);
  for (int i = 0; i < 2; ++i) {
    m.norm_sq[i].assign(params, 0.0);
    m.folds_done[i] = m.dev->create_event();
  }
  m.h2d_done = m.dev->create_event();
  m.boundary = m.dev->create_event();
  m.build_chunk_grid();
  m.executor = std::make_unique<optim::CpuExecutor>(
      optim::CpuExecutor::Options{m.cfg.cpu_threads, m.dev->info().numa_node});
  m.scaler = std::make_unique<LossScaler>(m.cfg.loss_scale, m.cfg.uses_loss_scaling());
  m.told_scale = m.step_scale = m.scaler->scale();

  m.h2d->copy_async(m.working.as<std::byte>() + m.shard.begin * m.wbytes(), m.upload_source(),
                    n * m.wbytes());
  m.h2d_done->record(*m.h2d);
  m.compute->wait(*m.h2d_done);
  if (m.partitioned()) {
    m.gather_working(nullptr);  // each rank's shard of the initial weights to every rank
    m.comm_stream->synchronize();
  }
  m.h2d->synchronize();
  m.finalized = true;
}

bool Engine::finalized() const { return impl_->finalized; }

const offload::MemoryPlan& Engine::plan() const {
  impl_->require_finalized("plan()");
  return *impl_->plan;
}

const Config& Engine::config() const { return impl_->cfg; }
const offload::FlatLayout& Engine::layout() const { return impl_->layout; }
int Engine::rank() const { return impl_->rank; }
int Engine::world_size() const { return impl_->world; }
offload::FlatLayout::Range Engine::shard() const {
  impl_->require_finalized("shard()");
  return impl_->shard;
}
device::Device& Engine::device() { return *impl_->dev; }

device::Stream& Engine::compute_stream() {
  impl_->require_finalized("compute_stream()");
  return *impl_->compute;
}

void* Engine::param_data(ParamId p) {
  impl_->require_finalized("param_data()");
  const auto& slot = impl_->layout.slot(p);
  return impl_->working.as<std::byte>() + slot.offset * impl_->wbytes();
}

double Engine::loss_scale() const {
  if (!impl_->scaler) return impl_->cfg.uses_loss_scaling() ? impl_->cfg.loss_scale.init : 1.0;
  return impl_->told_scale;  // trainer thread only (Note [Step loss scale])
}

std::int64_t Engine::step() const { return impl_->steps_done; }

void Engine::set_lr(double lr) {
  ZORO_CHECK(std::isfinite(lr) && lr >= 0, "set_lr(" << lr
                                                     << "): the learning rate must be "
                                                        "finite and >= 0");
  impl_->lr = lr;
}

double Engine::lr() const { return impl_->lr; }

// ---- the step ---------------------------------------------------------------------------

void Engine::begin_step() {
  Impl& m = *impl_;
  m.require_finalized("begin_step()");
  ZORO_CHECK(!m.in_micro_step, "begin_step() called twice without end_step()");
  m.in_micro_step = true;
  ++m.micro_step;
  if (m.micro_step == 1) m.step_scale = m.told_scale;  // Note [Step loss scale]
  ++m.micro_serial;
  m.bytes_d2h_micro = 0;
}

void* Engine::grad_slot(ParamId p) {
  Impl& m = *impl_;
  ZORO_CHECK(m.in_micro_step, "grad_slot() outside begin_step()/end_step()");
  const auto& slot = m.layout.slot(p);
  ZORO_CHECK(m.slotted_micro[p.value] != m.micro_serial,
             "grad_slot('" << slot.name << "') called twice in one micro-step");
  const std::size_t bytes = slot.numel * m.gbytes();
  std::size_t offset = 0;
  if (m.open_bucket >= 0) {
    offset = align_up(m.ring[static_cast<std::size_t>(m.open_bucket)].fill_bytes, kSlotAlignBytes);
    if (offset + bytes > m.cfg.bucket_bytes) {
      m.seal_open_bucket(m.micro_step == m.cfg.grad_accum_steps);
      offset = 0;
    }
  }
  if (m.open_bucket < 0) m.open_next_bucket();
  auto& b = m.ring[static_cast<std::size_t>(m.open_bucket)];
  b.segments.push_back({p, offset, false});
  b.fill_bytes = offset + bytes;
  m.slotted_micro[p.value] = m.micro_serial;
  return m.bucket_device(m.open_bucket) + offset;
}

void Engine::grads_ready(std::span<const ParamId> params) {
  Impl& m = *impl_;
  ZORO_CHECK(m.in_micro_step, "grads_ready() outside begin_step()/end_step()");
  for (ParamId p : params) {
    const auto& slot = m.layout.slot(p);
    bool found = false;
    if (m.open_bucket >= 0) {
      for (auto& seg : m.ring[static_cast<std::size_t>(m.open_bucket)].segments) {
        if (seg.param == p) {
          ZORO_CHECK(!seg.ready, "grads_ready('" << slot.name << "') called twice");
          seg.ready = true;
          found = true;
        }
      }
    }
    ZORO_CHECK(found, "grads_ready('" << slot.name
                                      << "') without a grad_slot() for it in this micro-step "
                                         "(or after a later grad_slot() sealed its bucket)");
    if (m.micro_step == m.cfg.grad_accum_steps) m.release_param(p);
  }
}

StepReport Engine::end_step() {
  return impl_->guard_backend([&] { return end_step_impl(); });
}

StepReport Engine::end_step_impl() {
  Impl& m = *impl_;
  const auto t0 = Clock::now();
  ZORO_CHECK(m.in_micro_step, "end_step() without begin_step()");
  m.in_micro_step = false;
  const bool boundary = m.micro_step == m.cfg.grad_accum_steps;
  m.seal_open_bucket(boundary);
  StepReport r;
  r.micro_step = m.micro_step;
  r.bytes_d2h = m.bytes_d2h_micro;
  if (!boundary) {
    r.step = m.steps_done;
    r.loss_scale = loss_scale();
    r.end_step_ms = ms_since(t0);
    return r;
  }
  m.micro_step = 0;
  r.boundary = true;
  m.folds_done[m.parity_of(m.step_serial)]->record(*m.fold);
  m.boundary->record(*m.compute);
  Impl::TimingRecord& rec = m.current_record();
  rec.boundary = m.take_event();
  rec.boundary->record(*m.compute);
  const bool dpu_now = m.cfg.dpu && m.steps_done >= m.cfg.dpu_warmup_steps;
  Impl::UpdateJob job = m.make_job(!dpu_now);
  job.record = std::move(m.open_record);
  m.pending_records.push_back(job.record);
  ++m.step_serial;
  ++m.steps_done;
  r.step = m.steps_done;
  UpdateOutcome out;
  if (!dpu_now) {
    // Synchronous: any DPU work still in flight (a run that just left warm-up never has
    // any) is finished first so that the order of updates is kept.
    if (m.running) m.last_outcome = m.collect_running();
    r.bytes_h2d += m.finish_uploads();
    if (m.partitioned()) m.exchange_norms(job);
    m.fold->synchronize();  // rethrows a fold error here, on the trainer's thread
    if (m.partitioned()) m.comm_stream->synchronize();  // and a collective's error
    out = m.run_update(job);
    m.refresh_told_scale();  // the next step's (Note [Step loss scale])
    job.record->update_ms = out.update_ms;
    m.compute->wait(*m.h2d_done);  // the next forward sees the new weights
    if (m.partitioned() && out.applied) m.gather_working(job.record->done);
    job.record->closed = true;
  } else {
    // DPU (Note [DPU]): finish step n-1's update and the uploads its chunks did not get
    // during this backward, then launch this step's update in the background.
    if (m.running) m.last_outcome = m.collect_running();
    r.bytes_h2d += m.finish_uploads();
    // The next step's scale: that of the updates collected so far, read before this step's
    // update may change it (Note [Step loss scale]).
    m.refresh_told_scale();
    if (m.partitioned()) m.exchange_norms(job);  // issued here: the updater issues none
    m.arm_uploads(false, job.record);
    m.running.emplace(std::async(std::launch::async, [&m, job] { return m.run_update(job); }));
    out = m.last_outcome;  // the figures of the update that finished (one step behind)
    r.deferred = true;
  }
  r.applied = out.applied;
  r.overflow = out.overflow;
  r.grad_norm = out.grad_norm;
  r.clip_factor = out.clip_factor;
  r.update_ms = out.update_ms;
  r.wait_folds_ms = out.wait_folds_ms;
  r.bytes_h2d += out.bytes_h2d;
  r.loss_scale = loss_scale();
  m.harvest_timing();
  r.timing = m.latest_timing;
  r.end_step_ms = ms_since(t0);
  return r;
}

void Engine::flush() {
  impl_->require_finalized("flush()");
  ZORO_CHECK(!impl_->in_micro_step, "flush() inside a micro-step");
  impl_->guard_backend([&] { impl_->drain(); });
}

std::vector<double> Engine::all_reduce_scalars(std::span<const double> values, comm::ReduceOp op) {
  Impl& m = *impl_;
  m.require_finalized("all_reduce_scalars()");
  ZORO_CHECK(!m.in_micro_step,
             "all_reduce_scalars() inside a micro-step: call it between end_step() and the "
             "next begin_step()");
  ZORO_CHECK(op == comm::ReduceOp::kSum || op == comm::ReduceOp::kMax,
             "all_reduce_scalars(): unknown ReduceOp " << static_cast<int>(op));
  std::vector<double> out(values.begin(), values.end());
  if (!m.partitioned() || values.empty()) return out;  // every rank passes as many values
  return m.guard_backend([&] {
    // The norm exchange's way (Note [Partitioned step]): every rank's doubles gathered as raw
    // 16-bit words, so they arrive unchanged, then reduced here in rank order in double, so
    // every rank computes the same bits. On the comm stream, behind the engine's earlier
    // collectives; the staging is reused by the next call, after this one's synchronize.
    const std::size_t n = values.size();
    const std::size_t bytes = n * sizeof(double);
    const auto world = static_cast<std::size_t>(m.world);
    if (m.scalars_dev.bytes() < world * bytes) {
      m.scalars_dev = m.dev->allocate(device::MemoryKind::kDevice, world * bytes);
      m.scalars_host = m.dev->allocate(device::MemoryKind::kPinnedHost, (1 + world) * bytes);
    }
    auto* send = m.scalars_host.as<double>();
    const double* recv = send + n;
    std::memcpy(send, values.data(), bytes);
    std::byte* mine = m.scalars_dev.as<std::byte>() + static_cast<std::size_t>(m.rank) * bytes;
    m.comm_stream->copy_async(mine, send, bytes);
    const std::vector<std::size_t> counts(world, bytes / 2);
    m.comm->all_gather(mine, m.scalars_dev.data(), counts, DType::kBF16, *m.comm_stream);
    m.comm_stream->copy_async(m.scalars_host.as<double>() + n, m.scalars_dev.data(), world * bytes);
    m.comm_stream->synchronize();
    for (std::size_t i = 0; i < n; ++i) {
      double acc = recv[i];  // rank 0's
      for (std::size_t r = 1; r < world; ++r) {
        const double v = recv[r * n + i];
        if (op == comm::ReduceOp::kSum) {
          acc += v;
        } else if (std::isnan(acc) || std::isnan(v)) {
          acc = std::numeric_limits<double>::quiet_NaN();
        } else {
          acc = std::max(acc, v);
        }
      }
      out[i] = acc;
    }
    return out;
  });
}

// ---- inspection -------------------------------------------------------------------------

std::vector<float> Engine::master(ParamId p) {
  flush();
  if (impl_->partitioned()) {
    return impl_->guard_backend(
        [&] { return impl_->gather_param(p, impl_->master.data(), DType::kF32); });
  }
  const auto& s = impl_->layout.slot(p);
  const float* m = impl_->master.as<float>() + s.offset;
  return std::vector<float>(m, m + s.numel);
}

std::vector<float> Engine::working(ParamId p) {
  flush();
  const auto& s = impl_->layout.slot(p);
  const std::size_t wb = impl_->wbytes();
  std::vector<std::byte> raw(s.numel * wb);
  impl_->dev->copy(raw.data(), impl_->working.as<std::byte>() + s.offset * wb, raw.size());
  return widen(impl_->cfg.dtype, raw.data(), s.numel);
}

std::vector<float> Engine::moment(ParamId p, int which) {
  flush();
  ZORO_CHECK(which == 0 || which == 1, "moment(" << which << "): which must be 0 or 1");
  const auto& buf = which == 0 ? impl_->state0 : impl_->state1;
  if (!buf) return {};
  if (impl_->partitioned()) {
    return impl_->guard_backend(
        [&] { return impl_->gather_param(p, buf.data(), impl_->cfg.moments); });
  }
  const auto& s = impl_->layout.slot(p);
  const std::size_t sb = size_of(impl_->cfg.moments);
  return widen(impl_->cfg.moments, buf.as<std::byte>() + s.offset * sb, s.numel);
}

void Engine::set_after_chunk_upload_hook(std::function<void(std::size_t)> hook) {
  impl_->after_chunk_upload_hook = std::move(hook);
}

void Engine::set_update_start_hook(std::function<void(std::int64_t)> hook) {
  impl_->update_start_hook = std::move(hook);
}

// ---- timeline ---------------------------------------------------------------------------

device::Trace* Engine::trace() { return impl_->trace; }

void Engine::write_trace(const std::string& path) {
  ZORO_CHECK(impl_->trace != nullptr, "write_trace(): the engine is not finalized");
  impl_->trace->write_chrome_trace(path);
}

}  // namespace zoro
