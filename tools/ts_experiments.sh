#!/usr/bin/env bash
# The experiments of docs/time-series.md: trains an RWKV-7 forecaster (and its DLinear baseline)
# on each real series of ../shared/data/timeseries at the README's horizons, then evaluates it
# beside naive and seasonal naive on the test part (last 20%). One JSON line per run on stdout.
#   [SEED=0] [EXTRA="more ts train flags"] bash tools/ts_experiments.sh [OUT_DIR]
#   (OUT_DIR default /tmp/rwkv7-ts; the JSON adds val_mse / val_dlinear_mse of the validation part)
set -euo pipefail
cd "$(dirname "$0")/.."
D=../shared/data/timeseries
OUT=${1:-/tmp/rwkv7-ts}
mkdir -p "$OUT"
BIN=./build/rwkv7
# Common: a small model (1 block, C 32, 2 heads), AdamW, warm-up + cosine, best validation kept.
COMMON=(--layers 1 --embd 32 --head-size 16 --steps 600 --dlinear-steps 2000 --val-every 50
        --lr 1e-3 --lr-final 1e-4 --seed "${SEED:-0}" ${EXTRA:-})
run() {  # name file horizon season lookback patch stride base
  local name=$1 file=$2 H=$3 season=$4 L=$5 P=$6 S=$7 base=$8
  local model="$OUT/$name-h$H.safetensors"
  local t0=$(date +%s.%N)
  "$BIN" ts train --data "$D/$file" --lookback "$L" --horizon "$H" --patch "$P" --stride "$S" \
    --season "$season" --base-season "$base" "${COMMON[@]}" -o "$model" 2>"$OUT/$name-h$H.train.log"
  local t1=$(date +%s.%N)
  "$BIN" ts eval --json --validation -m "$model" --data "$D/$file" >"$OUT/$name-h$H.val.json"
  "$BIN" ts eval --json -m "$model" --data "$D/$file" --svg "$OUT/$name-h$H.svg" |
    python3 -c "import json,sys; j=json.load(sys.stdin); v=json.load(open('$OUT/$name-h$H.val.json')); j['name']='$name'; j['train_s']=round($t1-$t0,1); j['val_mse']=v['mse']; j['val_dlinear_mse']=v['dlinear_mse']; print(json.dumps(j))"
}
# The network forecasts the residual over a base (--base-season): the last value for the
# prices and the sunspots, the same half-hour a week before for the electricity demand.
# EuStockMarkets: business days; season 5 (one trading week; prices have no yearly season
# a 96-point window could hold).
run eustock eustockmarkets_daily.csv 5 5 96 16 8 1
run eustock eustockmarkets_daily.csv 20 5 96 16 8 1
# Sunspots: monthly; season 132 (the ~11-year solar cycle; a 12-month season means nothing here).
run sunspot sunspot_monthly.csv 12 132 264 16 8 1
run sunspot sunspot_monthly.csv 60 132 264 16 8 1
# Taylor: half-hourly; season 336 (one week); two weeks of input, day-long patches half a day apart.
run taylor taylor_halfhourly_electricity.csv 48 336 672 48 24 336
run taylor taylor_halfhourly_electricity.csv 336 336 672 48 24 336
