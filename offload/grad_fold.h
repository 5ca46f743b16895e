// Folding an arrived gradient bucket into the fp32 host accumulator.
//
// A bucket that landed in pinned memory holds the 16-bit (or fp32) gradients of a few
// parameters, each at its own offset in the bucket. Folding converts each to fp32 and adds it
// into the accumulator at the parameter's flat offset (or stores it, for the parameter's first
// contribution in an optimizer step, so the accumulator never needs a zeroing pass), and keeps
// what the step boundary needs without another pass over memory: whether any element was
// non-finite, and — when asked, on the last micro-step — each parameter's sum of squares of
// its accumulated gradient.
//
// Note [Deterministic norm]: a sum of squares is taken over a fixed grid of kNormBlockElems
// blocks counted from the parameter's first element: in double, in element order within a
// block, then over blocks in order. Blocks are folded in parallel (oneTBB), but the grid and
// the order of the final sum never depend on thread count, bucket sizes or arrival order, so
// the global norm (summed over parameters in registration order) is reproducible bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/base/dtype.h"

namespace zoro::offload {

inline constexpr std::size_t kNormBlockElems = std::size_t{1} << 15;

struct FoldSegment {
  std::size_t bucket_elem = 0;  // where the gradient starts in the bucket, in elements
  std::size_t flat_offset = 0;  // where it goes in the accumulator
  std::size_t elems = 0;
  bool first = false;      // the first contribution this step: store, do not add
  bool want_norm = false;  // compute the accumulated gradient's sum of squares
};

struct FoldResult {
  double sum_squares = 0;   // of the accumulated values, when want_norm
  bool non_finite = false;  // an Inf or NaN among the incoming gradient values
};

// Folds one segment (in parallel over its blocks). `bucket` holds gradients of `wire` type.
// Segments of different parameters may be folded concurrently (disjoint accumulator ranges).
FoldResult fold_segment(const void* bucket, DType wire, const FoldSegment& segment,
                        float* accumulator);

// Sum of squares of acc[0, n) as Note [Deterministic norm] defines it (the sum fold_segment
// computes for want_norm).
double sum_squares(const float* acc, std::size_t n);

}  // namespace zoro::offload
