// Engine::save_checkpoint and load_checkpoint (Note [Checkpoint] in checkpoint.cpp).
//
// Note [Partitioned checkpoint]: with N > 1 ranks each rank saves what only it holds — the
// master, optimizer state and its slice of the working weights, for its shard — to its own
// rank file, and rank 0 writes dir/manifest.txt (world size, fingerprints, step, and the name
// of every rank file). A save must never leave the directory without a loadable checkpoint,
// as the single-rank file's atomic rename never does, so no save writes over a file that the
// manifest names. Each save takes a new generation G, one past the manifest's and every rank
// file's present (next_checkpoint_generation; saving twice at one step, or over the files of
// an interrupted save, therefore writes new names too), and is four moves, each closed by an
// agreement of every rank (a blocking verify_agreement, which is also a barrier):
//   1. rank 0 creates the directory; every rank computes G, and the ranks check they agree on
//      it (a directory that is not shared reads differently: the save fails);
//   2. every rank writes dir/rank-<r>-of-<N>.step-<S>.gen-<G>.ckpt atomically;
//   3. rank 0 replaces the manifest atomically by one naming exactly those files: the commit;
//   4. rank 0 removes every other rank file (older saves, an interrupted one's, another world
//      size's) and the temporaries of interrupted writes, best effort (a failure is logged).
// A save killed before 3 leaves the old manifest and the files it names untouched, beside
// stray files of no manifest; one killed during 4 leaves the new checkpoint complete. Either
// way the next successful save removes the leftovers. Load reads the manifest (refusing another
// world size: resharding is not supported yet) and opens exactly the file it names for this
// rank (a manifest of before generations names rank-<r>-of-<N>.ckpt: it still loads), which
// each rank verifies completely, step included; the ranks agree that all succeeded before any
// of them writes into its state, so a missing or corrupt file on one rank (named with its
// rank) makes every rank throw with nothing changed. The working weights are then gathered
// from their owners, as after an update.
#include <filesystem>

#include "runtime/checkpoint.h"
#include "runtime/engine.h"
#include "runtime/engine_impl.h"

