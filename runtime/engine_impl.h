// Private to runtime/engine*.cpp: Engine::Impl, the engine's state and its pipeline
// machinery (Notes [Gradient path], [Step], [DPU], [DPU uploads] and [Partitioned step] in
// engine.h, and [Step timing]). Split from engine.cpp so that the public methods and the
// checkpoint methods live in files of their own; nothing outside runtime/ includes it (it is
// not installed).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <optional>
#include <utility>

#include "comm/communicator.h"
#include "offload/grad_fold.h"
#include "offload/optim/cpu_executor.h"
#include "offload/optim/cpu_optimizer.h"
#include "runtime/base/check.h"
#include "runtime/base/half.h"
#include "runtime/base/units.h"
#include "runtime/checkpoint.h"
#include "runtime/device/trace.h"
#include "runtime/loss_scaler.h"

namespace zoro {

namespace engine_detail {

using Clock = std::chrono::steady_clock;
inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

inline constexpr std::size_t kSlotAlignBytes = 256;

inline int optimizer_states(OptimizerKind kind) {
  return kind == OptimizerKind::kAdam || kind == OptimizerKind::kAdamW ? 2 : 1;
}

// fp32 -> the working dtype's bits, and back.
inline void round_to(DType dtype, const float* src, void* dst, std::size_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16: {
      auto* d = static_cast<std::uint16_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* d = static_cast<std::uint16_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) d[i] = float_to_fp16(src[i]);
      return;
    }
  }
}

inline std::vector<float> widen(DType dtype, const void* src, std::size_t n) {
  std::vector<float> out(n);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(out.data(), src, n * 4);
      break;
    case DType::kBF16:
      for (std::size_t i = 0; i < n; ++i)
        out[i] = bf16_to_float(static_cast<const std::uint16_t*>(src)[i]);
      break;
    case DType::kF16:
      for (std::size_t i = 0; i < n; ++i)
        out[i] = fp16_to_float(static_cast<const std::uint16_t*>(src)[i]);
      break;
  }
  return out;
}

// What an update produced; filled on the thread that ran it.
struct UpdateOutcome {
  bool applied = false;
  bool overflow = false;
  double grad_norm = 0;
  double clip_factor = 1;
  double update_ms = 0;
  double wait_folds_ms = 0;
  std::size_t bytes_h2d = 0;
};

// The norm exchange's record of one rank (Note [Partitioned step]): moved as raw bytes.
struct NormPartial {
  double sum_squares = 0;
  double non_finite = 0;  // 1 when an Inf/NaN was seen
};
static_assert(sizeof(NormPartial) == 16);
inline constexpr std::size_t kNormPartialHalves = sizeof(NormPartial) / 2;  // 16-bit elements

}  // namespace engine_detail

using namespace engine_detail;  // NOLINT: private header of runtime/engine*.cpp only

struct Engine::Impl {
  Config cfg;
  double lr = 0;  // of the next update (set_lr); cfg.lr at first
  std::unique_ptr<device::Device> owned_device;
  device::Device* dev = nullptr;
  offload::FlatLayout layout;
  // Many ranks (Note [Partitioned step]); world == 1 is the single-rank engine, unchanged.
  comm::Communicator* comm = nullptr;
  int world = 1;
  int rank = 0;
  offload::FlatLayout::Range shard;             // this rank's flat range (after finalize)
  std::vector<std::size_t> shard_counts;        // elements of every rank's shard
  std::vector<std::vector<float>> init_values;  // per parameter, until finalize
  std::optional<offload::MemoryPlan> plan;
  bool finalized = false;

  std::unique_ptr<device::Stream> compute, d2h, fold, h2d;
  std::unique_ptr<device::Stream> comm_stream;  // every collective (world > 1 only)
  device::Trace own_trace;  // host-worker spans when the device keeps no trace (CUDA)
  device::Trace* trace = nullptr;

  // Device memory.
  device::Buffer working;  // total_elems x size_of(dtype)
  device::Buffer buckets;  // bucket_count x bucket_bytes
  // Pinned host memory (flat, indexed like the layout; for many ranks, like the shard).
  device::Buffer master, state0, state1, staging, landing;
  device::Buffer acc[2];
  // World > 1: a bucket permuted by owner rank (device); the norm exchange (device: a
  // NormPartial per rank; pinned: per parity, this rank's then every rank's).
  device::Buffer sorted, exchange_dev, exchange_host;
  std::unique_ptr<device::Event> exchanged[2], gathered;

  // The bucket ring (trainer thread only, but for the events).
  struct Segment {
    ParamId param;
    std::size_t byte_offset = 0;
    bool ready = false;
  };
  struct Bucket {
    std::size_t fill_bytes = 0;
    std::vector<Segment> segments;
    std::unique_ptr<device::Event> sealed, copied, folded;
    std::unique_ptr<device::Event> reduced;  // world > 1: its reduce-scatter is done
  };
  std::vector<Bucket> ring;
  int open_bucket = -1;
  std::uint64_t buckets_used = 0;

