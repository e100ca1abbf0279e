#!/usr/bin/env bash
# The passkey experiment of docs/long-context.md ("Passkey: curriculum against fixed contexts"):
# the shipped byte-level Shakespeare model (L4 C128) fine-tuned on passkey samples three ways
# with the same token budget (STEPS steps of ~4.2K tokens):
#   curriculum  samples of 256, then 1,024, then 4,096 positions (STEPS x 0.3 / 0.3 / 0.4 steps,
#               16 / 4 / 1 rows), each stage from the previous one's model (--init), the
#               learning rate following one cosine over the three stages;
#   short       256-position samples only (16 rows);
#   long        4,096-position samples from step 0 (1 row).
# Every model is scored on a test set of another seed (lengths 1K..64K x depths 0..1), and
# every stage's wall time is printed.
#   [BIN=build/rwkv7] [STEPS=2000] [THREADS=1] [RUNS="curriculum short long"] bash tools/passkey_experiment.sh [OUT_DIR]
#   (OUT_DIR default /tmp/rwkv7-passkey). Prints "ACC <run> overall [(length, depth, acc)...]"
#   and "TIME <run> <seconds>".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/build/rwkv7}
BASE=$ROOT/models/rwkv7-shakespeare-L4-C128.pth
FILLER=$ROOT/../shared/data/tinyshakespeare.txt
[ -f "$FILLER" ] || { echo "passkey_experiment: $FILLER is missing (../shared)" >&2; exit 1; }
OUT=${1:-/tmp/rwkv7-passkey}
T=${THREADS:-1}
STEPS=${STEPS:-2000}
RUNS=${RUNS:-curriculum short long}
mkdir -p "$OUT"
cd "$OUT"
DEPTHS=0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1

# A sample of length L has L + 6 tokens: the context (filler, key, question) and the answer
# " K"; the trainer's rows are ctx + 1 tokens, so --ctx L+6 with --ctx-schedule L+6:0 makes each
# row exactly one sample (the last target is the next sample's first byte).
data() {  # data LENGTH SAMPLES: training samples of seed 1 as raw bytes (LENGTH.bytes)
  local len=$1 n=$2
  local per_cell=$(((n + 10) / 11))
  "$BIN" data passkey --filler "$FILLER" --lengths "$len" --depths "$DEPTHS" \
    --per-cell "$per_cell" --seed 1 -o "train-$len.jsonl" > /dev/null
  # The validation tail repeats the first 4 samples (the runs do not validate; it only has to exist).
  python3 - "$len" <<'PY'
import json, sys
n = sys.argv[1]
s = [bytes(json.loads(l)["tokens"]) for l in open(f"train-{n}.jsonl")]
assert len({len(x) for x in s}) == 1
open(f"train-{n}.bytes", "wb").write(b"".join(s) + b"\0" + b"".join(s[:4]))
PY
}
val_fraction() {  # the 4 samples (+ pad byte) of LENGTH.bytes' tail
  python3 -c "import os; n=os.path.getsize('train-$1.bytes'); print(repr((4 * ($1 + 6) + 0.5) / n))"
}
lr_at() {  # the learning rate of one cosine from 1e-3 to 1e-4 over STEPS, at step $1
  python3 -c "import math; print('%.6g' % (1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi * $1 / $STEPS))))"
}
stage() {  # stage OUT LENGTH ROWS STEPS FROM WARMUP LR0 LR1
  local out=$1 len=$2 rows=$3 steps=$4 from=$5 warmup=$6 lr0=$7 lr1=$8
  local ctx=$((len + 6))
  "$BIN" train --init "$from" --data "train-$len.bytes" --val-fraction "$(val_fraction "$len")" \
    --ctx "$ctx" --ctx-schedule "$ctx:0" --batch "$rows" --steps "$steps" --warmup "$warmup" \
    --lr-init "$lr0" --lr-final "$lr1" --val-every 0 --seed 1 -t "$T" -o "$out" \
    --log-json "$out-log.jsonl" > "$out.log" 2>&1
}
score() {  # score RUN MODEL
  "$BIN" eval -m "$2" --task passkey --data test.jsonl --json -t "$T" --svg "$OUT/passkey-$1.svg" > "eval-$1.json"
  python3 -c "import json; d=json.load(open('eval-$1.json')); print('ACC $1', round(d['accuracy'], 3), [(int(c['length']), c['depth'], c['accuracy']) for c in d['cells']])"
}

S1=$((STEPS * 3 / 10)) S2=$((STEPS * 6 / 10))
data 256 $((STEPS * 16))
data 1024 $(((S2 - S1) * 4))
data 4096 "$STEPS"
"$BIN" data passkey --filler "$FILLER" --lengths 1024,4096,16384,65536 --depths 0,0.25,0.5,0.75,1 \
  --per-cell 4 --seed 2 -o test.jsonl > /dev/null
score base "$BASE"

for run in $RUNS; do
  t0=$(date +%s.%N)
  case $run in
    curriculum)
      stage cur1 256 16 "$S1" "$BASE" 20 1e-3 "$(lr_at "$S1")"
      stage cur2 1024 4 $((S2 - S1)) cur1/model.pth 0 "$(lr_at "$S1")" "$(lr_at "$S2")"
      stage curriculum 4096 1 $((STEPS - S2)) cur2/model.pth 0 "$(lr_at "$S2")" 1e-4
      ;;
    short) stage short 256 16 "$STEPS" "$BASE" 20 1e-3 1e-4 ;;
    long) stage long 4096 1 "$STEPS" "$BASE" 20 1e-3 1e-4 ;;
    *) echo "passkey_experiment: unknown run $run" >&2; exit 1 ;;
  esac
  echo "TIME $run $(python3 -c "print(round($(date +%s.%N) - $t0, 1))")"
  score "$run" "$run/model.pth"
done
