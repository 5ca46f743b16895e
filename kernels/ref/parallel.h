// Internal to kernels/ref: how the reference kernels spread a loop over oneTBB's arena.
#pragma once

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace zoro::kernels::ref::detail {

// Note [TBB under ThreadSanitizer] (as in offload/optim/cpu_executor.cpp): the system's libtbb
// is not instrumented, so TSan sees neither the spawn -> run nor the run -> join edge of a
// tbb::parallel_for, and reports oneTBB's own task objects (built by one thread, run by a
// thief) as races. Under TSan the same chunks therefore run on plain std::threads (whose
// create and join TSan understands): it still checks that no two chunks of a kernel touch
// the same memory, which is what matters here.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kTsanBuild = true;
#else
inline constexpr bool kTsanBuild = false;
#endif

// Calls body(begin, end) over [0, n) in chunks of at least `grain` items; serially when n is
// below one grain, so the tiny shapes of the tests and of small models pay no task overhead.
// body must not throw (a std::bad_alloc aside, which is rethrown).
template <class Body>
void parallel_chunks(std::size_t n, std::size_t grain, const Body& body) {
  if (n == 0) return;
  if (n <= grain) {
    body(std::size_t{0}, n);
    return;
  }
  if constexpr (kTsanBuild) {
    constexpr std::size_t kMaxThreads = 4;
    const std::size_t chunks = std::min(kMaxThreads, (n + grain - 1) / grain);
    const std::size_t per = (n + chunks - 1) / chunks;
    std::vector<std::exception_ptr> errors(chunks);
    std::vector<std::thread> threads;
    for (std::size_t k = 1; k < chunks; ++k) {
      threads.emplace_back([&, k] {
        try {
          body(k * per, std::min(n, (k + 1) * per));
        } catch (...) {
          errors[k] = std::current_exception();
        }
      });
    }
    try {
      body(std::size_t{0}, std::min(n, per));
    } catch (...) {
      errors[0] = std::current_exception();
    }
    for (auto& t : threads) t.join();
    for (auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
  } else {
    tbb::parallel_for(tbb::blocked_range<std::size_t>(0, n, grain),
                      [&](const tbb::blocked_range<std::size_t>& r) { body(r.begin(), r.end()); });
  }
}

// Work items per task that keep each task around tens of microseconds: `elems_per_item`
// is the inner loop's length.
inline std::size_t grain_for(std::size_t elems_per_item) {
  constexpr std::size_t kElemsPerTask = 1 << 15;
  const std::size_t g = kElemsPerTask / (elems_per_item == 0 ? 1 : elems_per_item);
  return g == 0 ? 1 : g;
}

}  // namespace zoro::kernels::ref::detail
