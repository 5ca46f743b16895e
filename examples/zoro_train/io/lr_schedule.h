// The learning-rate schedule of zoro-train: linear warm-up, then cosine decay to min_lr.
//
//   step < warmup:           lr * (step + 1) / warmup
//   warmup <= step < total:  min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,
//                            p = (step - warmup) / (total - warmup)
//   step >= total:           min_lr
//
// A pure function of the step (0-based): a resumed run continues the curve exactly.
#pragma once

#include <cstdint>

namespace zoro::train {

struct LrSchedule {
  double lr = 3e-4;
  double min_lr = 0;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  // InvalidArgument naming the field: lr > 0, 0 <= min_lr <= lr, warmup >= 0, total > 0.
  void validate() const;
};

double lr_at(const LrSchedule& schedule, std::int64_t step);

}  // namespace zoro::train