  // Per parameter (trainer thread): the step serial that last slotted / folded it, and the
  // micro-step serial that last slotted it.
  std::vector<std::uint64_t> touched_serial;  // first contribution in step `serial`
  std::vector<std::uint64_t> slotted_micro;   // slotted in micro-step `micro_serial`
  std::vector<std::uint64_t> norm_serial;     // the norm was computed in the last micro-step

  // Per accumulator parity: written by folds, read by the update after the fold event.
  std::vector<double> norm_sq[2];
  bool non_finite[2] = {false, false};
  std::unique_ptr<device::Event> folds_done[2];

  // Step state (trainer thread).
  bool in_micro_step = false;
  int micro_step = 0;             // 1..grad_accum_steps while in a step
  std::uint64_t step_serial = 1;  // the optimizer step being accumulated (1-based)
  std::uint64_t micro_serial = 0;
  std::int64_t steps_done = 0;  // optimizer steps ended (applied or skipped)
  std::size_t bytes_d2h_micro = 0;

  // Optimizer state.
  std::unique_ptr<optim::CpuExecutor> executor;
  std::int64_t optimizer_t = 0;  // applied updates (bias correction); updater-owned
  mutable std::mutex scaler_mutex;
  std::unique_ptr<LossScaler> scaler;
  // Note [Step loss scale] (engine.h): the scale loss_scale() reports (trainer thread only;
  // refreshed from the scaler by refresh_told_scale()), and the one the step being accumulated
  // was scaled with (captured at its first begin_step; carried by its UpdateJob).
  double told_scale = 1;
  double step_scale = 1;

  // Note [Failing rank] (engine.h): a call threw BackendError.
  bool backend_failed = false;

  // all_reduce_scalars: device gather buffer and pinned staging (this rank's values, then every
  // rank's), grown to the largest call; one call at a time, each synchronized before returning.
  device::Buffer scalars_dev, scalars_host;

  // H2D: the last upload's completion, and the compute-side boundary event.
  std::unique_ptr<device::Event> h2d_done, boundary;
  // DPU: the update running on the updater thread.
  std::optional<std::future<UpdateOutcome>> running;
  UpdateOutcome last_outcome;
  std::function<void(std::size_t)> after_chunk_upload_hook;  // tests only
  std::function<void(std::int64_t)> update_start_hook;       // tests only

  // Note [Step timing]: each optimizer step gets a record of timing-event pairs around its
  // copies, the boundary event, and an event after its last weight copy. Records are read, in
  // step order, once every event in them has completed (query(), never a wait), and their
  // events go back to a pool. The bucket copies are recorded by the trainer thread; the weight
  // copies by whichever thread enqueues them (under upload_mutex for DPU).
  struct TimingRecord {
    std::int64_t step = 0;
    std::vector<std::pair<device::Event*, device::Event*>> d2h, h2d;
    device::Event* boundary = nullptr;
    device::Event* exposed_from = nullptr;  // DPU: the boundary of the step that uploaded
    device::Event* done = nullptr;
    std::size_t bytes_d2h = 0, bytes_h2d = 0;
    double update_ms = 0;
    bool closed = false;  // no more events will be added
  };
  std::mutex event_pool_mutex;
  std::vector<std::unique_ptr<device::Event>> event_pool_all;
  std::vector<device::Event*> event_pool_free;
  std::shared_ptr<TimingRecord> open_record;   // the step being accumulated
  std::shared_ptr<TimingRecord> armed_record;  // DPU: the update whose uploads are armed
  std::deque<std::shared_ptr<TimingRecord>> pending_records;
  std::optional<StepTiming> latest_timing;

  // DPU uploads (Note [DPU uploads]): the flat space in a fixed grid of chunks; a chunk's new
  // weights go up once the update has written it AND the current step's backward has released
  // every parameter overlapping it. Guarded by upload_mutex (trainer and updater threads).
  std::mutex upload_mutex;
  std::vector<optim::Range> chunks;
  std::vector<std::vector<std::uint32_t>> chunks_of_param;
  std::vector<int> params_in_chunk;
  struct ChunkState {
    bool updated = false;
    int unreleased = 0;
    bool uploaded = true;
  };
  std::vector<ChunkState> chunk_state;
  std::vector<std::unique_ptr<device::Event>> released;  // per chunk, on the compute stream
  bool uploads_armed = false;                            // an update's chunks are awaiting upload
  std::size_t uploaded_bytes = 0;                        // by the armed update so far

  // Accumulator parity of a step: DPU alternates two accumulators (Note [DPU]).
  int parity_of(std::uint64_t serial) const { return cfg.dpu ? static_cast<int>(serial & 1) : 0; }
  std::size_t wbytes() const { return size_of(cfg.dtype); }
  std::size_t gbytes() const { return size_of(cfg.grad_dtype); }
  bool half_working() const { return cfg.dtype != DType::kF32; }
  std::size_t total() const { return layout.total_elems(); }
  bool partitioned() const { return world > 1; }
  // Elements of the host-side arrays: this rank's shard.
  std::size_t local() const { return shard.size(); }

  void require_finalized(const char* what) const {
    ZORO_CHECK(finalized, what << ": the engine is not finalized (call finalize() first)");
  }

