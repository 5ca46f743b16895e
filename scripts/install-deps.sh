#!/usr/bin/env bash
# Installs every Debian package zoro's build, tests and benchmarks need. Idempotent: it asks
# apt only for what is missing. Run as root, or with sudo available.
#
# The CUDA toolkit (nvcc, cuBLAS, NCCL) is not a Debian package of the version zoro targets;
# when /usr/local/cuda exists the build uses it, otherwise zoro builds its host backend only.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git clang-format
  libhwloc-dev hwloc libtbb-dev libboost-dev
  libopenmpi-dev openmpi-bin
  libgtest-dev libgmock-dev
  nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
  libopenblas-dev
  python3-dev pybind11-dev python3-numpy python3-pytest python3-torch
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
