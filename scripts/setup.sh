#!/usr/bin/env bash
# Installs the Debian packages rwkv7 needs (only those missing) and builds it into build/.
# Idempotent: run it again after pulling changes.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config libhwy-dev nlohmann-json3-dev libcli11-dev
          libfmt-dev libcpp-httplib-dev libgtest-dev libgmock-dev libbenchmark-dev python3
          clang libclang-rt-14-dev  # clang + libclang_rt.fuzzer: the fuzz/ harnesses
          libopenmpi-dev openmpi-bin)  # data-parallel training (mpirun -np P rwkv7 train)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build_type="${RWKV7_BUILD_TYPE:-Release}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$build_type" ${RWKV7_CMAKE_ARGS:-} >/dev/null
ninja -C build -j"${RWKV7_JOBS:-$(nproc)}" >&2