  offload::PlanOptions plan_options() const {
    offload::PlanOptions o;
    o.total_elems = std::max<std::size_t>(total(), offload::kFlatAlignElems);
    o.working = cfg.dtype;
    o.grad_wire = cfg.grad_dtype;
    o.moments = cfg.moments;
    o.optimizer_states = optimizer_states(cfg.optimizer);
    o.bucket_bytes = cfg.bucket_bytes;
    o.bucket_count = static_cast<std::size_t>(cfg.bucket_count);
    o.dpu = cfg.dpu;
    if (partitioned()) {
      o.world_size = world;
      o.shard_elems = std::max<std::size_t>(layout.shard(rank, world).size(),
                                            std::min(o.total_elems, offload::kFlatAlignElems));
    }
    return o;
  }

  // The part of flat range [begin, end) in shard `range`, as [lo, hi); when there is none,
  // lo == hi == range.begin (so lo - range.begin is always a valid offset in the shard).
  static std::pair<std::size_t, std::size_t> clip(std::size_t begin, std::size_t end,
                                                  offload::FlatLayout::Range range) {
    const std::size_t lo = std::max(begin, range.begin);
    const std::size_t hi = std::min(end, range.end);
    return lo < hi ? std::pair{lo, hi} : std::pair{range.begin, range.begin};
  }

  NormPartial* exchange_send(int parity) {
    return exchange_host.as<NormPartial>() + static_cast<std::size_t>(parity) * (1 + world);
  }
  NormPartial* exchange_recv(int parity) { return exchange_send(parity) + 1; }

  // ---- step timing (Note [Step timing]) ----

  device::Event* take_event() {
    std::lock_guard lock(event_pool_mutex);
    if (event_pool_free.empty()) {
      event_pool_all.push_back(dev->create_event({.timing = true}));
      return event_pool_all.back().get();
    }
    device::Event* e = event_pool_free.back();
    event_pool_free.pop_back();
    return e;
  }

  void give_events(const TimingRecord& r) {
    std::lock_guard lock(event_pool_mutex);
    for (const auto& [a, b] : r.d2h) event_pool_free.insert(event_pool_free.end(), {a, b});
    for (const auto& [a, b] : r.h2d) event_pool_free.insert(event_pool_free.end(), {a, b});
    for (device::Event* e : {r.boundary, r.exposed_from, r.done}) {
      if (e != nullptr) event_pool_free.push_back(e);
    }
  }

  TimingRecord& current_record() {
    if (!open_record) {
      open_record = std::make_shared<TimingRecord>();
      open_record->step = steps_done + 1;
    }
    return *open_record;
  }

  // A copy on `stream` between a pair of timing events appended to `pairs`.
  void timed_copy(device::Stream& stream,
                  std::vector<std::pair<device::Event*, device::Event*>>& pairs, std::string label,
                  void* dst, const void* src, std::size_t bytes) {
    device::Event* start = take_event();
    device::Event* end = take_event();
    start->record(stream);
    stream.copy_async_labelled(std::move(label), dst, src, bytes);
    end->record(stream);
    pairs.push_back({start, end});
  }

  // Trainer thread: turns the oldest records whose events have all completed into figures.
  void harvest_timing() {
    while (!pending_records.empty()) {
      TimingRecord& r = *pending_records.front();
      if (!r.closed) return;
      bool complete = true;
      for (const device::Event* e : {r.boundary, r.exposed_from, r.done}) {
        complete = complete && (e == nullptr || e->query());
      }
      for (const auto& [a, b] : r.d2h) complete = complete && b->query();
      for (const auto& [a, b] : r.h2d) complete = complete && b->query();
      if (!complete) return;
      StepTiming t;
      t.step = r.step;
      for (const auto& [a, b] : r.d2h) t.d2h_ms += b->elapsed_ms_since(*a);
      for (const auto& [a, b] : r.h2d) t.h2d_ms += b->elapsed_ms_since(*a);
      const device::Event* from = r.exposed_from != nullptr ? r.exposed_from : r.boundary;
      if (r.done != nullptr && from != nullptr) {
        t.exposed_ms = std::max(0.f, r.done->elapsed_ms_since(*from));
      }
      t.update_ms = r.update_ms;
      t.bytes_d2h = r.bytes_d2h;
      t.bytes_h2d = r.bytes_h2d;
      latest_timing = t;
      give_events(r);
      pending_records.pop_front();
    }
  }

  // ---- gradient path (Note [Gradient path]) ----

  std::byte* bucket_device(int index) {
    return buckets.as<std::byte>() + static_cast<std::size_t>(index) * cfg.bucket_bytes;
  }
  std::byte* bucket_landing(int index) {
    return landing.as<std::byte>() + static_cast<std::size_t>(index) * cfg.bucket_bytes;
  }

  void open_next_bucket() {
    const int index = static_cast<int>(buckets_used++ % ring.size());
    Bucket& b = ring[static_cast<std::size_t>(index)];
    // The device bucket is free once its previous copy completed: a GPU-side wait, a no-op
    // unless the ring has wrapped around onto a copy still in flight.
    compute->wait(*b.copied);
    b.fill_bytes = 0;
    b.segments.clear();
    open_bucket = index;
  }

