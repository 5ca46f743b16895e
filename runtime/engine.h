// zoro::Engine: the offload engine for one rank (../shared/DESIGN.md sections 1, 2, 7).
//
// A trainer registers its parameters, runs forward and backward on the engine's compute
// stream, and hands each parameter's gradient to the engine the moment it exists; the engine
// moves gradients to pinned host memory, runs the CPU optimizer, and brings the new weights
// back, while the compute stream keeps running.
//
//   zoro::Engine engine(zoro::Config::from_file("run.toml"));
//   auto w = engine.add_parameter("fc.weight", {1024, 4096}, init_fn);
//   engine.finalize();                               // plan, budgets, allocation, upload
//   for (...) {
//     engine.begin_step();
//     forward(engine.param_data(w), engine.compute_stream());   // working weights (device)
//     // backward, per layer:
//     void* g = engine.grad_slot(w);                 // gradient memory (grad_dtype, device)
//     gemm_backward(..., g, engine.compute_stream());
//     engine.grads_ready({w});                       // in stream order; returns at once
//     zoro::StepReport r = engine.end_step();        // optimizer on the last micro-step
//   }
//
// Threading: one host thread drives an Engine (the trainer's); the engine runs its own work on
// device streams and an updater thread. Every call may throw zoro::Error; after a BackendError
// the engine is unusable.
//
// Note [Gradient path]: grad_slot(p) places p's gradient in the current device bucket of a
// small ring (bucket_count buckets of bucket_bytes). When a slot does not fit, the bucket is
// sealed: an event is recorded on the compute stream, the D2H stream waits on it (a GPU-side
// wait) and copies the bucket to its pinned landing zone; the fold stream waits for the copy
// and folds the bucket into the fp32 accumulator (grad_fold.h), keeping the non-finite flag and
// per-parameter squared norms. The device bucket returns to the ring when its copy completes
// (the compute stream waits on that event only when the ring wraps around, never the host);
// the landing zone when its fold completes (the D2H stream waits). A parameter's gradient must
// fit one bucket (finalize() checks).
//
// Note [Step]: end_step() on the last micro-step seals the open bucket, waits for the folds,
// computes the global norm (parameters in registration order, so it does not depend on bucket
// sizes), the clipping factor and the overflow flag; an overflow skips the step and lowers the
// loss scale. Otherwise the CPU optimizer runs in chunks of chunk_elems; each chunk's new
// working weights (the half copy, or fp32 master for fp32 training) are copied up on the H2D
// stream while the next chunk is computed, and the compute stream waits (GPU-side) for the
// last copy before the next forward.
//
// Note [DPU]: with dpu = true, after dpu_warmup_steps synchronous steps, step n's update runs
// on the updater thread while the trainer runs step n+1's forward and backward (gradients go
// to a second accumulator). Its weights are copied up at the end of step n+1 (after step
// n+1's backward), so step n+1 computes with the weights of step n-1's update — one step stale,
// as in ZeRO-Offload. The synchronous mode is the numerical reference.
//
// Note [DPU uploads]: step n's update runs over a fixed grid of chunks from the last to the
// first (backward releases the last parameters first). A chunk's new weights are copied up
// as soon as both the update has written it and step n+1's last micro-step has released, by
// grads_ready(), every parameter overlapping it — the copy waits on an event recorded on the
// compute stream at that release — so the uploads hide behind the rest of backward. What is
// left at the end of step n+1 (parameters without a gradient, an update that was late) is
// copied then, and the next forward waits for it on the GPU.
//
// Note [Partitioned step]: with a Communicator of N > 1 ranks (ZeRO-2, ../shared/DESIGN.md
// section 5), the flat space is cut into N contiguous shards aligned to kFlatAlignElems
// (FlatLayout::shard; the last ones may be one unit shorter), and each rank keeps the pinned
// master, moments, accumulator(s) and staging of its own shard only. The device keeps the
// full working weights and the full bucket ring. Every collective is issued by the trainer's
// thread on one engine stream (`comm`), so every rank issues them in the same order.
//   - Gradients: a sealed bucket holds segments in grad_slot() order (the same on every rank,
//     a requirement), each a whole parameter's gradient, so its elements belong to several
//     shards. The comm stream waits (GPU-side) for the seal, then permutes the bucket into a
//     staging bucket ordered by owner rank: for rank 0, then 1, ..., the piece of every
//     segment that falls in that rank's shard, in segment order (one device copy per piece;
//     adjacent pieces merged). reduce_scatter with counts[r] = the elements of rank r's
//     pieces sums the staging bucket over ranks and leaves this rank's part back in the
//     bucket's own memory (free again: its contents are in the staging bucket). The D2H
//     stream waits for the collective and copies only that part down; the fold writes each
//     piece into the shard accumulator at piece offset - shard begin. Nothing blocks the host;
//     the bucket returns to the ring when its copy completes, as for one rank. One staging
//     bucket suffices: its users are ordered on the comm stream.
//   - Mean: the engine averages gradients over ranks (as PyTorch DDP): reduce_scatter sums,
//     and the update scales by 1/N (with the clipping factor and 1/loss scale), so grad_norm,
//     clipping and the update are those of the mean gradient; one rank fed the mean of the N
//     ranks' gradients takes the same step up to fp32 reduction order (with a 16-bit wire,
//     the sum is rounded to it once, where that one rank rounds the mean).
//   - Norm and overflow: at the boundary a fold-stream task (after the last fold) computes
//     this rank's sum of squares (its parameter pieces, in registration order) and non-finite
//     flag; the comm stream all-gathers every rank's (double sum, flag) as raw bytes and each
//     rank adds the N sums in rank order in double. So every rank computes the same bits and
//     takes the same clip and skip decisions; an Inf on one rank skips the step on all.
//   - Update: the CPU optimizer runs over the shard; its chunks are copied up into the rank's
//     slice of the working weights; then the comm stream waits for the last upload and the
//     boundary, all-gathers the working weights in place, and the compute stream waits
//     (GPU-side) for the gather before the next forward. A skipped step gathers nothing (every
//     rank skips). With DPU the gather follows the delayed uploads at the end of step n+1,
//     issued by the trainer's thread too (the updater thread issues no collective).
//   - Collective calls: finalize, end_step's boundary, save/load_checkpoint,
//     all_reduce_scalars, and, with N > 1, master() and moment() (they gather a parameter from
//     its owners), and flush() with DPU (it may upload and gather). Every rank makes them in
//     the same order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "offload/layout.h"
#include "offload/memory_plan.h"
#include "runtime/config.h"
#include "runtime/device/device.h"

