#!/usr/bin/env bash
# The state-compression measurements of docs/state-compression.md: every method and ratio on
# the shipped Shakespeare model and the tiny real model in ../shared/models, on the held-out
# last 10% of tinyshakespeare (the trainer's split), each score the mean over 8 windows
# (prefixes whose starts are spread over the text). Writes JSON lines and SVGs into OUT.
# Usage: bash bench/state_fidelity.sh [OUT=/tmp/state-fidelity] [RWKV7=build/rwkv7]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/state-fidelity}"
bin="${2:-build/rwkv7}"
mkdir -p "$out"
text=../shared/data/tinyshakespeare.txt
held=$(python3 -c "import os; print(int(os.path.getsize('$text') * 0.1))")
tail -c "$held" "$text" > "$out/heldout.txt"
declare -A models=([shakespeare]=models/rwkv7-shakespeare-L4-C128.pth
                   [tiny]=../shared/models/tiny-rwkv7-834K.pth)
for name in shakespeare tiny; do
  m=${models[$name]}
  run() {
    nice -n 10 "$bin" eval --task state-fidelity -m "$m" --text-file "$out/heldout.txt" -t 1 \
      --windows "${W:-8}" --json "$@"
  }
  # compress once after M tokens; compare over the next 256 and the next 32 tokens
  run --prefix-tokens 1000,10000,100000 --continue 256 --svg "$out/$name-c256.svg" > "$out/$name-c256.jsonl"
  run --prefix-tokens 1000,10000,100000 --continue 32 --svg "$out/$name-c32.svg" > "$out/$name-c32.jsonl"
  # a state that lives compressed: compressed again after every 256 tokens (the tiny model:
  # 2 windows: 12 layers of 64x64 SVDs x 40 compressions x 45 configurations take ~1.3 min a
  # window, and it hardly uses its state anyway)
  [ $name = tiny ] && rw=2 || rw=8
  W=$rw run --prefix-tokens 1000,10000 --continue 256 --recompress-every 256 \
      --svg "$out/$name-recompress.svg" > "$out/$name-recompress.jsonl"
  # adaptive at exactly the ratios fixed rank reached (equal bytes)
  for f in "" -bf16 -int8; do
    ratios=$(python3 -c "
import json
rs = sorted({round(json.loads(l)['ratio'], 6) for l in open('$out/$name-c256.jsonl')
             if json.loads(l)['method'] == 'lowrank$f' and json.loads(l)['prefix_tokens'] == 10000})
print(','.join('%.6f' % (r + 1e-6) for r in rs))")
    for c in 256 32; do
      run --prefix-tokens 10000 --continue $c --method "lowrank$f,adaptive$f" --ratio "$ratios" \
          > "$out/$name-equal$f-c$c.jsonl"
    done
  done
done
echo "done: $out" >&2
