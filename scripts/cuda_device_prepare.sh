#!/bin/bash
# Builds the CUDA test and benchmark binaries here and gathers what a GPU machine without the
# project's Debian dev packages needs into .device/ (add "/.device/" to .git/info/exclude):
# the binaries (C++ runtime linked in), libhwy, the golden files and the tiny model, and
# cuda_device_check.sh, which runs there as  .device/cuda_device_check.sh  (results in $OUT).
#   scripts/cuda_device_prepare.sh [build-dir]      (RWKV7_SHARED_DIR overrides ../shared)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-cuda}
shared=${RWKV7_SHARED_DIR:-$root/../shared}
dst=$root/.device
cmake -S "$root" -B "$build" -G Ninja -DRWKV7_CUDA=ON -DRWKV7_BUILD_TESTS=OFF \
  -DCMAKE_CUDA_ARCHITECTURES="90-real;90-virtual" >/dev/null
ninja -C "$build" rwkv7_cuda_tests rwkv7_cuda_bench
mkdir -p "$dst/bin" "$dst/lib" "$dst/shared/golden" "$dst/shared/models"
cp "$build/rwkv7_cuda_tests" "$build/rwkv7_cuda_bench" "$dst/bin/"
cp -L "$(ldd "$build/rwkv7_cuda_tests" | awk '/libhwy/ {print $3}')" "$dst/lib/"
cp "$shared"/golden/*.golden.safetensors "$shared"/golden/rand-*.pth "$dst/shared/golden/"
cp "$shared/models/tiny-rwkv7-834K.pth" "$dst/shared/models/"
cp "$root/scripts/cuda_device_check.sh" "$dst/"
du -sh "$dst"
