// Dynamic loss scaling for fp16 training, as torch.cuda.amp.GradScaler does it: the loss is
// multiplied by scale() before backward; a step whose gradients hold an Inf or NaN is skipped
// and the scale multiplied by backoff_factor (not below min); after growth_interval
// consecutive good steps the scale is multiplied by growth_factor. With scaling disabled
// (bf16, fp32) the scale stays 1 and an overflow still skips the step.
#pragma once

#include <algorithm>
#include <cstdint>

#include "runtime/config.h"

namespace zoro {

class LossScaler {
 public:
  LossScaler(const LossScaleConfig& config, bool enabled)
      : config_(config), enabled_(enabled), scale_(enabled ? config.init : 1.0) {}

  double scale() const { return scale_; }
  bool enabled() const { return enabled_; }
  int good_steps() const { return good_steps_; }

  // Records the outcome of a step. Returns whether the optimizer may apply it.
  bool update(bool overflow) {
    if (overflow) {
      good_steps_ = 0;
      if (enabled_) scale_ = std::max(config_.min, scale_ * config_.backoff_factor);
      return false;
    }
    if (enabled_ && ++good_steps_ >= config_.growth_interval) {
      scale_ *= config_.growth_factor;
      good_steps_ = 0;
    }
    return true;
  }

  // For checkpoints.
  void restore(double scale, int good_steps) {
    scale_ = scale;
    good_steps_ = good_steps;
  }

 private:
  LossScaleConfig config_;
  bool enabled_;
  double scale_;
  int good_steps_ = 0;
};

}  // namespace zoro
