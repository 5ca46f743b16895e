// Engine::save_checkpoint and load_checkpoint (Note [Checkpoint] in checkpoint.cpp).
#include "runtime/checkpoint.h"
#include "runtime/engine.h"
#include "runtime/engine_impl.h"

namespace zoro {

void Engine::save_checkpoint(const std::string& dir) {
  Impl& m = *impl_;
  m.require_finalized("save_checkpoint()");
  ZORO_CHECK(!m.in_micro_step && m.micro_step == 0,
             "save_checkpoint() inside an optimizer step (micro-step "
                 << m.micro_step << " of " << m.cfg.grad_accum_steps << "): save between steps");
  // Finish the running update but keep a pending DPU upload pending: the device keeps the
  // one-step-stale weights an uninterrupted run would compute with (Note [Checkpoint]).
  if (m.running) m.last_outcome = m.collect_running();
  m.fold->synchronize();
  m.h2d->synchronize();
  m.compute->synchronize();
  const std::size_t n = m.total();
  CheckpointState st;
  st.layout_fingerprint = m.layout.fingerprint();
  st.config_fingerprint = m.cfg.fingerprint();
  st.config_toml = m.cfg.to_toml();
  for (const auto& slot : m.layout.slots()) st.params.push_back({slot.name, slot.shape});
  st.total_elems = n;
  st.steps_done = m.steps_done;
  st.optimizer_t = m.optimizer_t;
  {
    std::lock_guard lock(m.scaler_mutex);
    st.loss_scale = m.scaler->scale();
    st.good_steps = m.scaler->good_steps();
  }
  st.upload_pending = m.uploads_armed;
  std::vector<std::byte> working(n * m.wbytes());
  m.dev->copy(working.data(), m.working.data(), working.size());
  std::vector<CheckpointSection> sections;
  sections.push_back({"master", m.master.data(), n * 4});
  sections.push_back({"state0", m.state0.data(), m.state0.bytes()});
  if (m.state1) sections.push_back({"state1", m.state1.data(), m.state1.bytes()});
  sections.push_back({"working", working.data(), working.size()});
  write_checkpoint(dir, st, sections);
}

void Engine::load_checkpoint(const std::string& dir) {
  Impl& m = *impl_;
  m.require_finalized("load_checkpoint()");
  ZORO_CHECK(!m.in_micro_step && m.micro_step == 0,
             "load_checkpoint() inside an optimizer step: load between steps");
  m.drain();
  CheckpointState expect;
  expect.layout_fingerprint = m.layout.fingerprint();
  expect.config_fingerprint = m.cfg.fingerprint();
  expect.config_toml = m.cfg.to_toml();
  for (const auto& slot : m.layout.slots()) expect.params.push_back({slot.name, slot.shape});
  expect.total_elems = m.total();
  const std::size_t n = m.total();
  std::vector<std::byte> working(n * m.wbytes());
  std::vector<CheckpointSection> sections;
  sections.push_back({"master", m.master.data(), n * 4});
  sections.push_back({"state0", m.state0.data(), m.state0.bytes()});
  if (m.state1) sections.push_back({"state1", m.state1.data(), m.state1.bytes()});
  sections.push_back({"working", working.data(), working.size()});
  // read_checkpoint validates everything before it writes into any section.
  const CheckpointState st = read_checkpoint(dir, expect, sections);
  m.steps_done = st.steps_done;
  m.optimizer_t = st.optimizer_t;
  m.scaler->restore(st.loss_scale, st.good_steps);
  if (st.upload_pending) {
    auto record = std::make_shared<Impl::TimingRecord>();
    record->step = st.steps_done;
    m.pending_records.push_back(record);
    m.arm_uploads(true, std::move(record));
  }
  if (m.half_working()) round_to(m.cfg.dtype, m.master.as<float>(), m.staging.data(), n);
  m.dev->copy(m.working.data(), working.data(), working.size());
  // Accumulators start the next step afresh (first contributions store).
  std::fill(m.touched_serial.begin(), m.touched_serial.end(), 0);
  std::fill(m.norm_serial.begin(), m.norm_serial.end(), 0);
}

}  // namespace zoro
