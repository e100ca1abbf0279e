#!/usr/bin/env bash
# Does --carry-state (and --replay) help? Three byte-level L3 C128 models on tinyshakespeare's
# first 90%, the same steps; each scored on the held-out 10% as one stream and as rows of 64
# (docs/long-context.md, "Does it help?"). Usage: tools/carry_state_experiment.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/build/rwkv7"
work="${1:-/tmp/rwkv7-carry}"
mkdir -p "$work"
python3 - "$work" <<'PY'
import sys
d = open("../shared/data/tinyshakespeare.txt", "rb").read()
n = len(d) * 9 // 10
open(sys.argv[1] + "/train.txt", "wb").write(d[:n])
open(sys.argv[1] + "/val.txt", "wb").write(d[n:])
PY
cd "$work"
flags="--data train.txt --val-fraction 0.01 --layers 3 --embd 128 --head-size 32 --batch 8 --ctx 64
  --steps 1500 --warmup 50 --lr-init 2e-3 --lr-final 1e-4 --seed 1 -t 1 --val-every 0"
for cfg in "plain|" "carry|--carry-state" "replay|--carry-state --replay 0.25"; do
  name=${cfg%%|*} extra=${cfg#*|}
  rm -rf "$name"
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$bin" train $flags $extra -o "$name" > "$name.log" 2>&1
  stream=$("$bin" eval -m "$name/model.pth" --text-file val.txt --json -t 1)
  rows=$("$bin" eval -m "$name/model.pth" --text-file val.txt --rows 64 --json -t 1)
  echo "$name: trained in $(($(date +%s) - start)) s; one stream $stream; rows of 64 $rows"
done