  void seal_open_bucket(bool last_micro_step) {
    if (open_bucket < 0) return;
    const int index = open_bucket;
    open_bucket = -1;
    Bucket& b = ring[static_cast<std::size_t>(index)];
    if (b.segments.empty()) return;
    const int parity = parity_of(step_serial);
    std::vector<offload::FoldSegment> segs;
    std::vector<ParamId> params;
    for (const Segment& s : b.segments) {
      const auto& slot = layout.slot(s.param);
      ZORO_CHECK(s.ready, "the gradient of '" << slot.name
                                              << "' was requested with grad_slot() but "
                                                 "grads_ready() was never called for it");
      offload::FoldSegment f;
      f.bucket_elem = s.byte_offset / gbytes();
      f.flat_offset = slot.offset;
      f.elems = slot.numel;
      f.first = touched_serial[s.param.value] != step_serial;
      f.want_norm = last_micro_step;
      touched_serial[s.param.value] = step_serial;
      if (last_micro_step) norm_serial[s.param.value] = step_serial;
      segs.push_back(f);
      params.push_back(s.param);
    }
    b.sealed->record(*compute);
    std::size_t copy_bytes = b.fill_bytes;
    if (partitioned()) {
      // Reduce-scatter first; segs become this rank's pieces (Note [Partitioned step]).
      copy_bytes = reduce_scatter_bucket(index, segs, params);
      d2h->wait(*b.reduced);
    } else {
      d2h->wait(*b.sealed);
    }
    d2h->wait(*b.folded);  // the landing zone is free once its previous fold is done
    TimingRecord& rec = current_record();
    if (copy_bytes > 0) {
      timed_copy(*d2h, rec.d2h, "d2h bucket " + std::to_string(index), bucket_landing(index),
                 bucket_device(index), copy_bytes);
    }
    rec.bytes_d2h += copy_bytes;
    b.copied->record(*d2h);
    bytes_d2h_micro += copy_bytes;
    fold->wait(*b.copied);
    float* accumulator = acc[parity].as<float>();
    const void* src = bucket_landing(index);
    const DType wire = cfg.grad_dtype;
    fold->launch_host_fn(
        "fold bucket " + std::to_string(index),
        [this, segs = std::move(segs), params = std::move(params), accumulator, src, wire, parity] {
          for (std::size_t i = 0; i < segs.size(); ++i) {
            const auto r = offload::fold_segment(src, wire, segs[i], accumulator);
            if (segs[i].want_norm) norm_sq[parity][params[i].value] = r.sum_squares;
            non_finite[parity] = non_finite[parity] || r.non_finite;
          }
        });
    b.folded->record(*fold);
  }

  // World > 1 (Note [Partitioned step]): permutes sealed bucket `index` by owner rank into the
  // staging bucket and reduce-scatters it back into the bucket, all on the comm stream, and
  // records the bucket's `reduced` event. Replaces `segs` and `params` by this rank's pieces
  // (bucket_elem now counts from the start of its received part, flat_offset from the shard's
  // begin). Returns the bytes of the received part.
  std::size_t reduce_scatter_bucket(int index, std::vector<offload::FoldSegment>& segs,
                                    std::vector<ParamId>& params) {
    Bucket& b = ring[static_cast<std::size_t>(index)];
    const std::size_t gb = gbytes();
    const std::byte* src = bucket_device(index);
    std::byte* dst = sorted.as<std::byte>();
    std::vector<std::size_t> counts(static_cast<std::size_t>(world), 0);
    std::vector<offload::FoldSegment> mine;
    std::vector<ParamId> mine_params;
    comm_stream->wait(*b.sealed);
    std::size_t pos = 0;                                  // elements written to the staging bucket
    std::size_t run_from = 0, run_to = 0, run_elems = 0;  // a copy being merged
    const auto flush_run = [&] {
      if (run_elems > 0) {
        comm_stream->copy_async(dst + run_to * gb, src + run_from * gb, run_elems * gb);
      }
      run_elems = 0;
    };
    for (int r = 0; r < world; ++r) {
      const auto range = layout.shard(r, world);
      const std::size_t first_of_rank = pos;
      for (std::size_t i = 0; i < segs.size(); ++i) {
        const offload::FoldSegment& f = segs[i];
        const auto [lo, hi] = clip(f.flat_offset, f.flat_offset + f.elems, range);
        if (lo == hi) continue;
        const std::size_t from = f.bucket_elem + (lo - f.flat_offset);
        if (run_elems > 0 && run_from + run_elems == from) {
          run_elems += hi - lo;  // contiguous in the bucket too: one copy
        } else {
          flush_run();
          run_from = from;
          run_to = pos;
          run_elems = hi - lo;
        }
        if (r == rank) {
          offload::FoldSegment piece = f;
          piece.bucket_elem = pos - first_of_rank;
          piece.flat_offset = lo - shard.begin;
          piece.elems = hi - lo;
          mine.push_back(piece);
          mine_params.push_back(params[i]);
        }
        pos += hi - lo;
        counts[static_cast<std::size_t>(r)] += hi - lo;
      }
    }
    flush_run();
    comm->reduce_scatter(dst, bucket_device(index), counts, cfg.grad_dtype, *comm_stream);
    b.reduced->record(*comm_stream);
    segs = std::move(mine);
    params = std::move(mine_params);
    return counts[static_cast<std::size_t>(rank)] * gb;
  }

