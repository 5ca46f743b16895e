// A stand-in trainer for the engine tests of tests/runtime (the partitioned engine's and the
// size-one communicator's): per micro-step, "backward" writes each parameter's gradient into
// its grad_slot() with a copy on the compute stream, in reverse registration order, and
// hands it over with grads_ready(), as a real backward does.
#pragma once

#include <cstring>
#include <functional>
#include <utility>
#include <vector>

#include "runtime/base/half.h"
#include "runtime/engine.h"

namespace zoro::testing {

class GradFeeder {
 public:
  GradFeeder(Engine& engine, std::vector<ParamId> ids) : engine_(engine), ids_(std::move(ids)) {
    std::size_t bytes = 0;
    for (ParamId p : ids_) bytes += engine_.layout().slot(p).numel * 4;
    src_ = engine_.device().allocate(device::MemoryKind::kPinnedHost, bytes);
  }

  // grads[k] is the gradient of ids[k] (converted to the wire dtype here); an empty entry
  // produces no gradient this micro-step.
  StepReport micro_step(const std::vector<std::vector<float>>& grads) {
    engine_.begin_step();
    const DType wire = engine_.config().grad_dtype;
    const std::size_t gb = size_of(wire);
    auto* base = src_.as<std::byte>();
    std::size_t off = 0;
    for (std::size_t k = ids_.size(); k-- > 0;) {
      if (grads[k].empty()) continue;
      void* slot = engine_.grad_slot(ids_[k]);
      std::byte* src = base + off;
      for (std::size_t i = 0; i < grads[k].size(); ++i) {
        const float g = grads[k][i];
        if (wire == DType::kF32) {
          std::memcpy(src + 4 * i, &g, 4);
        } else {
          const std::uint16_t bits = wire == DType::kBF16 ? float_to_bf16(g) : float_to_fp16(g);
          std::memcpy(src + 2 * i, &bits, 2);
        }
      }
      engine_.compute_stream().copy_async(slot, src, grads[k].size() * gb);
      engine_.grads_ready({ids_[k]});
      off += grads[k].size() * 4;
    }
    StepReport r = engine_.end_step();
    engine_.compute_stream().synchronize();  // the pinned source is reused next micro-step
    return r;
  }

 private:
  Engine& engine_;
  std::vector<ParamId> ids_;
  device::Buffer src_;
};

}  // namespace zoro::testing
