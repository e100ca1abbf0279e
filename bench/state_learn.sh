#!/usr/bin/env bash
# The learned state projection of docs/state-compression.md: projections fit on the first 90%
# of tinyshakespeare (the trainer's split) for the shipped Shakespeare model and the tiny real
# model, then state-fidelity on the held-out 10% at M = 1K, 10K, 100K (8 windows, 256 and 32
# continuation tokens), with adaptive-int8 and lowrank-int8 at the same ratios beside them.
# Usage: bash bench/state_learn.sh [OUT=/tmp/state-learn] [RWKV7=build/rwkv7]   (~25 min, 2 threads)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/state-learn}"
bin="${2:-build/rwkv7}"
mkdir -p "$out"
text=../shared/data/tinyshakespeare.txt
size=$(stat -c %s "$text")
head -c $((size - size / 10)) "$text" > "$out/train.txt"
tail -c $((size / 10)) "$text" > "$out/heldout.txt"
declare -A models=([shakespeare]=models/rwkv7-shakespeare-L4-C128.pth
                   [tiny]=../shared/models/tiny-rwkv7-834K.pth)
declare -A ranks=([shakespeare]="2 4 8 16" [tiny]="4 8 16")
for name in shakespeare tiny; do
  m=${models[$name]}
  for r in ${ranks[$name]}; do
    p="$out/$name-key-r$r.safetensors"
    [ -f "$p" ] || "$bin" state learn -m "$m" -t 2 --text-file "$out/train.txt" --rank "$r" \
      --side key --samples 512 --steps 1200 --batch 8 --continue 64 --lr 3e-3 -o "$p" --json \
      > "$out/$name-key-r$r.fit.json"
    for c in 256 32; do
      "$bin" eval --task state-fidelity -m "$m" --text-file "$out/heldout.txt" -t 2 --windows 8 \
        --prefix-tokens 1000,10000,100000 --continue $c --json --projection "$p" \
        --method learned,learned-bf16,learned-int8 > "$out/$name-key-r$r-c$c.jsonl"
    done
  done
  # the SVD methods at exactly the ratios the learned ones reached
  ratios=$(cat "$out/$name"-key-r*-c256.jsonl | python3 -c "
import json, sys
print(','.join('%.6f' % (r + 1e-6) for r in sorted({round(json.loads(l)['ratio'], 6) for l in sys.stdin})))")
  for c in 256 32; do
    "$bin" eval --task state-fidelity -m "$m" --text-file "$out/heldout.txt" -t 2 --windows 8 \
      --prefix-tokens 1000,10000,100000 --continue $c --json \
      --method reset,adaptive-int8,lowrank-int8 --ratio "$ratios" > "$out/$name-svd-c$c.jsonl"
  done
done
echo "done: $out" >&2
