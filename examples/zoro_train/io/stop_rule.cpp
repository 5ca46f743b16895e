#include "examples/zoro_train/io/stop_rule.h"

#include <cmath>
#include <sstream>

#include "runtime/base/check.h"

namespace zoro::train {

void StopRule::validate() const {
  ZORO_CHECK(std::isfinite(budget_hours) && budget_hours >= 0,
             "stop rule: budget_hours " << budget_hours << " is negative");
  ZORO_CHECK(std::isfinite(min_gain_per_hour) && min_gain_per_hour >= 0,
             "stop rule: min_gain_per_hour " << min_gain_per_hour << " is negative");
  ZORO_CHECK(window >= 2, "stop rule: window " << window << " must be at least 2 evals");
}

std::optional<std::string> should_stop(const StopRule& rule, double elapsed_hours,
                                       std::span<const EvalPoint> evals) {
  rule.validate();
  std::ostringstream why;
  if (rule.budget_hours > 0 && elapsed_hours >= rule.budget_hours) {
    why << "the compute budget of " << rule.budget_hours << " h is spent (" << elapsed_hours
        << " h elapsed)";
    return why.str();
  }
  const auto window = static_cast<std::size_t>(rule.window);
  if (rule.min_gain_per_hour > 0 && evals.size() >= window) {
    const EvalPoint& first = evals[evals.size() - window];
    const EvalPoint& last = evals.back();
    const double hours = last.hours - first.hours;
    if (hours > 0) {
      const double gain = (first.loss - last.loss) / hours;
      if (gain < rule.min_gain_per_hour) {
        why << "the eval loss gained " << gain << " per hour over the last " << rule.window
            << " evals (" << first.loss << " at step " << first.step << " -> " << last.loss
            << " at step " << last.step << "), below the threshold of " << rule.min_gain_per_hour
            << " per hour";
        return why.str();
      }
    }
  }
  return std::nullopt;
}

}  // namespace zoro::train
