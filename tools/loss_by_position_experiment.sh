#!/usr/bin/env bash
# The loss-by-position experiment of docs/long-context.md: the shipped model's shape (L4 C128,
# byte-level) trained twice on tinyshakespeare with one token budget (375 steps x 64 x 256 =
# 6.1M tokens, as the shipped recipe): at a fixed context of 256, and with the length
# curriculum 256 -> 1K -> 4K -> 16K (--ctx-schedule; tokens per step kept by shrinking the
# batch to 16, 4, 1 rows). Then the held-out last 10%: mean loss, and loss by position in 16K
# documents.   [BIN=build/rwkv7] bash tools/loss_by_position_experiment.sh [OUT_DIR]
# About 12 + 12 min on one core (OUT_DIR default /tmp/rwkv7-lbp).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/build/rwkv7}
DATA=$ROOT/../shared/data/tinyshakespeare.txt
[ -f "$DATA" ] || { echo "loss_by_position_experiment: $DATA is missing (../shared)" >&2; exit 1; }
OUT=${1:-/tmp/rwkv7-lbp}
mkdir -p "$OUT"
cd "$OUT"
# The trainer's validation part: the last floor(N x 0.1) bytes.
python3 -c "
d = open('$DATA', 'rb').read(); n = len(d); open('heldout.txt', 'wb').write(d[n - int(n * 0.1):])"
COMMON=(--layers 4 --embd 128 --head-size 32 --data "$DATA" --val-fraction 0.1 --steps 375
  --batch 64 --ctx 256 --lr-init 2e-3 --lr-final 1e-4 --warmup 30 --val-every 0 --seed 1 -t 1)
"$BIN" train "${COMMON[@]}" -o fixed256 > fixed256.log 2>&1
"$BIN" train "${COMMON[@]}" --ctx-schedule 256:0,1024:100,4096:200,16384:300 -o curr16k > curr16k.log 2>&1
for m in fixed256 curr16k; do
  "$BIN" eval -m $m/model.pth --text-file heldout.txt --json -t 1 > $m-eval.json
  "$BIN" eval -m $m/model.pth --task loss-by-position --text-file heldout.txt --doc-tokens 16384 \
    --json --svg $m-lbp.svg -t 1 > $m-lbp.json
  python3 -c "
import json
e, l = json.load(open('$m-eval.json')), json.load(open('$m-lbp.json'))
print('$m', round(e['loss'], 4), [(b['from'], round(b['loss'], 3)) for b in l['buckets']])"
done
