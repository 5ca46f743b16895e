// The memory plan: before the engine allocates anything, it computes the bytes of every
// category on the device and in pinned host memory (../shared/DESIGN.md section 1), and
// refuses a plan that does not fit the device capacity or the host budget, naming the numbers.
//
//   device       working weights (16-bit or fp32), the gradient bucket ring, a reserve the
//                trainer declares for activations and workspace
//   pinned host  fp32 master, two moments (fp32, or bf16 as an option), the fp32 gradient
//                accumulator (two with DPU: step n's update reads one while step n+1's
//                backward fills the other), the landing zone of the bucket ring, and the
//                half-precision staging of the copy back (the whole model, or a ring of
//                chunks; none for fp32 working weights, which are copied from the master)
//
// Many ranks (ZeRO-2, runtime/engine.h Note [Partitioned step]): the pinned host lines are
// this rank's: master, state, accumulator and staging cover its shard (shard_elems) only, so
// host memory per rank is 1/N of the single-rank figure but for the landing zone (a bucket's
// received piece can be as large as the bucket). The device keeps the full working weights
// and adds one bucket of reduce-scatter staging (a sealed bucket permuted by owner rank).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "runtime/base/dtype.h"

namespace zoro::offload {

struct PlanOptions {
  std::size_t total_elems = 0;           // flat elements (FlatLayout::total_elems)
  DType working = DType::kBF16;          // weights on the device
  DType grad_wire = DType::kBF16;        // gradient buckets on the device and across the link
  DType moments = DType::kF32;           // fp32 or bf16
  int optimizer_states = 2;              // per-element state tensors: Adam 2, Adagrad/Lion 1
  std::size_t bucket_bytes = 0;          // one gradient bucket
  std::size_t bucket_count = 0;          // the ring
  bool dpu = false;                      // delayed parameter update
  std::size_t staging_chunk_elems = 0;   // 0: stage the whole model's half copy
  std::size_t staging_chunks = 0;        // ring length when staging_chunk_elems > 0
  std::size_t device_reserve_bytes = 0;  // the trainer's activations and workspace
  int world_size = 1;                    // ranks sharing the model (ZeRO-2)
  std::size_t shard_elems = 0;           // this rank's host-side elements; 0: total_elems
};

enum class Place { kDevice, kPinnedHost };

struct PlanLine {
  std::string category;
  Place place = Place::kDevice;
  std::size_t bytes = 0;
};

class MemoryPlan {
 public:
  // Validates the options (InvalidArgument naming the field) and computes the lines.
  explicit MemoryPlan(const PlanOptions& options);

  const std::vector<PlanLine>& lines() const { return lines_; }
  std::size_t total(Place place) const;
  std::size_t bytes_of(const std::string& category) const;  // InvalidArgument when unknown

  // Throws OutOfMemory when the device lines exceed `device_capacity` or the host lines
  // exceed `host_budget`; the message lists every line of the side that does not fit.
  void check_fits(std::size_t device_capacity, std::size_t host_budget) const;

  // A table for people: category, place, bytes; and the totals.
  std::string to_string() const;

  // The ranks the model is partitioned over (the pinned host lines are one rank's).
  int world_size() const { return world_size_; }

 private:
  std::string describe(Place place) const;
  std::vector<PlanLine> lines_;
  int world_size_ = 1;
};

}  // namespace zoro::offload