  // ---- the update (Note [Step]) ----

  struct UpdateJob {
    int parity = 0;
    std::uint64_t serial = 0;
    std::vector<ParamId> untouched;  // no gradient this step: zero gradient
    std::vector<ParamId> need_norm;  // gradient from earlier micro-steps only
    bool upload_per_chunk = false;   // synchronous mode: copy each chunk up as it is done
    double lr = 0;                   // captured at launch: set_lr() never races an update
    double loss_scale = 1;           // the gradient was scaled by it (Note [Step loss scale])
    std::shared_ptr<TimingRecord> record;
  };

  UpdateJob make_job(bool upload_per_chunk) {
    UpdateJob job;
    job.parity = parity_of(step_serial);
    job.serial = step_serial;
    job.upload_per_chunk = upload_per_chunk;
    job.lr = lr;
    job.loss_scale = step_scale;
    for (const auto& slot : layout.slots()) {
      if (touched_serial[slot.id.value] != step_serial) {
        job.untouched.push_back(slot.id);
      } else if (norm_serial[slot.id.value] != step_serial) {
        job.need_norm.push_back(slot.id);
      }
    }
    return job;
  }

  const void* upload_source() { return half_working() ? staging.data() : master.data(); }

  UpdateOutcome run_update(const UpdateJob& job) {
    if (update_start_hook) update_start_hook(static_cast<std::int64_t>(job.serial));
    UpdateOutcome out;
    const auto t_wait = Clock::now();
    folds_done[job.parity]->synchronize();
    out.wait_folds_ms = ms_since(t_wait);
    const auto t0 = Clock::now();
    auto span = trace->begin();
    float* a = acc[job.parity].as<float>();
    double total_sq = 0;
    bool non_finite_seen = false;
    if (partitioned()) {
      // Every rank's partial, gathered by exchange_norms(), summed in rank order.
      exchanged[job.parity]->synchronize();
      const NormPartial* all = exchange_recv(job.parity);
      for (int r = 0; r < world; ++r) {
        total_sq += all[r].sum_squares;
        non_finite_seen = non_finite_seen || all[r].non_finite != 0;
      }
    } else {
      auto& norms = norm_sq[job.parity];
      for (ParamId p : job.untouched) {
        const auto& s = layout.slot(p);
        std::fill(a + s.offset, a + s.end(), 0.f);
        norms[p.value] = 0;
      }
      for (ParamId p : job.need_norm) {
        const auto& s = layout.slot(p);
        norms[p.value] = offload::sum_squares(a + s.offset, s.numel);
      }
      for (double v : norms) total_sq += v;  // registration order: independent of buckets
      non_finite_seen = non_finite[job.parity];
      non_finite[job.parity] = false;
    }
    // Unscaled by the scale the trainer scaled this step's loss with, not the scaler's
    // current one: with DPU the previous update may have changed it since (Note [Step loss
    // scale]).
    const double divisor = partitioned() ? job.loss_scale * world : job.loss_scale;
    {
      std::lock_guard lock(scaler_mutex);
      out.grad_norm = std::sqrt(total_sq) / divisor;
      out.overflow = non_finite_seen || !std::isfinite(out.grad_norm);
      out.applied = scaler->update(out.overflow);
    }
    if (!out.applied) {
      out.update_ms = ms_since(t0);
      trace->end(span, "cpu-update", "skipped step (overflow)");
      return out;
    }
    if (cfg.clip_norm > 0) {
      out.clip_factor = std::min(1.0, cfg.clip_norm / (out.grad_norm + 1e-6));
    }
    ++optimizer_t;
    // The staging buffer (or, for fp32, the master) is the source of the previous upload:
    // it may be overwritten only once that copy is complete.
    h2d_done->synchronize();
    const optim::StepInfo info{optimizer_t, static_cast<float>(out.clip_factor / divisor)};
    const std::size_t n = local();
    const std::size_t first = shard.begin;  // the working weights are the whole flat space
    const optim::Range all{0, n};
    const std::size_t wb = wbytes();
    optim::Tensor half_out{};
    if (half_working()) half_out = {staging.data(), n, cfg.dtype};
    const optim::ConstTensor grad{a, n, DType::kF32};
    std::size_t chunk_index = 0;
    optim::ChunkDone on_chunk = [&](optim::Range chunk) {
      const std::string k = std::to_string(chunk_index++);
      trace->end(span, "cpu-update", "update chunk " + k);
      span = trace->begin();
      if (!job.upload_per_chunk) return;
      timed_copy(*h2d, job.record->h2d, "h2d chunk " + k,
                 working.as<std::byte>() + (first + chunk.begin) * wb,
                 static_cast<const std::byte*>(upload_source()) + chunk.begin * wb,
                 chunk.size() * wb);
      job.record->bytes_h2d += chunk.size() * wb;
      out.bytes_h2d += chunk.size() * wb;
      if (after_chunk_upload_hook) after_chunk_upload_hook(chunk_index - 1);
    };
    if (job.upload_per_chunk) h2d->wait(*boundary);  // backward has stopped reading weights
    std::span<float> master_span(master.as<float>(), n);
    const DType sd = cfg.moments;
    // Synchronous: one call over everything, in chunks, each copied up as it is done. DPU:
    // the chunks in reverse order, since backward releases the last parameters first (Note
    // [DPU uploads]), each reported to the upload pipeline.
    std::vector<std::pair<optim::Range, std::size_t>> calls;
    if (job.upload_per_chunk) {
      calls.push_back({all, cfg.chunk_elems});
    } else {
      for (std::size_t k = chunks.size(); k-- > 0;) calls.push_back({chunks[k], 0});
    }
    for (const auto& [range, chunk_elems] : calls) {
      if (!job.upload_per_chunk) {
        const std::size_t k = range.begin / cfg.chunk_elems;
        on_chunk = [&, k](optim::Range) {
          trace->end(span, "cpu-update", "update chunk " + std::to_string(k));
          span = trace->begin();
          chunk_updated(k);
        };
      }
      run_optimizer(job.lr, info, master_span, sd, grad, half_out, range, chunk_elems, on_chunk);
    }
    if (job.upload_per_chunk) {
      h2d_done->record(*h2d);
      job.record->done = take_event();
      job.record->done->record(*h2d);
    }
    trace->end(span, "cpu-update", "update end");
    out.update_ms = ms_since(t0);
    return out;
  }