namespace zoro {

namespace {

// Runs `fn` on this rank, then every rank learns whether it succeeded everywhere (a blocking
// agreement): the rank whose `fn` threw rethrows its error, and the others throw an error
// naming `what` and the ranks that failed.
void on_every_rank(comm::Communicator& comm, const std::string& what,
                   const std::function<void()>& fn) {
  std::exception_ptr error;
  try {
    fn();
  } catch (...) {
    error = std::current_exception();
  }
  std::string others;
  try {
    comm.verify_agreement(error ? 1 : 0, what + " succeeded (1: failed)");
  } catch (const InvalidArgument& e) {
    others = e.what();
  }
  if (error) std::rethrow_exception(error);
  if (!others.empty()) ZORO_THROW(IoError, what << " failed on another rank: " << others);
}

}  // namespace

void Engine::save_checkpoint(const std::string& dir) {
  impl_->guard_backend([&] { save_checkpoint_impl(dir); });
}

void Engine::save_checkpoint_impl(const std::string& dir) {
  Impl& m = *impl_;
  m.require_finalized("save_checkpoint()");
  ZORO_CHECK(!m.in_micro_step && m.micro_step == 0,
             "save_checkpoint() inside an optimizer step (micro-step "
                 << m.micro_step << " of " << m.cfg.grad_accum_steps << "): save between steps");
  // Finish the running update but keep a pending DPU upload pending: the device keeps the
  // one-step-stale weights an uninterrupted run would compute with (Note [Checkpoint]).
  if (m.running) m.last_outcome = m.collect_running();
  // The run that saved continues with the scale the resumed one starts with (Note [Step loss
  // scale]).
  m.refresh_told_scale();
  m.fold->synchronize();
  m.h2d->synchronize();
  if (m.comm_stream) m.comm_stream->synchronize();
  m.compute->synchronize();
  const std::size_t n = m.local();
  CheckpointState st;
  st.layout_fingerprint = m.layout.fingerprint();
  st.config_fingerprint = m.cfg.fingerprint();
  st.config_toml = m.cfg.to_toml();
  for (const auto& slot : m.layout.slots()) st.params.push_back({slot.name, slot.shape});
  st.total_elems = m.total();
  st.steps_done = m.steps_done;
  st.optimizer_t = m.optimizer_t;
  {
    std::lock_guard lock(m.scaler_mutex);
    st.loss_scale = m.scaler->scale();
    st.good_steps = m.scaler->good_steps();
  }
  st.upload_pending = m.uploads_armed;
  // This rank's slice of the working weights (every rank holds the same full copy).
  const std::size_t wb = m.wbytes();
  std::vector<std::byte> working(n * wb);
  m.dev->copy(working.data(), m.working.as<std::byte>() + m.shard.begin * wb, working.size());
  std::vector<CheckpointSection> sections;
  sections.push_back({"master", m.master.data(), n * 4});
  sections.push_back({"state0", m.state0.data(), m.state0.bytes()});
  if (m.state1) sections.push_back({"state1", m.state1.data(), m.state1.bytes()});
  sections.push_back({"working", working.data(), working.size()});
  if (!m.partitioned()) {
    write_checkpoint(dir, st, sections);
    return;
  }
  // Note [Partitioned checkpoint].
  st.world_size = m.world;
  st.rank = m.rank;
  st.shard_begin = m.shard.begin;
  st.shard_end = m.shard.end;
  comm::Communicator& comm = *m.comm;
  // Move 1.
  on_every_rank(comm, "preparing checkpoint directory '" + dir + "'", [&] {
    if (m.rank != 0) return;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      ZORO_THROW(IoError, "cannot create checkpoint directory '" << dir << "': " << ec.message());
    }
  });
  std::int64_t generation = 0;
  on_every_rank(comm, "choosing the generation of checkpoint '" + dir + "'",
                [&] { generation = next_checkpoint_generation(dir); });
  try {
    comm.verify_agreement(static_cast<std::uint64_t>(generation),
                          "the generation of the next save into checkpoint '" + dir + "'");
  } catch (const InvalidArgument& e) {
    ZORO_THROW(IoError, "the ranks see checkpoint directory '"
                            << dir << "' differently (is it shared by every rank?): " << e.what());
  }
  CheckpointManifest manifest{
      m.world, st.layout_fingerprint, st.config_fingerprint, st.steps_done, generation, {}};
  for (int r = 0; r < m.world; ++r) {
    manifest.files.push_back(rank_checkpoint_file(r, m.world, st.steps_done, generation));
  }
  // Move 2.
  on_every_rank(comm, "writing the rank files of checkpoint '" + dir + "'", [&] {
    try {
      write_checkpoint(dir, st, sections, manifest.files[static_cast<std::size_t>(m.rank)]);
    } catch (const IoError& e) {
      ZORO_THROW(IoError, "rank " << m.rank << ": " << e.what());
    }
  });
  // Move 3: the commit.
  on_every_rank(comm, "writing the manifest of checkpoint '" + dir + "'", [&] {
    if (m.rank == 0) write_manifest(dir, manifest);
  });
  // Move 4. The agreement after it makes the directory hold just this checkpoint on every
  // rank's return.
  if (m.rank == 0) remove_unlisted_rank_files(dir, manifest);
  comm.verify_agreement(0, "removing the older files of checkpoint '" + dir + "' ended");
}

void Engine::load_checkpoint(const std::string& dir) {
  impl_->guard_backend([&] { load_checkpoint_impl(dir); });
}

