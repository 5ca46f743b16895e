#include "examples/zoro_train/io/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "runtime/base/check.h"

namespace zoro::train {

void LrSchedule::validate() const {
  ZORO_CHECK(std::isfinite(lr) && lr > 0, "lr schedule: lr " << lr << " must be positive");
  ZORO_CHECK(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= lr,
             "lr schedule: min_lr " << min_lr << " must be in [0, lr=" << lr << "]");
  ZORO_CHECK(warmup_steps >= 0, "lr schedule: warmup_steps " << warmup_steps << " is negative");
  ZORO_CHECK(total_steps > 0, "lr schedule: total_steps " << total_steps << " must be positive");
}

double lr_at(const LrSchedule& s, std::int64_t step) {
  s.validate();
  ZORO_CHECK(step >= 0, "lr schedule: step " << step << " is negative");
  if (step < s.warmup_steps) {
    return s.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  }
  if (step >= s.total_steps) return s.min_lr;
  const double p = static_cast<double>(step - s.warmup_steps) /
                   static_cast<double>(std::max<std::int64_t>(1, s.total_steps - s.warmup_steps));
  return s.min_lr + (s.lr - s.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
}

}  // namespace zoro::train
