#include "offload/optim/cpu_executor.h"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_scheduler_observer.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <exception>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#include "runtime/base/check.h"
#include "runtime/base/log.h"
#include "runtime/device/topology.h"

namespace zoro::optim {
namespace {

// Note [TBB under ThreadSanitizer]
// The system's libtbb is not instrumented, so ThreadSanitizer cannot see the synchronisation
// that tbb::parallel_for provides (spawning a task happens-before the task runs; every task
// happens-before parallel_for returns) and reports the caller's reads of the outputs as races
// with the workers' writes. oneTBB's documented remedy is a TSan-instrumented libtbb
// (-DTBB_SANITIZE=thread); without one, we state exactly those two edges ourselves, on two
// addresses: `g_tsan_start` (a global: the acquiring side must not read the caller's stack
// before it has acquired) released by each caller before handing work over and acquired first
// thing by each task and by the functor given to task_arena::execute (which may run on a
// worker, or on another caller waiting in the arena); `done` (on the caller's stack) released
// by each task and acquired by the caller. Tasks never release `g_tsan_start` nor acquire
// `done`, so no edge joins two tasks: two tasks touching the same element would still be
// reported (checked by injecting such a race).
char g_tsan_start = 0;
#if defined(__SANITIZE_THREAD__)
inline void tsan_release(void* addr) { __tsan_release(addr); }
inline void tsan_acquire(void* addr) { __tsan_acquire(addr); }
#else
inline void tsan_release(void*) {}
inline void tsan_acquire(void*) {}
#endif

// Pins each thread entering the arena to the PU of its slot, and gives it back its previous
// affinity when it leaves (so neither the caller nor a TBB worker that later serves another
// arena stays bound to our cores). The callbacks never throw: a failed binding is logged
// once, since placement only changes speed.
class PinningObserver final : public tbb::task_scheduler_observer {
 public:
  PinningObserver(tbb::task_arena& arena, std::vector<int> cpus)
      : tbb::task_scheduler_observer(arena), cpus_(std::move(cpus)) {
    tsan_release(&constructed_);  // Note [TBB under ThreadSanitizer]: observe() publishes us
    observe(true);
  }
  // observe(false) returns once no callback is running (oneTBB's contract).
  ~PinningObserver() override {
    observe(false);
    tsan_acquire(&callbacks_done_);
  }

  void on_scheduler_entry(bool /*is_worker*/) override {
    tsan_acquire(&constructed_);
    struct Release {
      void* addr;
      ~Release() { tsan_release(addr); }
    } release{&callbacks_done_};
    const int slot = tbb::this_task_arena::current_thread_index();
    if (slot < 0 || cpus_.empty()) return;
    Saved& saved = saved_affinity();
    saved.valid = ::pthread_getaffinity_np(::pthread_self(), sizeof saved.set, &saved.set) == 0;
    try {
      device::Topology::instance().bind_current_thread_to_cpu(
          cpus_[static_cast<std::size_t>(slot) % cpus_.size()]);
    } catch (const std::exception& e) {
      if (!warned_.exchange(true)) {
        ZORO_LOG(kWarn) << "CPU optimizer: could not pin a thread (running unpinned): " << e.what();
      }
    }
  }

  void on_scheduler_exit(bool /*is_worker*/) override {
    tsan_acquire(&constructed_);
    struct Release {
      void* addr;
      ~Release() { tsan_release(addr); }
    } release{&callbacks_done_};
    Saved& saved = saved_affinity();
    if (saved.valid) {
      ::pthread_setaffinity_np(::pthread_self(), sizeof saved.set, &saved.set);
      saved.valid = false;
    }
  }

 private:
  struct Saved {
    cpu_set_t set;
    bool valid = false;
  };
  static Saved& saved_affinity() {
    thread_local Saved saved;
    return saved;
  }

