#include "offload/memory_plan.h"

#include <cstdio>
#include <limits>
#include <sstream>

#include "runtime/base/check.h"
#include "runtime/base/units.h"

namespace zoro::offload {

namespace {
const char* place_name(Place p) { return p == Place::kDevice ? "device" : "pinned host"; }

std::size_t mul(std::size_t a, std::size_t b, const char* what) {
  ZORO_CHECK(b == 0 || a <= std::numeric_limits<std::size_t>::max() / b,
             "memory plan: " << what << " overflows 64 bits");
  return a * b;
}
}  // namespace

MemoryPlan::MemoryPlan(const PlanOptions& o) {
  ZORO_CHECK(o.total_elems > 0, "memory plan: total_elems must be > 0 (no parameters)");
  ZORO_CHECK(o.bucket_bytes > 0, "memory plan: bucket_bytes must be > 0");
  ZORO_CHECK(o.bucket_count >= 1, "memory plan: bucket_count must be >= 1");
  ZORO_CHECK(o.grad_wire != DType::kF32 || o.working == DType::kF32,
             "memory plan: grad_wire fp32 needs fp32 working weights (mixed precision moves "
             "gradients in 16 bits)");
  ZORO_CHECK(o.moments != DType::kF16, "memory plan: moments must be fp32 or bf16");
  ZORO_CHECK(o.optimizer_states >= 1 && o.optimizer_states <= 2,
             "memory plan: optimizer_states must be 1 or 2");
  ZORO_CHECK(o.staging_chunk_elems == 0 || o.staging_chunks >= 1,
             "memory plan: staging_chunks must be >= 1 when staging_chunk_elems is set");
  ZORO_CHECK(o.world_size >= 1, "memory plan: world_size must be >= 1");
  ZORO_CHECK(o.shard_elems <= o.total_elems, "memory plan: shard_elems ("
                                                 << o.shard_elems << ") exceeds total_elems ("
                                                 << o.total_elems << ")");
  world_size_ = o.world_size;
  const std::size_t p = o.total_elems;
  // Host-side figures cover this rank's shard (all of the model for one rank).
  const std::size_t h = o.shard_elems == 0 ? p : o.shard_elems;
  const std::size_t ring = mul(o.bucket_bytes, o.bucket_count, "bucket ring");
  lines_.push_back({"working weights (" + std::string(zoro::to_string(o.working)) + ")",
                    Place::kDevice, mul(p, size_of(o.working), "working weights")});
  lines_.push_back({"gradient bucket ring", Place::kDevice, ring});
  if (o.device_reserve_bytes > 0) {
    lines_.push_back(
        {"trainer reserve (activations, workspace)", Place::kDevice, o.device_reserve_bytes});
  }
  if (o.world_size > 1) {
    // One bucket permuted by owner rank, and the norm exchange's few bytes per rank.
    lines_.push_back({"reduce-scatter staging", Place::kDevice,
                      o.bucket_bytes + mul(static_cast<std::size_t>(o.world_size), 16, "ranks")});
  }
  lines_.push_back({"fp32 master weights", Place::kPinnedHost, mul(h, 4, "master weights")});
  const auto states = static_cast<std::size_t>(o.optimizer_states);
  lines_.push_back({"optimizer state (" + std::string(zoro::to_string(o.moments)) + " x" +
                        std::to_string(states) + ")",
                    Place::kPinnedHost, mul(h, states * size_of(o.moments), "optimizer state")});
  lines_.push_back({o.dpu ? "fp32 gradient accumulators (x2, DPU)" : "fp32 gradient accumulator",
                    Place::kPinnedHost, mul(h, o.dpu ? 8 : 4, "gradient accumulator")});
  lines_.push_back({"gradient landing zone", Place::kPinnedHost, ring});
  const std::size_t staging_elems =
      o.staging_chunk_elems == 0
          ? h
          : std::min(h, mul(o.staging_chunk_elems, o.staging_chunks, "staging ring"));
  if (o.working != DType::kF32) {
    lines_.push_back({"half-precision staging", Place::kPinnedHost,
                      mul(staging_elems, size_of(o.working), "staging")});
  }
  if (o.world_size > 1) {
    // Per accumulator parity: this rank's norm partial and every rank's, 16 bytes each.
    lines_.push_back({"norm exchange", Place::kPinnedHost,
                      mul(2 * (1 + static_cast<std::size_t>(o.world_size)), 16, "ranks")});
  }
}

std::size_t MemoryPlan::total(Place place) const {
  std::size_t sum = 0;
  for (const auto& l : lines_) sum += l.place == place ? l.bytes : 0;
  return sum;
}

std::size_t MemoryPlan::bytes_of(const std::string& category) const {
  for (const auto& l : lines_) {
    if (l.category == category) return l.bytes;
  }
  ZORO_THROW(InvalidArgument, "memory plan has no category '" << category << "'");
}

std::string MemoryPlan::describe(Place place) const {
  std::ostringstream out;
  bool first = true;
  for (const auto& l : lines_) {
    if (l.place != place) continue;
    out << (first ? "" : ", ") << l.category << " " << format_bytes(l.bytes);
    first = false;
  }
  return out.str();
}

void MemoryPlan::check_fits(std::size_t device_capacity, std::size_t host_budget) const {
  const std::size_t dev = total(Place::kDevice);
  const std::size_t host = total(Place::kPinnedHost);
  if (dev > device_capacity) {
    ZORO_THROW(OutOfMemory, "memory plan does not fit the device: needs "
                                << format_bytes(dev) << " (" << dev
                                << " B: " << describe(Place::kDevice) << ") but the capacity is "
                                << format_bytes(device_capacity) << " (" << device_capacity
                                << " B)");
  }
  if (host > host_budget) {
    ZORO_THROW(OutOfMemory, "memory plan does not fit the host budget: needs "
                                << format_bytes(host) << " (" << host
                                << " B: " << describe(Place::kPinnedHost) << ") but the budget is "
                                << format_bytes(host_budget) << " (" << host_budget << " B)");
  }
}

std::string MemoryPlan::to_string() const {
  std::ostringstream out;
  char line[160];
  for (const auto& l : lines_) {
    std::snprintf(line, sizeof line, "  %-44s %-12s %12s\n", l.category.c_str(),
                  place_name(l.place), format_bytes(l.bytes).c_str());
    out << line;
  }
  std::snprintf(line, sizeof line, "  %-44s %-12s %12s\n  %-44s %-12s %12s\n", "total", "device",
                format_bytes(total(Place::kDevice)).c_str(), "total", "pinned host",
                format_bytes(total(Place::kPinnedHost)).c_str());
  out << line;
  if (world_size_ > 1) {
    out << "  (pinned host: one rank's shard of " << world_size_ << " ranks)\n";
  }
  return out.str();
}

}  // namespace zoro::offload