  void run_optimizer(double rate, const optim::StepInfo& info, std::span<float> master_span,
                     DType sd, const optim::ConstTensor& grad, const optim::Tensor& half_out,
                     optim::Range range, std::size_t chunk_elems,
                     const optim::ChunkDone& on_chunk) {
    const std::size_t n = local();
    switch (cfg.optimizer) {
      case OptimizerKind::kAdam:
      case OptimizerKind::kAdamW: {
        optim::AdamConfig c;
        c.lr = static_cast<float>(rate);
        c.beta1 = static_cast<float>(cfg.beta1);
        c.beta2 = static_cast<float>(cfg.beta2);
        c.eps = static_cast<float>(cfg.eps);
        c.weight_decay = static_cast<float>(cfg.weight_decay);
        c.decoupled_weight_decay = cfg.optimizer == OptimizerKind::kAdamW;
        optim::AdamBuffers b{
            master_span, {state0.data(), n, sd}, {state1.data(), n, sd}, grad, half_out};
        optim::adam_step(*executor, c, info, b, range, chunk_elems, on_chunk);
        break;
      }
      case OptimizerKind::kAdagrad: {
        optim::AdagradConfig c;
        c.lr = static_cast<float>(rate);
        c.eps = static_cast<float>(cfg.eps);
        c.weight_decay = static_cast<float>(cfg.weight_decay);
        optim::AdagradBuffers b{master_span, {state0.data(), n, sd}, grad, half_out};
        optim::adagrad_step(*executor, c, info, b, range, chunk_elems, on_chunk);
        break;
      }
      case OptimizerKind::kLion: {
        optim::LionConfig c;
        c.lr = static_cast<float>(rate);
        c.beta1 = static_cast<float>(cfg.beta1);
        c.beta2 = static_cast<float>(cfg.beta2);
        c.weight_decay = static_cast<float>(cfg.weight_decay);
        optim::LionBuffers b{master_span, {state0.data(), n, sd}, grad, half_out};
        optim::lion_step(*executor, c, info, b, range, chunk_elems, on_chunk);
        break;
      }
    }
  }

  // ---- DPU uploads (Note [DPU uploads]) ----

  void build_chunk_grid() {
    const std::size_t n = local();
    for (std::size_t b = 0; b < n; b += cfg.chunk_elems) {
      chunks.push_back({b, std::min(n, b + cfg.chunk_elems)});
    }
    params_in_chunk.assign(chunks.size(), 0);
    chunks_of_param.assign(layout.size(), {});
    for (const auto& slot : layout.slots()) {
      const auto [lo, hi] = clip(slot.offset, slot.end(), shard);
      if (lo == hi) continue;  // another rank's parameter
      const std::size_t first = (lo - shard.begin) / cfg.chunk_elems;
      const std::size_t last = (hi - shard.begin - 1) / cfg.chunk_elems;
      for (std::size_t k = first; k <= last; ++k) {
        chunks_of_param[slot.id.value].push_back(static_cast<std::uint32_t>(k));
        ++params_in_chunk[k];
      }
    }
    chunk_state.assign(chunks.size(), ChunkState{});
    for (std::size_t k = 0; k < chunks.size(); ++k) released.push_back(dev->create_event());
  }