  std::vector<int> cpus_;
  std::atomic<bool> warned_{false};
  char constructed_ = 0;  // addresses for Note [TBB under ThreadSanitizer]
  char callbacks_done_ = 0;
};

}  // namespace

struct CpuExecutor::Impl {
  Options options;
  int threads = 1;
  int numa_node = -1;
  std::vector<int> cpus;
  std::unique_ptr<tbb::global_control> parallelism;  // only when asking for more than default
  std::unique_ptr<tbb::task_arena> arena;
  std::unique_ptr<PinningObserver> observer;
};

CpuExecutor::CpuExecutor(Options options) : impl_(std::make_unique<Impl>()) {
  ZORO_CHECK(options.threads >= 0,
             "CpuExecutor threads=" << options.threads << " must be >= 0 (0: all PUs)");
  ZORO_CHECK(options.grain_elems > 0, "CpuExecutor grain_elems must be > 0");
  impl_->options = options;
  const auto& topo = device::Topology::instance();
  ZORO_CHECK(options.numa_node >= -1 && options.numa_node < topo.numa_node_count(),
             "CpuExecutor numa_node=" << options.numa_node << " but this machine has "
                                      << topo.numa_node_count() << " NUMA node(s)");
  impl_->numa_node = options.numa_node >= 0 ? options.numa_node : topo.current_numa_node();
  std::vector<int> node_cpus = topo.cpus_of_numa_node(impl_->numa_node);
  impl_->threads = options.threads > 0 ? options.threads : static_cast<int>(node_cpus.size());
  if (options.pin_threads) impl_->cpus = std::move(node_cpus);

  if (impl_->threads > tbb::info::default_concurrency()) {
    impl_->parallelism = std::make_unique<tbb::global_control>(
        tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(impl_->threads));
  }
  // One slot reserved for the calling thread: a call runs on the caller + threads-1 workers.
  impl_->arena = std::make_unique<tbb::task_arena>(impl_->threads, 1);
  impl_->arena->initialize();
  if (options.pin_threads) {
    impl_->observer = std::make_unique<PinningObserver>(*impl_->arena, impl_->cpus);
  }
  ZORO_LOG(kInfo) << "CPU optimizer executor: " << impl_->threads << " thread(s) on NUMA node "
                  << impl_->numa_node << (options.pin_threads ? ", pinned" : ", unpinned");
}

CpuExecutor::~CpuExecutor() {
  if (impl_ && impl_->observer) impl_->observer.reset();  // stop observing before the arena
}

int CpuExecutor::threads() const noexcept { return impl_->threads; }
const std::vector<int>& CpuExecutor::cpus() const noexcept { return impl_->cpus; }
int CpuExecutor::numa_node() const noexcept { return impl_->numa_node; }

void CpuExecutor::run_chunked(Range range, std::size_t chunk_elems,
                              const std::function<void(Range)>& body,
                              const ChunkDone& on_chunk_done) {
  ZORO_CHECK(range.begin <= range.end,
             "range [" << range.begin << ", " << range.end << ") has begin > end");
  ZORO_CHECK(static_cast<bool>(body), "run_chunked needs a body");
  const std::size_t chunk = chunk_elems == 0 ? std::max<std::size_t>(range.size(), 1) : chunk_elems;
  const std::size_t grain = impl_->options.grain_elems;
  for (std::size_t begin = range.begin; begin < range.end;) {
    const std::size_t end = begin + std::min(chunk, range.end - begin);
    int done = 0;  // Note [TBB under ThreadSanitizer]
    // When another caller holds the arena's master slot, execute() hands this functor to a
    // worker (or to another caller waiting in the arena): the edges must cover the functor
    // itself, which is therefore built before the release.
    const auto run_chunk = [&] {
      tsan_acquire(&g_tsan_start);
      if (impl_->threads == 1 || end - begin <= grain) {
        body(Range{begin, end});  // nothing to split
        tsan_release(&done);
      } else {
        tbb::parallel_for(
            tbb::blocked_range<std::size_t>(begin, end, grain),
            [&](const tbb::blocked_range<std::size_t>& r) {
              tsan_acquire(&g_tsan_start);
              body(Range{r.begin(), r.end()});
              tsan_release(&done);
            },
            tbb::auto_partitioner());
      }
    };
    tsan_release(&g_tsan_start);
    impl_->arena->execute(run_chunk);
    tsan_acquire(&done);
    if (on_chunk_done) on_chunk_done(Range{begin, end});
    begin = end;
  }
}

}  // namespace zoro::optim
