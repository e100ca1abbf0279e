#!/usr/bin/env bash
# Runs one libFuzzer harness of fuzz/ for a bounded time:  scripts/fuzz.sh NAME SECONDS [ARGS...]
# NAME: pth pickle zip safetensors gguf state vocab tokenizer jsonl openai (or "all": each in turn).
# Builds build-fuzz/ with clang (ASan + UBSan + coverage) on first use; seeds come from
# ../shared (fuzz/make_seeds.py) into build-fuzz/seeds/NAME; what the fuzzer learns is kept in
# build-fuzz/corpus/NAME. A finding (crash, sanitizer report, leak, timeout, out-of-memory,
# an exception other than rwkv7::Error) is written to build-fuzz/findings/NAME/ and the script
# exits non-zero. Extra ARGS go to libFuzzer (e.g. -jobs=2).
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: scripts/fuzz.sh NAME SECONDS [libFuzzer args]}"
seconds="${2:?usage: scripts/fuzz.sh NAME SECONDS [libFuzzer args]}"
shift 2
all=(pth pickle zip safetensors gguf state vocab tokenizer jsonl openai)
if [ "$name" = all ]; then
  for n in "${all[@]}"; do bash "$0" "$n" "$seconds" "$@"; done
  exit 0
fi
shared="${RWKV7_SHARED:-$(cd .. && pwd)/shared}"
dir=build-fuzz
if [ ! -f "$dir/build.ninja" ]; then
  CXX="${RWKV7_FUZZ_CXX:-clang++}" cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
    -DRWKV7_FUZZ=ON -DRWKV7_BUILD_TESTS=OFF ${RWKV7_CMAKE_ARGS:-} >/dev/null
fi
ninja -C "$dir" -j"${RWKV7_JOBS:-$(nproc)}" "fuzz_$name" >&2
if [ ! -d "$dir/seeds/$name" ]; then
  [ -d "$shared" ] || { echo "fuzz.sh: $shared is missing (seed files)" >&2; exit 1; }
  python3 fuzz/make_seeds.py "$shared" "$dir/seeds"
fi
mkdir -p "$dir/corpus/$name" "$dir/findings/$name"
# Inputs up to 256 KiB (the seeds' size); 2 GiB of memory at most, 10 s per input at most.
export RWKV7_FUZZ_VOCAB="${RWKV7_FUZZ_VOCAB:-$shared/vocab/rwkv_vocab_v20230424.txt}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
log="$dir/findings/$name/last-run.log"
set +e
"$dir/fuzz_$name" "$dir/corpus/$name" "$dir/seeds/$name" -max_total_time="$seconds" \
  -max_len=262144 -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$dir/findings/$name/" "$@" >"$log" 2>&1
rc=$?
set -e
runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
echo "fuzz $name: ${runs:-?} executions in ${seconds} s (${speed:-?}/s), exit $rc" >&2
if [ $rc -ne 0 ]; then
  tail -40 "$log" >&2
  echo "fuzz $name: FINDING, see $dir/findings/$name/" >&2
  exit 1
fi
