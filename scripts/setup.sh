#!/usr/bin/env bash
# The main job on a fresh Debian machine: install what is missing, build zoro (Release), and
# run zoro-train on its embedded default (on the GPU when one is usable, else on the host
# backend). Arguments go to zoro-train (e.g. --steps 200, or --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cuda_args=()
if [ ! -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then
  cuda_args=(-DZORO_CUDA=OFF)
fi
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}"
cmake --build build-release -j "$(nproc)"
exec build-release/examples/zoro_train/zoro-train "$@"
