// Reference fused softmax + cross-entropy over the vocabulary. Contract in kernels.h.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/ref/kernels.h"
#include "kernels/ref/parallel.h"
#include "runtime/base/check.h"

namespace zoro::kernels::ref {

using detail::grain_for;
using detail::parallel_chunks;

namespace {
void check_targets(const std::int32_t* targets, int N, int V, std::int32_t ignore_index) {
  ZORO_CHECK(N > 0 && V > 0, "softmax_cross_entropy: N=" << N << " V=" << V);
  for (int i = 0; i < N; ++i) {
    ZORO_CHECK(targets[i] == ignore_index || (targets[i] >= 0 && targets[i] < V),
               "softmax_cross_entropy: target " << targets[i] << " at row " << i << " outside [0, "
                                                << V << ")");
  }
}
}  // namespace

template <class R>
void softmax_cross_entropy_forward(R* losses, R* lse, const R* logits, const std::int32_t* targets,
                                   int N, int V, std::int32_t ignore_index) {
  check_targets(targets, N, V, ignore_index);
  parallel_chunks(static_cast<std::size_t>(N), grain_for(V), [&](std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) {
      const R* x = logits + r * V;
      R m = -std::numeric_limits<R>::infinity();
      for (int v = 0; v < V; ++v) m = std::max(m, x[v]);
      R sum = 0;
      for (int v = 0; v < V; ++v) sum += std::exp(x[v] - m);
      lse[r] = m + std::log(sum);
      losses[r] = targets[r] == ignore_index ? R(0) : lse[r] - x[targets[r]];
    }
  });
}

template <class R>
void softmax_cross_entropy_backward(R* dlogits, const R* logits, const R* lse,
                                    const std::int32_t* targets, int N, int V, R scale,
                                    std::int32_t ignore_index) {
  check_targets(targets, N, V, ignore_index);
  parallel_chunks(static_cast<std::size_t>(N), grain_for(V), [&](std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) {
      const R* x = logits + r * V;
      R* dx = dlogits + r * V;
      if (targets[r] == ignore_index) {
        std::fill(dx, dx + V, R(0));
        continue;
      }
      for (int v = 0; v < V; ++v) {
        const R p = std::exp(x[v] - lse[r]);
        dx[v] = scale * (p - (v == targets[r] ? R(1) : R(0)));
      }
    }
  });
}

int count_valid_targets(const std::int32_t* targets, int N, std::int32_t ignore_index) {
  return static_cast<int>(std::count_if(targets, targets + std::max(N, 0),
                                        [&](std::int32_t t) { return t != ignore_index; }));
}

template <class R>
double mean_loss(const R* losses, const std::int32_t* targets, int N, std::int32_t ignore_index) {
  double sum = 0;
  int count = 0;
  for (int i = 0; i < N; ++i) {
    if (targets[i] == ignore_index) continue;
    sum += static_cast<double>(losses[i]);
    ++count;
  }
  return count == 0 ? 0.0 : sum / count;
}

#define ZORO_INSTANTIATE(R)                                                                       \
  template void softmax_cross_entropy_forward<R>(R*, R*, const R*, const std::int32_t*, int, int, \
                                                 std::int32_t);                                   \
  template void softmax_cross_entropy_backward<R>(R*, const R*, const R*, const std::int32_t*,    \
                                                  int, int, R, std::int32_t);                     \
  template double mean_loss<R>(const R*, const std::int32_t*, int, std::int32_t);
ZORO_INSTANTIATE(float)
ZORO_INSTANTIATE(double)
#undef ZORO_INSTANTIATE

}  // namespace zoro::kernels::ref
