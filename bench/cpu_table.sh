#!/usr/bin/env bash
# Reproduces the CPU speed table of the performance issue: random weights of the released
# 0.1B / 0.4B shapes (official init), each format, `rwkv7 bench` with 2 threads, prompt 512,
# 128 decoded tokens, median of 3 within a process; RUNS=n (default 1) repeats each
# measurement in n processes and reports the median of those (the machine is shared and
# single processes move by ±15%). Prints a markdown table with the rwkv.cpp figures beside.
# Usage: bench/cpu_table.sh [WORKDIR]   (needs ~6 GB of disk for the 0.4B files)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./build/rwkv7
work="${1:-/tmp/rwkv7-bench}"
mkdir -p "$work"
shapes="${SHAPES:-0.1b 0.4b}"
formats="${FORMATS:-f32 bf16 q8_0 q4_0}"
declare -A ref_decode=([0.1b/f32]=63.9 [0.1b/bf16]=109.4 [0.1b/q8_0]=129.5 [0.1b/q4_0]=138.6
                       [0.4b/f32]=24.1 [0.4b/bf16]=42.3 [0.4b/q8_0]=55.4 [0.4b/q4_0]=59.6)
declare -A ref_prefill=([0.1b/f32]=481.6 [0.1b/bf16]=418.4 [0.1b/q8_0]=456.4 [0.1b/q4_0]=423.9
                        [0.4b/f32]=158.1 [0.4b/bf16]=145.8 [0.4b/q8_0]=150.2 [0.4b/q4_0]=133.5)
echo "| shape | format | decode tok/s | rwkv.cpp | ratio | prefill tok/s | rwkv.cpp | ratio | decode % of limit | prefill % of limit | peak MB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for shape in $shapes; do
  src="$work/$shape-f32.pth"
  [ -f "$src" ] || $bin init --preset "$shape" -o "$src" >&2
  for fmt in $formats; do
    model="$src"
    if [ "$fmt" != f32 ]; then
      model="$work/$shape-$fmt.gguf"
      [ -f "$model" ] || $bin convert "$src" "$model" --type "$fmt" >&2
    fi
    runs=()
    for _ in $(seq "${RUNS:-1}"); do
      runs+=("$($bin bench -m "$model" -t 2 --prompt 512 --gen 128 --repeat 3 --json)")
    done
    python3 - "$shape" "$fmt" "${ref_decode[$shape/$fmt]}" "${ref_prefill[$shape/$fmt]}" "${runs[@]}" <<'PY'
import json, statistics, sys
shape, fmt, rd, rp = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
all_runs = [json.loads(a) for a in sys.argv[5:]]
j = {k: statistics.median(r[k] for r in all_runs)
     for k in ("decode_tok_s", "prefill_tok_s", "decode_fraction_of_limit",
               "prefill_fraction_of_limit", "peak_rss_mb")}
print(f"| {shape} | {fmt} | {j['decode_tok_s']:.1f} | {rd} | {j['decode_tok_s']/rd:.2f} | {j['prefill_tok_s']:.1f} | {rp} | "
      f"{j['prefill_tok_s']/rp:.2f} | {100*j['decode_fraction_of_limit']:.0f}% | {100*j['prefill_fraction_of_limit']:.0f}% | {j['peak_rss_mb']:.0f} |")
PY
  done
done
