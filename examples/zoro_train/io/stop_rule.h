// When zoro-train stops before its last step: the compute budget, and the early-stopping rule
// on the eval loss. Pure logic over (elapsed time, eval history), so it is tested without
// clocks; the trainer feeds it wall-clock hours and acts on the reason.
//
//   budget:  elapsed_hours >= budget_hours                               (budget_hours > 0)
//   gain:    over the last `window` evals, (first loss - last loss) / (hours between them)
//            < min_gain_per_hour                                        (min_gain_per_hour > 0)
//
// should_stop returns a sentence saying which rule fired and with what figures, or nullopt.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace zoro::train {

struct StopRule {
  double budget_hours = 0;       // 0: no budget
  double min_gain_per_hour = 0;  // 0: no early stop
  int window = 5;                // evals, >= 2
  // InvalidArgument naming the field for negative values or a window below 2.
  void validate() const;
};

struct EvalPoint {
  std::int64_t step = 0;
  double hours = 0;  // elapsed when the eval ran
  double loss = 0;
};

// `evals` in the order they ran.
std::optional<std::string> should_stop(const StopRule& rule, double elapsed_hours,
                                       std::span<const EvalPoint> evals);

}  // namespace zoro::train
