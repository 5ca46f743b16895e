// Sanitizer run-time options for every test binary. Compiled into each executable directly
// (zoro_add_gtest), not through a static library, whose object files are linked only when one
// of their symbols is used: the hooks below are found by the sanitizer run-time, never called
// by our code.

// LeakSanitizer (the ZORO_SANITIZER=address build) reports ~1 KiB that a discovery plugin of hwloc
// allocates while Topology loads (once per process) and never frees. It is not ours to fix;
// suppressing exactly that keeps every real leak of a test binary that opens a device visible.
// The suppression matches a frame below the plugin, which was unloaded by exit, so the stack
// must be unwound without frame pointers (slower mallocs; ASAN_OPTIONS can still override).
// Sanitizers call these hooks by name; other builds never do.
extern "C" const char* __lsan_default_suppressions();
//
// oneTBB: unregistering a task_scheduler_observer (observe(false), which CpuExecutor does before
// its arena dies) drops oneTBB's internal proxy by reference count; a worker still parked
// inside the arena's observer list may hold the last reference at exit, so LSan sometimes
// sees that 40-byte proxy as lost. Ours is unregistered; the proxy is oneTBB's to free.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:hwloc_topology_load\nleak:tbb::detail::r1::observe\n";
}
extern "C" const char* __asan_default_options();
extern "C" const char* __asan_default_options() { return "fast_unwind_on_malloc=0"; }

#if defined(__SANITIZE_THREAD__)
// Note [TBB under ThreadSanitizer] (offload/optim/cpu_executor.cpp): the system libtbb is not
// instrumented, so TSan cannot see how a parallel_for task object, built by the thread that
// splits the range, reaches the thread that steals it (libtbb's task deque). Those reports
// are in oneTBB's own header code (partitioner.h, parallel_for.h, _small_object_pool.h),
// which TSan's documented suppressions (race_top: the top frame only) silence without hiding
// a race in our code, whose frames are never on top of such a report; and the constructors of
// partitioner tree nodes and wait contexts in memory that libtbb recycled (its small-object
// pool, the stack): TBB leaf functions that never call our code, so "race:" on them cannot
// cover one of our races; likewise fold_tree, which only counts references on those nodes
// (its reads go through std::atomic, so the top frame is libstdc++'s, not oneTBB's). Memory
// that libtbb allocates on one thread and frees on another (its observer proxies) is covered
// by "called_from_lib:libtbb.so", which only silences the allocator interceptors when libtbb
// itself calls them. Our own accesses across the pool are
// ordered by the annotations in cpu_executor.cpp and stay checked (a deliberate race in a
// run_chunked body is reported).
extern "C" const char* __tsan_default_suppressions() {
  return "race_top:oneapi/tbb/\n"
         "race_top:tbb::detail::\n"
         "race_top:check_being_stolen\n"
         "race:tbb::detail::d1::node::node\n"
         "race:tbb::detail::d1::tree_node::tree_node\n"
         "race:tbb::detail::d1::wait_context::wait_context\n"
         "race:tbb::detail::d1::fold_tree\n"
         "called_from_lib:libtbb.so\n";
}
#endif