namespace zoro {

namespace comm {
class Communicator;
enum class ReduceOp : std::uint8_t;  // comm/communicator.h
}  // namespace comm

using offload::ParamId;

// Device-measured figures of one optimizer step, available once its copies have completed
// (Note [Step timing] in engine.cpp): a report carries those of the latest such step.
struct StepTiming {
  std::int64_t step = 0;  // the optimizer step (1-based) these figures belong to
  double d2h_ms = 0;      // gradient copies down, summed over buckets
  double h2d_ms = 0;      // weight copies up, summed over chunks
  // From the end of backward to the completion of the last weight copy: the longest the next
  // forward can have waited for the new weights (0 for a skipped update). With DPU, the end
  // of the backward of the step during which the weights were uploaded.
  double exposed_ms = 0;
  double update_ms = 0;       // the CPU update's wall time
  std::size_t bytes_d2h = 0;  // over all micro-steps of the step
  std::size_t bytes_h2d = 0;
};

struct StepReport {
  std::int64_t step = 0;   // optimizer steps taken so far (applied or skipped)
  int micro_step = 0;      // 1..grad_accum_steps within the step
  bool boundary = false;   // this call ended an optimizer step
  bool applied = false;    // the optimizer updated the weights (false: skipped/no boundary)
  bool overflow = false;   // an Inf/NaN gradient skipped the step
  bool deferred = false;   // DPU: the update was launched and will land later
  double grad_norm = 0;    // global norm of the unscaled gradient (before clipping)
  double clip_factor = 1;  // applied to the gradient (<= 1)
  double loss_scale = 1;   // in force for the next step
  // Host-side durations of this call's work (milliseconds).
  double wait_folds_ms = 0;   // end_step blocked on outstanding gradient folds
  double update_ms = 0;       // CPU optimizer (wall, on the thread that ran it)
  double end_step_ms = 0;     // end_step's own wall time (what the trainer's loop waited)
  std::size_t bytes_d2h = 0;  // gradient bytes copied down during this micro-step
  std::size_t bytes_h2d = 0;  // weight bytes copied up by this call
  // The latest step whose copies have all completed (often the previous one, since end_step
  // does not wait for the copies it enqueues); empty until one has.
  std::optional<StepTiming> timing;
};

class Engine {
 public:
  // Opens config.device. Throws InvalidArgument for a bad config.
  explicit Engine(Config config);
  // Uses an existing device (the engine does not own it; it must outlive the engine).
  Engine(Config config, device::Device& device);
  // One rank of a data-parallel run over `comm` (Note [Partitioned step]); comm and device
  // outlive the engine. A communicator of one rank behaves exactly as the constructor above.
  Engine(Config config, device::Device& device, comm::Communicator& comm);
  // Finishes the engine's work (as flush()) and frees it; never throws (errors are logged).
  // Note [Failing rank]: with N > 1 ranks, when destroyed during stack unwinding
  // (std::uncaught_exceptions() > 0) or after a call threw BackendError, it issues no new
  // collective: a pending DPU upload and its all-gather are dropped (logged). The other ranks
  // are then at another point of the collective sequence, so a new collective would be
  // matched against the wrong one of theirs, or never, and keep this rank from reaching its
  // error handler, which should print the error and call Communicator::abort() to end every
  // rank. It still waits for the work its streams already hold (their buffers die with it):
  // collectives every rank issued before the failure complete, since the others issued them
  // too; a rank that issued a collective its peers never reach (it was not the first to
  // fail) can block there, which abort() from the first failing rank ends.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ---- registration (before finalize) ----
  // Initial values: `init` must hold exactly numel(shape) values.
  ParamId add_parameter(std::string name, std::vector<std::int64_t> shape,
                        std::span<const float> init);
  // Initial values from a function filling the parameter's fp32 master range.
  ParamId add_parameter(std::string name, std::vector<std::int64_t> shape,
                        const std::function<void(std::span<float>)>& init);

