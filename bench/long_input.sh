#!/usr/bin/env bash
# Long inputs: time per token and peak memory for prompts of 1K and 100K tokens on the 0.1B
# shape (bf16 random weights). Memory must stay near the model's size (constant state), time
# per token must not grow with length (linear time).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./build/rwkv7
work="${1:-/tmp/rwkv7-bench}"
mkdir -p "$work"
model="$work/0.1b-bf16.pth"
[ -f "$model" ] || $bin init --preset 0.1b --dtype bf16 -o "$model" >&2
size_mb=$(du -m "$model" | cut -f1)
for n in ${LENGTHS:-1000 100000}; do
  repeat=1
  [ "$n" -le 10000 ] && repeat=3  # median of 3 for short prompts (the first run maps the weights in)
  j=$($bin bench -m "$model" -t 2 --prompt "$n" --gen 1 --repeat "$repeat" --json --bandwidth-gbs 30 --peak-gflops 300)
  python3 - "$j" "$n" "$size_mb" <<'PY'
import json, sys
j = json.loads(sys.argv[1]); n = int(sys.argv[2]); size = float(sys.argv[3])
print(f"prompt {n:>7} tokens: {1e3/j['prefill_tok_s']:.3f} ms/token, peak {j['peak_rss_mb']:.0f} MB (model file {size:.0f} MB, +{j['peak_rss_mb']-size:.0f} MB)")
PY
done
