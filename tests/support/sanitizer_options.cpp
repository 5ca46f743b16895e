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