  // Computes the memory plan, refuses one that does not fit the device capacity or the host
  // budget (OutOfMemory with the numbers), allocates, and uploads the working weights.
  // With a communicator, first checks that every rank agrees on config.fingerprint() and on
  // the layout's fingerprint (InvalidArgument on every rank otherwise, naming the ranks and
  // values), and each rank's initial values of its shard become every rank's working weights.
  void finalize();
  bool finalized() const;
  const offload::MemoryPlan& plan() const;  // after finalize
  // The plan for the parameters registered so far, without allocating (for --plan printing).
  offload::MemoryPlan preview_plan() const;

  const Config& config() const;
  const offload::FlatLayout& layout() const;
  // This rank and the number of ranks (0 and 1 without a communicator), and the rank's shard
  // of the flat space (all of it for one rank).
  int rank() const;
  int world_size() const;
  offload::FlatLayout::Range shard() const;
  device::Device& device();
  // The stream the trainer computes on (high priority).
  device::Stream& compute_stream();

  // Device pointer of p's working weights (config.dtype; 16-bit as raw bits).
  void* param_data(ParamId p);

  // ---- the step ----
  void begin_step();
  // Device memory for p's gradient in this micro-step (config.grad_dtype), valid until
  // grads_ready(p). The trainer writes it with work on compute_stream(). When the trainer
  // trains with loss scaling (fp16), the gradient is of the scaled loss.
  void* grad_slot(ParamId p);
  // The gradients of `params` are complete in stream order (the work writing them has been
  // enqueued on compute_stream()), and work enqueued after this call no longer reads their
  // weights in this step (with DPU, the next weights may be copied in right behind it: Note
  // [DPU uploads]). Returns at once.
  void grads_ready(std::span<const ParamId> params);
  void grads_ready(std::initializer_list<ParamId> params) {
    grads_ready(std::span<const ParamId>(params.begin(), params.size()));
  }
  StepReport end_step();
  // The scale to multiply the loss by (1 without loss scaling) in the current step, or the
  // next one between steps. Note [Step loss scale]: it changes only at an optimizer step's
  // end_step(), on the trainer's thread (and at load_checkpoint / save_checkpoint / flush()
  // between steps), never under the trainer's feet: with DPU it is the scale after the updates
  // collected so far (update n-1 at step n's end), since update n is still running. Each step's
  // gradient is unscaled by the scale in force at its first micro-step's begin_step(), the one
  // this returned, whatever a running update does to the scale meanwhile.
  double loss_scale() const;
  // The learning rate of the optimizer steps launched from now on (a schedule calls it before
  // each end_step); config().lr until then. An update already running (DPU) keeps its own.
  // Not saved in checkpoints: a schedule is a function of step(). Throws InvalidArgument
  // unless finite and >= 0.
  void set_lr(double lr);
  double lr() const;
  std::int64_t step() const;

