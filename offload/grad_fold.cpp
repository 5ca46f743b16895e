#include "offload/grad_fold.h"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <atomic>
#include <bit>
#include <vector>

#include "runtime/base/check.h"
#include "runtime/base/half.h"

namespace zoro::offload {

namespace {

double block_sum_squares(const float* x, std::size_t n) {
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  return sum;
}

// One block: convert, store or add, and report whether every incoming value was finite. The
// finiteness test is on the bits (exponent all ones), which keeps the loop vectorisable.
template <class Load>
bool fold_block(const Load& load, std::size_t begin, std::size_t n, bool first, float* out) {
  std::uint32_t all_ones_exponent = 0;
  if (first) {
    for (std::size_t i = 0; i < n; ++i) {
      const float g = load(begin + i);
      all_ones_exponent |= ((std::bit_cast<std::uint32_t>(g) & 0x7F800000u) == 0x7F800000u);
      out[i] = g;
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const float g = load(begin + i);
      all_ones_exponent |= ((std::bit_cast<std::uint32_t>(g) & 0x7F800000u) == 0x7F800000u);
      out[i] += g;
    }
  }
  return all_ones_exponent == 0;
}

// ThreadSanitizer cannot see oneTBB's synchronisation (the system libtbb is not
// instrumented), so a sanitizer build folds the blocks one after another: the same blocks,
// the same sums, in the same order (Note [Deterministic norm]).
#if defined(__SANITIZE_THREAD__)
constexpr bool kParallelBlocks = false;
#else
constexpr bool kParallelBlocks = true;
#endif

template <class Body>
void for_each_block(std::size_t elems, const Body& body) {
  const std::size_t blocks = (elems + kNormBlockElems - 1) / kNormBlockElems;
  if (blocks <= 1 || !kParallelBlocks) {
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t begin = b * kNormBlockElems;
      body(b, begin, std::min(kNormBlockElems, elems - begin));
    }
    return;
  }
  tbb::parallel_for(tbb::blocked_range<std::size_t>(0, blocks, 1),
                    [&](const tbb::blocked_range<std::size_t>& r) {
                      for (std::size_t b = r.begin(); b != r.end(); ++b) {
                        const std::size_t begin = b * kNormBlockElems;
                        body(b, begin, std::min(kNormBlockElems, elems - begin));
                      }
                    });
}

template <class Load>
FoldResult fold(const Load& load, const FoldSegment& s, float* acc) {
  float* out = acc + s.flat_offset;
  const std::size_t blocks = (s.elems + kNormBlockElems - 1) / kNormBlockElems;
  std::vector<double> partial(s.want_norm ? blocks : 0);
  std::atomic<bool> non_finite{false};
  for_each_block(s.elems, [&](std::size_t b, std::size_t begin, std::size_t n) {
    if (!fold_block(load, begin, n, s.first, out + begin)) {
      non_finite.store(true, std::memory_order_relaxed);
    }
    if (s.want_norm) partial[b] = block_sum_squares(out + begin, n);
  });
  FoldResult r;
  r.non_finite = non_finite.load();
  for (double p : partial) r.sum_squares += p;  // block order: Note [Deterministic norm]
  return r;
}

}  // namespace

double sum_squares(const float* acc, std::size_t n) {
  const std::size_t blocks = (n + kNormBlockElems - 1) / kNormBlockElems;
  std::vector<double> partial(blocks);
  for_each_block(n, [&](std::size_t b, std::size_t begin, std::size_t len) {
    partial[b] = block_sum_squares(acc + begin, len);
  });
  double sum = 0;
  for (double p : partial) sum += p;
  return sum;
}

FoldResult fold_segment(const void* bucket, DType wire, const FoldSegment& s, float* acc) {
  ZORO_ASSERT(bucket != nullptr && acc != nullptr);
  switch (wire) {
    case DType::kF32: {
      const auto* g = static_cast<const float*>(bucket) + s.bucket_elem;
      return fold([g](std::size_t i) { return g[i]; }, s, acc);
    }
    case DType::kBF16: {
      const auto* g = static_cast<const std::uint16_t*>(bucket) + s.bucket_elem;
      return fold([g](std::size_t i) { return bf16_to_float(g[i]); }, s, acc);
    }
    case DType::kF16: {
      const auto* g = static_cast<const std::uint16_t*>(bucket) + s.bucket_elem;
      return fold([g](std::size_t i) { return fp16_to_float(g[i]); }, s, acc);
    }
  }
  ZORO_ASSERT(false);
}

}  // namespace zoro::offload