  // Before launching a DPU update: every chunk waits for its update and its release.
  void arm_uploads(bool already_updated, std::shared_ptr<TimingRecord> record) {
    std::lock_guard lock(upload_mutex);
    armed_record = std::move(record);
    for (std::size_t k = 0; k < chunks.size(); ++k) {
      chunk_state[k] = ChunkState{already_updated, params_in_chunk[k], false};
    }
    uploads_armed = true;
    uploaded_bytes = 0;
  }

  void enqueue_upload_locked(std::size_t k, const device::Event& after) {
    const std::size_t wb = wbytes();
    const optim::Range c = chunks[k];
    h2d->wait(after);
    timed_copy(*h2d, armed_record->h2d, "h2d chunk " + std::to_string(k) + " (dpu)",
               working.as<std::byte>() + (shard.begin + c.begin) * wb,
               static_cast<const std::byte*>(upload_source()) + c.begin * wb, c.size() * wb);
    armed_record->bytes_h2d += c.size() * wb;
    chunk_state[k].uploaded = true;
    uploaded_bytes += c.size() * wb;
  }

  // Updater thread: chunk k of the update is written.
  void chunk_updated(std::size_t k) {
    std::lock_guard lock(upload_mutex);
    ChunkState& c = chunk_state[k];
    c.updated = true;
    if (c.unreleased == 0 && !c.uploaded) enqueue_upload_locked(k, *released[k]);
  }

  // Trainer thread, last micro-step: p's weights are no longer read by this step.
  void release_param(ParamId p) {
    std::lock_guard lock(upload_mutex);
    if (!uploads_armed) return;
    for (std::uint32_t k : chunks_of_param[p.value]) {
      ChunkState& c = chunk_state[k];
      if (--c.unreleased > 0) continue;
      released[k]->record(*compute);
      if (c.updated && !c.uploaded) enqueue_upload_locked(k, *released[k]);
    }
  }

  // Trainer thread, after the armed update finished and `boundary` was recorded: uploads what
  // is left (chunks of parameters without a gradient this step wait for the boundary), and
  // makes the next forward wait for every upload. Returns the bytes uploaded for the update.
  std::size_t finish_uploads() {
    std::lock_guard lock(upload_mutex);
    if (!uploads_armed) return 0;
    for (std::size_t k = 0; k < chunks.size(); ++k) {
      if (chunk_state[k].uploaded) continue;
      ZORO_ASSERT(chunk_state[k].updated);
      enqueue_upload_locked(k, chunk_state[k].unreleased == 0 ? *released[k] : *boundary);
    }
    uploads_armed = false;
    h2d_done->record(*h2d);
    // The uploads happened during the step that ends here: its boundary (just recorded on
    // the compute stream) is where the wait they can cause begins.
    armed_record->exposed_from = take_event();
    armed_record->exposed_from->record(*compute);
    compute->wait(*h2d_done);
    armed_record->done = take_event();
    armed_record->done->record(*h2d);
    if (partitioned()) gather_working(armed_record->done);
    armed_record->closed = true;
    armed_record.reset();
    return uploaded_bytes;
  }

  UpdateOutcome collect_running() {
    if (!running) return {};
    UpdateOutcome out = running->get();  // rethrows the updater's error
    running.reset();
    std::lock_guard lock(upload_mutex);
    if (armed_record) armed_record->update_ms = out.update_ms;
    if (!out.applied) {
      // A skipped update changed no weight: nothing to upload.
      uploads_armed = false;
      if (armed_record) armed_record->closed = true;
      armed_record.reset();
    }
    return out;
  }

  // Trainer thread: the scaler's scale becomes the one loss_scale() reports (Note [Step loss
  // scale]); only between optimizer steps, never while one is being accumulated.
  void refresh_told_scale() {
    if (micro_step != 0 || !scaler) return;
    std::lock_guard lock(scaler_mutex);
    told_scale = scaler->scale();
  }

  // Note [Failing rank] (engine.h): with many ranks, after a BackendError or while unwinding,
  // the engine issues no new collective.
  bool failing_rank() const {
    return partitioned() && (backend_failed || std::uncaught_exceptions() > 0);
  }

  // Runs f(); a BackendError it throws marks the engine failed (Note [Failing rank]).
  template <typename F>
  decltype(auto) guard_backend(F&& f) {
    try {
      return std::forward<F>(f)();
    } catch (const BackendError&) {
      backend_failed = true;
      throw;
    }
  }

  void drain() {
    if (running) last_outcome = collect_running();
    const bool failing = failing_rank();
    if (uploads_armed) {
      if (failing) {
        // Note [Failing rank]: the upload's all-gather is a collective the other ranks will
        // not match here; the weights are going away with the engine anyway.
        ZORO_LOG(kWarn) << "rank " << rank << " of " << world
                        << ": dropping the pending DPU upload of step " << steps_done
                        << " and its all-gather: after an error, a rank issues no new "
                           "collective (Note [Failing rank] in engine.h)";
        std::lock_guard lock(upload_mutex);
        uploads_armed = false;
        armed_record.reset();
      } else {
        boundary->record(*compute);
        finish_uploads();
      }
    }
    fold->synchronize();
    d2h->synchronize();
    h2d->synchronize();
    if (comm_stream) comm_stream->synchronize();
    compute->synchronize();
    if (!failing) refresh_told_scale();
  }

