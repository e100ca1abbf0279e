#!/usr/bin/env bash
# (bench/long_input.sh does 1K vs 100K tokens on the 0.1B shape through `rwkv7 bench`.)
# Issue 10: a prompt of a million tokens through the model at constant memory, and its time per
# token against that of a 1K-token prompt, measured in the same run.
#
#   bash bench/million_tokens.sh [MODEL] [TOKENS] [THREADS]
#     MODEL   byte-level checkpoint (default: the shipped Shakespeare model)
#     TOKENS  long prompt length (default 1048576); the short one is 1024
#
# The prompt is ../shared/data/tinyshakespeare.txt repeated (byte-level: one token per byte),
# read by `rwkv7 doc read` (the streaming forward: 64 KB blocks, the state carried). Each run's
# wall time and peak RSS come from /usr/bin/time. Time per token = (wall − wall of a 1-token
# prompt) / tokens, so model loading is not counted; the 1-token, 1K and 64K runs are repeated
# (medians), before and after the long one, to share the machine's phases. At 1K the fixed costs
# of a run (first block, thread start, the state file; /usr/bin/time's 10 ms resolution) still
# weigh: the 64K figure is the fair per-token baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-models/rwkv7-shakespeare-L4-C128.pth}"
long="${2:-1048576}"
threads="${3:-1}"
src="${RWKV7_SHARED:-../shared}/data/tinyshakespeare.txt"
[ -f "$src" ] || { echo "million_tokens.sh: $src is missing" >&2; exit 1; }
bin=./build/rwkv7
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$src" "$work" "$long" <<'EOF'
import sys
src, work, long = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(src, 'rb').read()
def doc(n, name):
    reps = n // len(text) + 1
    open(f"{work}/{name}", 'wb').write((text * reps)[:n])
doc(1, 'one.txt'); doc(1024, 'short.txt'); doc(65536, 'mid.txt'); doc(long, 'long.txt')
EOF

# run NAME → "seconds peak_kb"
run() {
  rm -f "$work/out.state" "$work/out.state.partial"
  /usr/bin/time -f "%e %M" -o "$work/time" "$bin" doc read "$work/$1" -o "$work/out.state" \
    -m "$model" -t "$threads" --checkpoint-every 1000000 >/dev/null 2>"$work/err" ||
    { cat "$work/err" >&2; exit 1; }
  cat "$work/time"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

one=() short=() mid=() short_kb=0
for i in 1 2 3 4 5; do
  read -r s _ <<<"$(run one.txt)"; one+=("$s")
  read -r s kb <<<"$(run short.txt)"; short+=("$s"); short_kb=$kb
  read -r s _ <<<"$(run mid.txt)"; mid+=("$s")
done
read -r long_s long_kb <<<"$(run long.txt)"
for i in 1 2 3 4 5; do
  read -r s _ <<<"$(run one.txt)"; one+=("$s")
  read -r s _ <<<"$(run short.txt)"; short+=("$s")
done
one_s=$(printf '%s\n' "${one[@]}" | median)
short_s=$(printf '%s\n' "${short[@]}" | median)
mid_s=$(printf '%s\n' "${mid[@]}" | median)
python3 - "$one_s" "$short_s" "$long_s" "$long" "$short_kb" "$long_kb" "$mid_s" "$model" "$threads" <<'EOF'
import json, sys
one, short, long_s, n, short_kb, long_kb, mid = map(float, sys.argv[1:8])
per_short = (short - one) / 1024 * 1e6
per_mid = (mid - one) / 65536 * 1e6
per_long = (long_s - one) / n * 1e6
print(json.dumps({
    "model": sys.argv[8], "threads": int(sys.argv[9]), "long_tokens": int(n),
    "load_s": one, "short_1024_s": short, "mid_65536_s": mid, "long_s": long_s,
    "us_per_token_1024": round(per_short, 2), "us_per_token_65536": round(per_mid, 2),
    "us_per_token_long": round(per_long, 2),
    "long_over_1024": round(per_long / per_short, 3) if per_short > 0 else None,
    "long_over_65536": round(per_long / per_mid, 3) if per_mid > 0 else None,
    "peak_rss_mb_1024": round(short_kb / 1024, 1), "peak_rss_mb_long": round(long_kb / 1024, 1),
}, indent=1))
EOF