void Engine::load_checkpoint_impl(const std::string& dir) {
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
  const std::size_t n = m.local();
  const std::size_t wb = m.wbytes();
  std::vector<std::byte> working(n * wb);
  std::vector<CheckpointSection> sections;
  sections.push_back({"master", m.master.data(), n * 4});
  sections.push_back({"state0", m.state0.data(), m.state0.bytes()});
  if (m.state1) sections.push_back({"state1", m.state1.data(), m.state1.bytes()});
  sections.push_back({"working", working.data(), working.size()});
  const auto refuse_world = [&](int saved_world) {
    ZORO_THROW(InvalidArgument, "checkpoint '" << dir << "' was saved by " << saved_world
                                               << " rank(s) but this run has " << m.world
                                               << ": resharding is not supported yet");
  };
  CheckpointState st;
  if (!m.partitioned()) {
    std::error_code ec;
    if (!std::filesystem::exists(dir + "/" + kCheckpointFile, ec)) {
      if (const auto manifest = read_manifest(dir)) refuse_world(manifest->world_size);
    }
    // read_checkpoint validates everything before it writes into any section.
    st = read_checkpoint(dir, expect, sections);
  } else {
    // Note [Partitioned checkpoint].
    expect.world_size = m.world;
    expect.rank = m.rank;
    expect.shard_begin = m.shard.begin;
    expect.shard_end = m.shard.end;
    std::string file;  // as the manifest names it
    bool agreed = false;
    const auto agree = [&](bool ok) {
      agreed = true;
      try {
        m.comm->verify_agreement(
            ok ? 0 : 1, "loading checkpoint '" + dir + "' succeeded on every rank (1: failed)");
      } catch (const InvalidArgument& e) {
        if (ok)
          ZORO_THROW(IoError,
                     "another rank could not load checkpoint '" << dir << "': " << e.what());
      }
    };
    try {
      const auto manifest = read_manifest(dir);
      if (!manifest) {
        std::error_code ec;
        if (std::filesystem::exists(dir + "/" + kCheckpointFile, ec)) refuse_world(1);
        ZORO_THROW(IoError, "checkpoint '"
                                << dir << "' has no " << kManifestFile
                                << " (not a checkpoint, or its first save was interrupted)");
      }
      if (manifest->world_size != m.world) refuse_world(manifest->world_size);
      file = manifest->files[static_cast<std::size_t>(m.rank)];
      try {
        st = read_checkpoint(dir, expect, sections, file, [&](const CheckpointState& got) {
          ZORO_CHECK(got.steps_done == manifest->steps_done,
                     "checkpoint file '" << dir << "/" << file << "' is of step " << got.steps_done
                                         << " but the manifest of step " << manifest->steps_done);
          agree(true);
        });
      } catch (const Error& e) {
        if (agreed) throw;  // another rank's failure, already worded
        const std::string what = "rank " + std::to_string(m.rank) + " (" + file + "): " + e.what();
        if (dynamic_cast<const InvalidArgument*>(&e) != nullptr) {
          ZORO_THROW(InvalidArgument, what);
        }
        ZORO_THROW(IoError, what);
      }
    } catch (...) {
      if (!agreed) agree(false);
      throw;
    }
  }
  m.steps_done = st.steps_done;
  m.optimizer_t = st.optimizer_t;
  m.scaler->restore(st.loss_scale, st.good_steps);
  m.refresh_told_scale();
  if (st.upload_pending) {
    auto record = std::make_shared<Impl::TimingRecord>();
    record->step = st.steps_done;
    m.pending_records.push_back(record);
    m.arm_uploads(true, std::move(record));
  }
  if (m.half_working()) round_to(m.cfg.dtype, m.master.as<float>(), m.staging.data(), n);
  m.dev->copy(m.working.as<std::byte>() + m.shard.begin * wb, working.data(), working.size());
  if (m.partitioned()) {
    m.gather_working(nullptr);
    m.comm_stream->synchronize();
  }
  // Accumulators start the next step afresh (first contributions store).
  std::fill(m.touched_serial.begin(), m.touched_serial.end(), 0);
  std::fill(m.norm_serial.begin(), m.norm_serial.end(), 0);
}

}  // namespace zoro