  // Waits until every update is applied and uploaded (DPU included); the working weights on
  // the device then equal the master weights rounded to config.dtype.
  void flush();

  // ---- agreement among ranks (between steps) ----
  // Reduces `values` over the ranks with `op` and returns the result, bit-identical on every
  // rank (for logged losses averaged over ranks, and stop decisions every rank must take
  // alike: the elapsed time's maximum, a non-finite loss anywhere). Collective: every rank
  // calls it at the same point of its sequence of collective calls (Note [Partitioned step]),
  // with as many values. Every rank's values are all-gathered as raw bytes on the engine's comm
  // stream, so the call is ordered with the engine's own collectives, and each rank reduces
  // them in rank order in double: kSum adds rank 0's, then rank 1's, ...; kMax keeps the
  // largest, and NaN when any rank has a NaN. Blocks until the result is there. One rank:
  // returns `values` as they are, with no collective. Only after finalize() and outside a
  // micro-step (InvalidArgument otherwise); BackendError for a failed collective.
  std::vector<double> all_reduce_scalars(std::span<const double> values, comm::ReduceOp op);

  // ---- inspection (tests, export) ----
  // p's fp32 master weights (after flush(), the latest update).
  std::vector<float> master(ParamId p);
  // p's working weights as on the device now, converted to fp32.
  std::vector<float> working(ParamId p);
  // Adam's first and second moments of p, as fp32 (empty for optimizers without them).
  std::vector<float> moment(ParamId p, int which);

  // ---- checkpoints (Note [Checkpoint] in checkpoint.cpp) ----
  // Atomically writes dir/zoro.ckpt (the directory is created). Only between steps. With N > 1
  // ranks (collective): a new dir/rank-<r>-of-<N>.step-<S>.gen-<G>.ckpt per rank, then rank 0
  // atomically replaces dir/manifest.txt naming them (Note [Partitioned checkpoint] in
  // engine_checkpoint.cpp): a crash mid-save keeps the previous checkpoint.
  void save_checkpoint(const std::string& dir);
  // Restores a checkpoint written by the same model (layout) and optimizer; continuing gives
  // the same results as a run that never stopped. Refuses truncated, corrupted or foreign
  // checkpoints with IoError / InvalidArgument naming the problem, and one written by another
  // number of ranks (resharding is not supported yet). With N > 1 ranks it is collective, and
  // when any rank refuses, every rank throws and none has changed its state.
  void load_checkpoint(const std::string& dir);

  // ---- test hooks ----
  // Called on the thread running a synchronous update, after chunk k's copy to the device was
  // enqueued and before chunk k+1 is computed. For tests that prove the overlap of the copy of
  // chunk k with the update of chunk k+1 by ordering; never set in production.
  void set_after_chunk_upload_hook(std::function<void(std::size_t chunk)> hook);
  // Called on the thread running an update (the updater thread with DPU) before it starts the
  // update of optimizer step `step` (1-based). For tests that hold a DPU update back while the
  // trainer goes on; never set in production.
  void set_update_start_hook(std::function<void(std::int64_t step)> hook);

  // ---- timeline ----
  // The trace of stream tasks and host workers (enabled by config.trace); may be null.
  device::Trace* trace();
  void write_trace(const std::string& path);

 private:
  // The bodies of the public calls of the same names, which mark the engine failed when one
  // throws BackendError (Note [Failing rank]).
  StepReport end_step_impl();
  void save_checkpoint_impl(const std::string& dir);
  void load_checkpoint_impl(const std::string& dir);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zoro
