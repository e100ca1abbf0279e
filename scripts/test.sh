#!/usr/bin/env bash
# Builds (via setup.sh) and runs every test. Tests read ../shared (golden files, models) and
# skip with a message when it is absent; with CI=true a missing ../shared is a failure.
#
# On a machine with AVX-512, the unit tests again with the kernels capped at AVX2.
# Then the server's end-to-end tests with real clients (tests/server: OpenAI SDK, Chromium),
# and two hostile-input stages (issue 14):
#   1. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/,
#      Debug at -O1), without the tests labelled "slow";
#   2. each libFuzzer harness of fuzz/ for RWKV7_FUZZ_SECONDS (default 5: CI time; longer runs by hand) from build-fuzz/
#      (clang), so a regression in any reader shows up as a finding.
# RWKV7_QUICK=1 skips both stages on a developer machine; CI always runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${RWKV7_JOBS:-$(nproc)}"
has_avx512=false
grep -qw avx512f /proc/cpuinfo 2>/dev/null && has_avx512=true
stage() { echo "test.sh: $1 ($(date +%T))" >&2; }

stage "build and unit tests"
bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 600

# Most users' CPUs have AVX2 but not AVX-512: on a machine with AVX-512 the unit tests run again
# with every kernel capped at AVX2 (RWKV7_ISA, tests/isa_cap.cpp), without the slow ones (~70 s).
if $has_avx512 && grep -qw avx2 /proc/cpuinfo; then
  stage "unit tests with the kernels capped at AVX2 (RWKV7_ISA=avx2, without -L slow)"
  RWKV7_ISA=avx2 ctest --test-dir build --output-on-failure -j"$jobs" --timeout 600 -LE slow
fi

# The server with real clients (issue 9): the official OpenAI SDK and a headless Chromium
# driven by playwright-core (tests/server, npm ci from its lock file). Chromium comes from
# Debian; node and npm are on the machine.
stage "server end to end (openai SDK, Chromium)"
if [ ! -x /usr/bin/chromium ] && { [ "${CI:-}" = true ] || [ "$(id -u)" -eq 0 ]; }; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium \
    >/dev/null
fi
bash tests/server/run.sh

if [ "${RWKV7_QUICK:-0}" = 1 ] && [ "${CI:-}" != true ]; then
  stage "RWKV7_QUICK=1: sanitizer and fuzz stages skipped"
  exit 0
fi

stage "unit tests under ASan + UBSan (build-asan, without -L slow)"
# Without AVX-512 on this machine its kernels cannot run here, so they are not compiled either.
no_avx512=ON
! $has_avx512 || no_avx512=OFF
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g1 -O1" \
  -DRWKV7_SANITIZE=ON -DRWKV7_NO_AVX512_TARGETS=$no_avx512 ${RWKV7_CMAKE_ARGS:-} >/dev/null
ninja -C build-asan -j"$jobs" rwkv7_tests rwkv7 >&2
# The shared-model test with 12 forwards per thread instead of 50 (8 threads still overlap).
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" \
  RWKV7_TEST_FORWARDS=12 ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 900 -LE slow

stage "fuzzers, ${RWKV7_FUZZ_SECONDS:-5} s each"
for name in pth pickle zip safetensors gguf state vocab tokenizer jsonl openai; do
  bash scripts/fuzz.sh "$name" "${RWKV7_FUZZ_SECONDS:-5}"
done
stage "done"