  // The destructor, after drain() (which may have thrown part-way): the updater and every
  // stream are finished, errors dropped, before the buffers they use are freed.
  void quiesce() noexcept {
    if (running) {
      try {
        running->get();
      } catch (...) {  // reported by drain() already, or lost with the engine
      }
      running.reset();
    }
    for (auto* s : {fold.get(), d2h.get(), h2d.get(), comm_stream.get(), compute.get()}) {
      if (s == nullptr) continue;
      try {
        s->synchronize();
      } catch (...) {  // as above
      }
    }
  }

  // ---- many ranks (Note [Partitioned step]) ----

  // Trainer thread, at the boundary after the last seal: a fold-stream task computes this
  // rank's NormPartial (the untouched and earlier-micro-step parameters' pieces first, as
  // run_update does for one rank), and the comm stream gathers every rank's into
  // exchange_recv(parity), then records exchanged[parity].
  void exchange_norms(const UpdateJob& job) {
    const int parity = job.parity;
    NormPartial* send = exchange_send(parity);
    fold->launch_host_fn(
        "norm partial", [this, parity, untouched = job.untouched, need_norm = job.need_norm, send] {
          float* a = acc[parity].as<float>();  // indexed from the shard's begin
          auto& norms = norm_sq[parity];
          for (ParamId p : untouched) {
            const auto& s = layout.slot(p);
            const auto [lo, hi] = clip(s.offset, s.end(), shard);
            std::fill(a + (lo - shard.begin), a + (hi - shard.begin), 0.f);
            norms[p.value] = 0;
          }
          for (ParamId p : need_norm) {
            const auto& s = layout.slot(p);
            const auto [lo, hi] = clip(s.offset, s.end(), shard);
            norms[p.value] = offload::sum_squares(a + (lo - shard.begin), hi - lo);
          }
          double total_sq = 0;
          for (double v : norms) total_sq += v;  // registration order
          send->sum_squares = total_sq;
          send->non_finite = non_finite[parity] ? 1 : 0;
          non_finite[parity] = false;
        });
    folds_done[parity]->record(*fold);
    comm_stream->wait(*folds_done[parity]);
    constexpr std::size_t es = sizeof(NormPartial);
    std::byte* mine = exchange_dev.as<std::byte>() + static_cast<std::size_t>(rank) * es;
    comm_stream->copy_async(mine, send, es);
    const std::vector<std::size_t> counts(static_cast<std::size_t>(world), kNormPartialHalves);
    // Raw bytes: a gather of 16-bit elements moves them unchanged.
    comm->all_gather(mine, exchange_dev.data(), counts, DType::kBF16, *comm_stream);
    comm_stream->copy_async(exchange_recv(parity), exchange_dev.data(),
                            static_cast<std::size_t>(world) * es);
    exchanged[parity]->record(*comm_stream);
  }

  // Trainer thread, after this rank's new weights were copied up (h2d_done) and the step's
  // backward ended (boundary): every rank's shard of the working weights to every rank, in
  // place; the compute stream waits (GPU-side). `done` (a timing event) is re-recorded after.
  void gather_working(device::Event* done) {
    comm_stream->wait(*boundary);
    comm_stream->wait(*h2d_done);
    const std::size_t wb = wbytes();
    comm->all_gather(working.as<std::byte>() + shard.begin * wb, working.data(), shard_counts,
                     cfg.dtype, *comm_stream);
    gathered->record(*comm_stream);
    compute->wait(*gathered);
    if (done != nullptr) done->record(*comm_stream);
  }

  // Collective: parameter p's values of a shard-indexed host array (`base`, `dtype`) from
  // every rank that owns a piece of it, as fp32.
  std::vector<float> gather_param(ParamId p, const void* base, DType dtype) {
    const auto& slot = layout.slot(p);
    const std::size_t es = size_of(dtype);
    std::vector<std::size_t> counts;
    for (int r = 0; r < world; ++r) {
      const auto [lo, hi] = clip(slot.offset, slot.end(), layout.shard(r, world));
      counts.push_back(hi - lo);
    }
    const auto [lo, hi] = clip(slot.offset, slot.end(), shard);
    device::Buffer full = dev->allocate(device::MemoryKind::kDevice, slot.numel * es);
    std::byte* mine = full.as<std::byte>() + comm::shard_offset(counts, rank) * es;
    if (hi > lo) {
      comm_stream->copy_async(mine, static_cast<const std::byte*>(base) + (lo - shard.begin) * es,
                              (hi - lo) * es);
    }
    comm->all_gather(mine, full.data(), counts, dtype, *comm_stream);
    comm_stream->synchronize();
    std::vector<std::byte> raw(slot.numel * es);
    dev->copy(raw.data(), full.data(), raw.size());
    return widen(dtype, raw.data(), slot.numel);
  }
};

}  // namespace zoro
