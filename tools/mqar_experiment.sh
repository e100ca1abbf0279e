#!/usr/bin/env bash
# The MQAR experiment of docs/long-context.md ("MQAR (2 layers, C 128)"): a 2-layer, width-128
# byte-level model (V = 256) learns multi-query associative recall in two stages, then
# `rwkv7 eval --task mqar` scores it on test sets of other seeds, pairs x length.
#   1. Short stage: a fresh model on dense length-32 samples with 4 and 8 pairs (CONTROL_STEPS).
#   2. Long stage: that model (--init) on length-256 samples with 4..64 pairs (STEPS), scored
#      after every CHUNK steps (--stop-after, then --resume: bit-exact for plain runs; the cosine
#      schedule is over all STEPS), then on a wide set (up to 127 pairs, length 2048) to see
#      where the state runs out.
#   SCRATCH=1 also runs the length-256 stage from a fresh model (no short stage): at this budget
#   it stays at chance (docs/long-context.md).
# About 1.5 + 11 min of training on one core (+ 24 min with SCRATCH=1); each eval takes seconds.
#   [THREADS=1] [STEPS=3200] [CHUNK=800] [CONTROL_STEPS=3000] [SCRATCH=0] \
#     bash tools/mqar_experiment.sh [OUT_DIR]       (OUT_DIR default /tmp/rwkv7-mqar)
# Prints "ACC <stage> <step> overall [(pairs, length, acc)...]".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/build/rwkv7}
OUT=${1:-/tmp/rwkv7-mqar}
T=${THREADS:-1}
STEPS=${STEPS:-3200}
CHUNK=${CHUNK:-800}
mkdir -p "$OUT"
cd "$OUT"

acc() {  # acc LABEL MODEL SET [--svg FILE]: score MODEL on SET.jsonl, print one ACC line
  local label=$1 model=$2 set=$3
  shift 3
  "$BIN" eval -m "$model" --task mqar --data "$set.jsonl" --json -t "$T" "$@" > "eval-$label-$set.json"
  python3 -c "import json; d=json.load(open('eval-$label-$set.json')); print('ACC $label $set', round(d['accuracy'], 3), [(int(c['pairs']), int(c['length']), c['accuracy']) for c in d['cells']])"
}

# 1. Data. Long stage: seed 1, length 256, pairs 4..64 (18000 samples); a small validation tail:
#    seed 3. Short stage: length 32, 4 and 8 pairs (8000 samples, seed 1). Tests: seed 2
#    (64 pairs need length >= 256, so length 128 has pairs 4, 16, 32 only) and the wide set,
#    seed 4 (at V = 256 there are 128 keys: at most 127 pairs).
"$BIN" data mqar --pairs 4,8,16,32,48,64 --lengths 256 --vocab-size 256 --per-cell 3000 --seed 1 -o train.jsonl
"$BIN" data mqar --pairs 4,8,16,32,48,64 --lengths 256 --vocab-size 256 --per-cell 8 --seed 3 -o val.jsonl
"$BIN" data mqar --pairs 4,8 --lengths 32 --vocab-size 256 --per-cell 4000 --seed 1 -o short-train.jsonl
"$BIN" data mqar --pairs 4,8 --lengths 32 --vocab-size 256 --per-cell 100 --seed 2 -o short-test.jsonl
"$BIN" data mqar --pairs 4,16,32 --lengths 128 --vocab-size 256 --per-cell 50 --seed 2 -o test128.jsonl
"$BIN" data mqar --pairs 4,16,32,64 --lengths 256,512 --vocab-size 256 --per-cell 50 --seed 2 -o test256.jsonl
cat test128.jsonl test256.jsonl > test.jsonl
"$BIN" data mqar --pairs 8,16 --lengths 64 --vocab-size 256 --per-cell 50 --seed 4 -o wide-a.jsonl
"$BIN" data mqar --pairs 4,16,32 --lengths 1024,2048 --vocab-size 256 --per-cell 50 --seed 4 -o wide-b.jsonl
"$BIN" data mqar --pairs 64,96,127 --lengths 512,1024,2048 --vocab-size 256 --per-cell 50 --seed 4 -o wide-c.jsonl
cat wide-a.jsonl wide-b.jsonl wide-c.jsonl > wide.jsonl

# 2. Token ids -> raw bytes (the trainer reads bytes; `.bytes`, as `.bin` means binidx), one byte
#    per id, samples concatenated, each exactly one window long. One pad byte (0) after the
#    training samples keeps the data as first written (before commit fa48d4a the last aligned
#    window needed one token past the data). The validation samples form the tail; the printed
#    fraction selects exactly them (split_tail floors N x fraction). The short stage's
#    validation tail repeats 64 training samples: its loss is only a number.
read -r VAL_FRACTION SHORT_FRACTION < <(python3 - <<'PY'
import json
def samples(p): return [bytes(json.loads(l)["tokens"]) for l in open(p)]
tr, va, sh = samples("train.jsonl"), samples("val.jsonl"), samples("short-train.jsonl")
assert all(len(s) == 256 for s in tr + va) and all(len(s) == 32 for s in sh)
long_data = b"".join(tr) + b"\0" + b"".join(va)
short_data = b"".join(sh) + b"\0" + b"".join(sh[:64])
open("mqar-train.bytes", "wb").write(long_data)
open("short-train.bytes", "wb").write(short_data)
print(repr((len(va) * 256 + 0.5) / len(long_data)), repr((64 * 32 + 0.5) / len(short_data)))
PY
)

# 3. Training. --ctx-schedule CTX:0 (one stage) makes the batcher cut rows at multiples of CTX,
#    so every row is exactly one sample (inputs = its tokens; the last target is the next
#    sample's first token). Without a schedule, shuffled rows start at any byte.
long_stage() {  # long_stage DIR [--init MODEL | --layers 2 --embd 128 --head-size 64]
  local dir=$1
  shift
  for ((stop = CHUNK; stop <= STEPS; stop += CHUNK)); do
    local R=()
    [ "$stop" -gt "$CHUNK" ] && R=(--resume)
    "$BIN" train "$@" --data mqar-train.bytes --val-fraction "$VAL_FRACTION" \
      --ctx 256 --ctx-schedule 256:0 --batch 16 --steps "$STEPS" --warmup "$WARMUP" \
      --lr-init "$LR" --lr-final 1e-4 --val-every 0 --seed 1 -t "$T" -o "$dir" \
      --log-json "$dir-log.jsonl" --stop-after "$stop" "${R[@]}"
    local M=$dir/model.pth
    [ "$stop" -lt "$STEPS" ] && M=$dir/ckpt-$stop.pth  # --stop-after: a checkpoint
    acc "$dir-$stop" "$M" test
  done
}

"$BIN" train --layers 2 --embd 128 --head-size 64 --data short-train.bytes \
  --val-fraction "$SHORT_FRACTION" --ctx 32 --ctx-schedule 32:0 --batch 16 \
  --steps "${CONTROL_STEPS:-3000}" --warmup 100 --lr-init 3e-3 --lr-final 1e-4 --val-every 0 \
  --seed 1 -t "$T" -o short --log-json short-log.jsonl
acc short short/model.pth short-test
acc short short/model.pth test

WARMUP=50 LR=1e-3 long_stage curriculum --init short/model.pth
acc curriculum curriculum/model.pth wide --svg "$OUT/mqar-wide.svg"

if [ "${SCRATCH:-0}" = 1 ]; then
  WARMUP=100 LR=3e-3 long_stage scratch --layers 2 --embd 128 --head-size 64
fi
