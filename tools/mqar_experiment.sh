#!/usr/bin/env bash
# The MQAR experiment of docs/long-context.md ("MQAR (2 layers, C 128)"): a fresh 2-layer,
# width-128 byte-level model (V = 256) trained on MQAR samples of length 256 written as raw
# bytes, then `rwkv7 eval --task mqar` on a test set of another seed, pairs x length; then a
# control run of the same recipe on length-32 samples with 4 and 8 pairs (step 5).
# About 27 min of training on one busy core (24 min + 2.5 min); each eval takes seconds.
#   [THREADS=1] [STEPS=3200] [CHUNK=800] [CONTROL_STEPS=3000] bash tools/mqar_experiment.sh [OUT_DIR]
#   (OUT_DIR default /tmp/rwkv7-mqar). The run is cut into chunks of CHUNK steps
#   (--stop-after, then --resume: bit-exact for plain runs) with the test set scored after each;
#   the cosine schedule is over all STEPS. Prints "ACC step overall [(pairs, length, acc)...]".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/build/rwkv7
OUT=${1:-/tmp/rwkv7-mqar}
T=${THREADS:-1}
STEPS=${STEPS:-3200}
CHUNK=${CHUNK:-800}
mkdir -p "$OUT"
cd "$OUT"

# 1. Data. Training: seed 1, length 256, pairs 4..64 (18000 samples); a small validation tail:
#    seed 3; test: seed 2 (64 pairs need length >= 256, so length 128 has pairs 4, 16, 32 only).
"$BIN" data mqar --pairs 4,8,16,32,48,64 --lengths 256 --vocab-size 256 --per-cell 3000 --seed 1 -o train.jsonl
"$BIN" data mqar --pairs 4,8,16,32,48,64 --lengths 256 --vocab-size 256 --per-cell 8 --seed 3 -o val.jsonl
"$BIN" data mqar --pairs 4,16,32 --lengths 128 --vocab-size 256 --per-cell 50 --seed 2 -o test128.jsonl
"$BIN" data mqar --pairs 4,16,32,64 --lengths 256,512 --vocab-size 256 --per-cell 50 --seed 2 -o test256.jsonl
cat test128.jsonl test256.jsonl > test.jsonl

# 2. Token ids -> raw bytes, one byte per id, samples concatenated (each exactly 256 bytes).
#    One pad byte (0) after the training samples: the training part is then 256k + 1 bytes, so the
#    last aligned window (--ctx-schedule) has its (ctx+1)-th token inside the data (needed before
#    commit fa48d4a, which fixed the read past the end; kept so the data stay the same). The validation
#    samples form the tail; VAL_FRACTION selects exactly them (split_tail floors N x fraction).
VAL_FRACTION=$(python3 - <<'EOF'
import json
def samples(p): return [bytes(json.loads(l)["tokens"]) for l in open(p)]
tr, va = samples("train.jsonl"), samples("val.jsonl")
assert all(len(s) == 256 for s in tr + va)
data = b"".join(tr) + b"\0" + b"".join(va)
open("mqar-train.bin", "wb").write(data)
print(repr((len(va) * 256 + 0.5) / len(data)))
EOF
)

# 3. Train. --ctx-schedule 256:0 (one stage) makes the batcher cut rows at multiples of 256, so
#    every row is exactly one sample (inputs = its 256 tokens; the last target is the next
#    sample's first token). Without a schedule, shuffled rows start at any byte.
for ((stop = CHUNK; stop <= STEPS; stop += CHUNK)); do
  R=(); [ "$stop" -gt "$CHUNK" ] && R=(--resume)
  "$BIN" train --layers 2 --embd 128 --head-size 64 --data mqar-train.bin \
    --val-fraction "$VAL_FRACTION" --ctx 256 --ctx-schedule 256:0 --batch 16 --steps "$STEPS" \
    --warmup 100 --lr-init 3e-3 --lr-final 1e-4 --val-every 0 --seed 1 -t "$T" -o run \
    --log-json run-log.jsonl --stop-after "$stop" "${R[@]}"
  # 4. Evaluate (the last chunk also writes the heat map).
  SVG=(); [ "$stop" -ge "$STEPS" ] && SVG=(--svg "$OUT/mqar.svg")
  M=run/model.pth; [ "$stop" -lt "$STEPS" ] && M=run/ckpt-$stop.pth  # --stop-after: a checkpoint
  "$BIN" eval -m "$M" --task mqar --data test.jsonl --json -t "$T" "${SVG[@]}" > "eval-$stop.json"
  python3 -c "import json; d=json.load(open('eval-$stop.json')); print('ACC', $stop, round(d['accuracy'], 3), [(int(c['pairs']), int(c['length']), c['accuracy']) for c in d['cells']])"
done

# 5. The control run: the same model, trainer and schedule on short samples (length 32, 4 and 8
#    pairs, 8000 samples; the validation tail repeats 64 training samples, its loss is only a
#    number), 3000 steps, scored on its own test set (seed 2) and on the pairs x length set above.
"$BIN" data mqar --pairs 4,8 --lengths 32 --vocab-size 256 --per-cell 4000 --seed 1 -o short-train.jsonl
"$BIN" data mqar --pairs 4,8 --lengths 32 --vocab-size 256 --per-cell 100 --seed 2 -o short-test.jsonl
SHORT_FRACTION=$(python3 - <<'EOF2'
import json
tr = [bytes(json.loads(l)["tokens"]) for l in open("short-train.jsonl")]
data = b"".join(tr) + b"\0" + b"".join(tr[:64])
open("short-train.bin", "wb").write(data)
print(repr((64 * 32 + 0.5) / len(data)))
EOF2
)
"$BIN" train --layers 2 --embd 128 --head-size 64 --data short-train.bin --val-fraction "$SHORT_FRACTION" \
  --ctx 32 --ctx-schedule 32:0 --batch 16 --steps "${CONTROL_STEPS:-3000}" --warmup 100 --lr-init 3e-3 --lr-final 1e-4 \
  --val-every 0 --seed 1 -t "$T" -o short --log-json short-log.jsonl
for set in short-test test; do
  "$BIN" eval -m short/model.pth --task mqar --data "$set.jsonl" --json -t "$T" > "eval-short-$set.json"
  python3 -c "import json; d=json.load(open('eval-short-$set.json')); print('ACC short $set', round(d['accuracy'], 3), [(int(c['pairs']), int(c['length']), c['accuracy']) for c in d['cells']])"
done
