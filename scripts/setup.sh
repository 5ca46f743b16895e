#!/usr/bin/env bash
# The main job on a fresh Debian machine: install what is missing, build zoro (Release), and
# run it. Until zoro-train lands, the main job is the PCIe / copy-bandwidth benchmark on the
# GPU when one is usable, else on the host backend (where it reports memcpy figures).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cuda_args=()
if [ ! -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then
  cuda_args=(-DZORO_CUDA=OFF)
fi
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}"
cmake --build build-release -j "$(nproc)"
exec build-release/bench/pcie/zoro-bench-pcie --device auto --max 256MiB "$@"
