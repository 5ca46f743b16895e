#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this):
#   1. installs missing Debian packages (scripts/install-deps.sh) and checks the formatting;
#   2. builds zoro (CUDA when a toolkit is present; GPU tests skip visibly without a GPU) and
#      runs every test, the install-tree consumer test included;
#   3. builds the host-backend tests under ThreadSanitizer and AddressSanitizer (CUDA off,
#      only what those tests need) and runs them.
# Build trees: build/, build-tsan/, build-asan/ (reused between runs; ccache speeds rebuilds).
# ZORO_TEST_JOBS overrides the parallelism (default: the number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/install-deps.sh

jobs=${ZORO_TEST_JOBS:-$(nproc)}
export CTEST_OUTPUT_ON_FAILURE=1
cuda_args=()
if [ ! -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then
  cuda_args=(-DZORO_CUDA=OFF)
fi

step() { printf '\n=== %s ===\n' "$*"; }

step "format (.clang-format)"
git ls-files -- '*.cpp' '*.h' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror

step "build (RelWithDebInfo)"
cmake -S "$root" -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${cuda_args[@]}"
cmake --build build -j "$jobs"
step "tests"
ctest --test-dir build -j "$jobs" --timeout 900

# TSAN's shadow memory needs a kernel whose mmap randomisation it understands; on kernels
# with more ASLR bits it dies at start ("unexpected memory mapping"): run it without ASLR.
tsan_prefix=()
if command -v setarch >/dev/null && setarch "$(uname -m)" -R true 2>/dev/null; then
  tsan_prefix=(setarch "$(uname -m)" -R)
fi

for san in thread address; do
  dir=build-tsan
  [ "$san" = address ] && dir=build-asan
  step "$san sanitizer: build host-backend tests"
  cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DZORO_SANITIZER="$san" \
    -DZORO_CUDA=OFF -DZORO_BUILD_BENCH=OFF
  cmake --build "$dir" -j "$jobs"
  step "$san sanitizer: tests"
  if [ "$san" = thread ]; then
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
      "${tsan_prefix[@]}" ctest --test-dir "$dir" -L host -j "$jobs" --timeout 900
  else
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" \
      ctest --test-dir "$dir" -L host -j "$jobs" --timeout 900
  fi
done
step "all test suites passed"
