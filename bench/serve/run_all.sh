#!/usr/bin/env bash
# Serving benchmarks of `rwkv7 serve` (issue #9 item 7). Starts its own servers on free ports, runs
# bench/serve/loadtest.mjs against them, stops them with SIGTERM and writes one JSON summary to stdout and
# to --out. See bench/serve/README.md.
#
#   bash bench/serve/run_all.sh MODEL [VOCAB] [options]     MODEL "-" = the shipped byte-level model (no -m)
#   bash bench/serve/run_all.sh MODEL [VOCAB] --soak [options]
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  cat <<'EOF'
usage: bash bench/serve/run_all.sh MODEL [VOCAB] [options]     (MODEL "-" serves the shipped model)
  --out FILE              summary JSON (default /tmp/rwkv7-serve-bench.json; with --soak /tmp/rwkv7-serve-soak.json)
  --bin PATH              server binary (./build/rwkv7)
  --threads N             server threads (2)
  --max-seqs N            batch size of the "batched" servers (64); the baseline always runs --max-seqs 1 --no-cache
  --server-args "ARGS"    extra arguments for every server (e.g. "--cache-mb 256 --step-tokens 128")
  --decode-duration S     each decode run (12)
  --decode-rounds N       decode runs of 1 stream and of --decode-streams, alternated N times; the ratio is the
                          median of the rounds' ratios (3: the machine's speed drifts over minutes)
  --decode-streams N      the many-stream decode run (32)
  --decode-max-tokens N   (128)
  --chat-turns N          (50)
  --long-prompt-tokens N  (4096)
  --longprompt-streams N  (16)
  --mixed-rate R          arrivals/s of both mixed runs (default: --mixed-rate-factor x the estimated capacity
                          of the baseline, from the measured prefill and decode speeds; capped at 20)
  --mixed-rate-factor X   (1.5)
  --mixed-mix A,B,C       weights of chat,short,long arrivals (0.4,0.4,0.2)
  --mixed-system-tokens N shared system prompt of the mixed chats (500)
  --mixed-duration S      (60)
  --mixed-drain S         (30)
  --mixed-max-tokens A-B  (16-64)
  --soak                  run only the soak: 64 streams for --soak-duration s on a batched server
  --soak-duration S       (600)
  --soak-streams N        (64)
  --seed N                (1)
  --keep                  keep the work folder (server logs, per-run JSON); it is always kept on failure
EOF
}

MODEL="" VOCAB="" OUT="" BIN=./build/rwkv7 THREADS=2 MAXSEQS=64 SERVER_ARGS="" SEED=1
DEC_DUR=12 DEC_ROUNDS=3 DEC_STREAMS=32 DEC_MT=128 CHAT_TURNS=50 LP_TOKENS=4096 LP_STREAMS=16
MIX_RATE="" MIX_FACTOR=1.5 MIX_DUR=60 MIX_DRAIN=30 MIX_MT=16-64
MIX_MIX=0.4,0.4,0.2 MIX_SYS=500 MIX_TURN=60 MIX_SHORT=20-80 MIX_LONG=1000-2000
SOAK=0 SOAK_DUR=600 SOAK_STREAMS=64 KEEP=0
pos=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out) OUT=$2; shift ;;
    --bin) BIN=$2; shift ;;
    --threads|-t) THREADS=$2; shift ;;
    --max-seqs) MAXSEQS=$2; shift ;;
    --server-args) SERVER_ARGS=$2; shift ;;
    --decode-duration) DEC_DUR=$2; shift ;;
    --decode-streams) DEC_STREAMS=$2; shift ;;
    --decode-rounds) DEC_ROUNDS=$2; shift ;;
    --decode-max-tokens) DEC_MT=$2; shift ;;
    --chat-turns) CHAT_TURNS=$2; shift ;;
    --long-prompt-tokens) LP_TOKENS=$2; shift ;;
    --longprompt-streams) LP_STREAMS=$2; shift ;;
    --mixed-rate) MIX_RATE=$2; shift ;;
    --mixed-rate-factor) MIX_FACTOR=$2; shift ;;
    --mixed-duration) MIX_DUR=$2; shift ;;
    --mixed-drain) MIX_DRAIN=$2; shift ;;
    --mixed-max-tokens) MIX_MT=$2; shift ;;
    --mixed-mix) MIX_MIX=$2; shift ;;
    --mixed-system-tokens) MIX_SYS=$2; shift ;;
    --soak) SOAK=1 ;;
    --soak-duration) SOAK_DUR=$2; shift ;;
    --soak-streams) SOAK_STREAMS=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --keep) KEEP=1 ;;
    -?*) echo "run_all.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) pos+=("$1") ;;
  esac
  shift
done
if [ ${#pos[@]} -lt 1 ] || [ ${#pos[@]} -gt 2 ]; then usage >&2; exit 2; fi
MODEL=${pos[0]}; VOCAB=${pos[1]:-}
[ -n "$OUT" ] || { [ $SOAK = 1 ] && OUT=/tmp/rwkv7-serve-soak.json || OUT=/tmp/rwkv7-serve-bench.json; }
[ -x "$BIN" ] || { echo "run_all.sh: no server binary at $BIN (build it, or --bin)" >&2; exit 2; }
command -v node >/dev/null || { echo "run_all.sh: node (>= 20) is needed" >&2; exit 2; }
MODEL_ARGS=()
if [ "$MODEL" != "-" ]; then
  [ -f "$MODEL" ] || { echo "run_all.sh: no model file $MODEL" >&2; exit 2; }
  MODEL_ARGS=(-m "$MODEL")
fi
if [ -n "$VOCAB" ]; then
  [ -f "$VOCAB" ] || { echo "run_all.sh: no vocabulary file $VOCAB" >&2; exit 2; }
  MODEL_ARGS+=(--vocab "$VOCAB")
fi
read -r -a EXTRA <<<"$SERVER_ARGS"

WORK=$(mktemp -d /tmp/rwkv7-serve-bench.XXXXXX)
STEPS=$WORK/steps.tsv   # name, server name, loadtest command, result file
SERVERS=$WORK/servers.tsv # name, command, log, exit code after SIGTERM, seconds to ready
: >"$STEPS"; : >"$SERVERS"
T_START=$(date +%s)
LT="node bench/serve/loadtest.mjs"
SRV_PID="" SRV_URL="" SRV_NAME="" SRV_CMD="" SRV_LOG="" SRV_READY=""
say() { echo "[run_all $(( $(date +%s) - T_START ))s] $*" >&2; }
quote() { # shell words, quoted only where needed
  local s="" a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then s+="$a "; else s+="$(printf '%q' "$a") "; fi
  done
  printf '%s' "${s% }"
}

start_server() { # NAME ARGS...
  SRV_NAME=$1; shift
  local cmd=("$BIN" serve "${MODEL_ARGS[@]}" --port 0 -t "$THREADS" "${EXTRA[@]}" "$@")
  SRV_CMD=$(quote "${cmd[@]}")
  SRV_LOG=$WORK/server-$SRV_NAME.log
  say "server $SRV_NAME: $SRV_CMD"
  local t0; t0=$(date +%s%N)
  "${cmd[@]}" >"$WORK/server-$SRV_NAME.out" 2>"$SRV_LOG" &
  SRV_PID=$!
  SRV_URL=""
  for _ in $(seq 1 1800); do # up to 180 s to load the model
    SRV_URL=$(grep -o -m1 'listening on http://[^[:space:]]*' "$SRV_LOG" | sed 's/^listening on //' || true)
    [ -n "$SRV_URL" ] && break
    if ! kill -0 "$SRV_PID" 2>/dev/null; then
      echo "run_all.sh: server $SRV_NAME exited before listening; its log ($SRV_LOG):" >&2
      tail -20 "$SRV_LOG" >&2; SRV_PID=""; KEEP=1; exit 1
    fi
    sleep 0.1
  done
  [ -n "$SRV_URL" ] || { echo "run_all.sh: server $SRV_NAME not listening after 180 s" >&2; KEEP=1; exit 1; }
  local t1 ms; t1=$(date +%s%N); ms=$(( (t1 - t0) / 1000000 )); SRV_READY=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
  say "server $SRV_NAME ready at $SRV_URL (pid $SRV_PID, ${SRV_READY} s)"
}
stop_server() {
  [ -n "$SRV_PID" ] || return 0
  kill -TERM "$SRV_PID" 2>/dev/null || true
  local rc=""
  for _ in $(seq 1 300); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SRV_PID" 2>/dev/null; then
    say "server $SRV_NAME still running 30 s after SIGTERM: SIGKILL"
    kill -KILL "$SRV_PID" 2>/dev/null || true
  fi
  wait "$SRV_PID" && rc=0 || rc=$?
  [ "$rc" = 0 ] || say "server $SRV_NAME: exit code $rc after SIGTERM (expected 0)"
  printf '%s\t%s\t%s\t%s\t%s\n' "$SRV_NAME" "$SRV_CMD" "$SRV_LOG" "$rc" "$SRV_READY" >>"$SERVERS"
  SRV_PID=""
}
cleanup() {
  local rc=$?
  stop_server || true
  if [ $rc = 0 ] && [ $KEEP = 0 ]; then rm -rf "$WORK"; else echo "run_all.sh: work folder kept: $WORK" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run() { # NAME loadtest-args...   (the server is the running one)
  local name=$1; shift
  local args=(--url "$SRV_URL" --pid "$SRV_PID" --seed "$SEED" "$@" --out "$WORK/$name.json")
  local shown; shown="$LT $(quote "${args[@]}")"
  say "run $name: $shown"
  # shellcheck disable=SC2086
  $LT "${args[@]}" >/dev/null || { echo "run_all.sh: loadtest $name failed" >&2; KEEP=1; exit 1; }
  printf '%s\t%s\t%s\t%s\n' "$name" "$SRV_NAME" "$shown" "$WORK/$name.json" >>"$STEPS"
}
jget() { node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1]));let v=j;for(const k of process.argv[2].split("."))v=v?.[k];process.stdout.write(String(v??""))' "$@"; }

BATCHED=(--max-seqs "$MAXSEQS")
if [ $SOAK = 1 ]; then
  start_server soak "${BATCHED[@]}"
  run calibrate --scenario calibrate
  TPC=$(jget "$WORK/calibrate.json" tokens_per_char)
  run soak --scenario soak --tokens-per-char "$TPC" --streams "$SOAK_STREAMS" --duration "$SOAK_DUR"
  stop_server
else
  start_server batched-decode "${BATCHED[@]}"
  run calibrate --scenario calibrate
  TPC=$(jget "$WORK/calibrate.json" tokens_per_char)
  C=(--tokens-per-char "$TPC")
  # Alternated, round after round, each round with its own prompts (--seed): a ratio compares runs
  # seconds apart, and no round reads another's cached prompts.
  for ((round = 1; round <= DEC_ROUNDS; round++)); do
    D=(--scenario decode "${C[@]}" --duration "$DEC_DUR" --max-tokens "$DEC_MT")
    run "decode-1.r$round" "${D[@]}" --streams 1 --seed $((SEED + 1000 * round))
    run "decode-many.r$round" "${D[@]}" --streams "$DEC_STREAMS" --seed $((SEED + 1000 * round))
  done
  stop_server

  start_server batched-chat "${BATCHED[@]}"
  run chat-cache --scenario chat "${C[@]}" --turns "$CHAT_TURNS"
  stop_server
  start_server nocache-chat "${BATCHED[@]}" --no-cache
  run chat-nocache --scenario chat "${C[@]}" --turns "$CHAT_TURNS"
  stop_server

  start_server batched-longprompt "${BATCHED[@]}"
  run longprompt --scenario longprompt "${C[@]}" --streams "$LP_STREAMS" --long-prompt-tokens "$LP_TOKENS"
  stop_server

  # Arrival rate: --mixed-rate, or FACTOR x the estimated capacity of the baseline (one request at a
  # time, no cache), from the prefill speed of chat-nocache (sum of prompt tokens / sum of TTFT) and the
  # decode speed of decode-1, and the mean work of an arrival of the mix (see README).
  node - "$WORK/decode-1.r1.json" "$WORK/chat-nocache.json" "$MIX_FACTOR" "$MIX_MT" "$MIX_MIX" "$MIX_SYS" "$MIX_TURN" \
    "$MIX_SHORT" "$MIX_LONG" "$MIX_RATE" >"$WORK/mixed-rate.json" <<'NODE'
const fs = require('fs');
const [d1f, cnf, factor, mt, mix, sys, turn, short, long, given] = process.argv.slice(2);
const rg = s => { const [a, b] = s.split('-').map(Number); return (a + (b ?? a)) / 2; };
const d1 = JSON.parse(fs.readFileSync(d1f)).result;  // the first round's single stream
const cn = JSON.parse(fs.readFileSync(cnf)).result;
const decode = d1.decode_steady?.tokens_per_s ?? d1.generated_tokens_per_s;
const ok = cn.per_turn.filter(t => t.ok && t.ttft_ms > 0);
const prefill = ok.reduce((a, t) => a + t.prompt_tokens, 0) / (ok.reduce((a, t) => a + t.ttft_ms, 0) / 1000);
const [wc, ws, wl] = mix.split(',').map(Number), W = wc + ws + wl;
const G = rg(mt), S = Number(sys), U = Number(turn);
// a chat arrival: k = 1..4 turns; turn t resends the system prompt, t user messages, t-1 replies (+~20 tokens of template a turn)
let chatTok = 0;
for (let k = 1; k <= 4; k++) for (let t = 1; t <= k; t++) chatTok += (S + t * U + (t - 1) * G + 20 * t) / 4;
const reqs = (wc * 2.5 + ws + wl) / W;
const promptTok = (wc * chatTok + ws * rg(short) + wl * rg(long)) / W;
const service = promptTok / prefill + reqs * G / decode;   // seconds of baseline work per arrival
const capacity = 1 / service;
const rate = given ? Number(given) : Math.min(20, Math.max(0.05, Number(factor) * capacity));
process.stdout.write(JSON.stringify({ rate: +rate.toFixed(3), given: !!given, factor: Number(factor),
  baseline_capacity_arrivals_per_s_estimate: +capacity.toFixed(3), prefill_tokens_per_s: +prefill.toFixed(1),
  decode_tokens_per_s: +decode.toFixed(1), requests_per_arrival: +reqs.toFixed(3),
  prompt_tokens_per_arrival_no_cache: +promptTok.toFixed(1), generated_tokens_per_request: G }));
NODE
  MIX_RATE=$(jget "$WORK/mixed-rate.json" rate)
  say "mixed arrival rate: $MIX_RATE req/s ($(cat "$WORK/mixed-rate.json"))"
  M=(--scenario mixed "${C[@]}" --rate "$MIX_RATE" --duration "$MIX_DUR" --drain "$MIX_DRAIN" --max-tokens "$MIX_MT"
     --mix "$MIX_MIX" --system-tokens "$MIX_SYS" --turn-tokens "$MIX_TURN" --short-range "$MIX_SHORT" --long-range "$MIX_LONG")
  start_server batched-mixed "${BATCHED[@]}"
  run mixed-batched "${M[@]}"
  stop_server
  start_server baseline-mixed --max-seqs 1 --no-cache
  run mixed-baseline "${M[@]}"
  stop_server
fi

T_END=$(date +%s)
node - "$STEPS" "$SERVERS" "$OUT" "$MODEL" "$VOCAB" "$BIN" "$THREADS" "$((T_END - T_START))" "$WORK/mixed-rate.json" "$SOAK" "$KEEP" "$WORK" <<'NODE'
const fs = require('fs');
const [steps, servers, out, model, vocab, bin, threads, wall, rateFile, soak, keep, work] = process.argv.slice(2);
const rows = f => fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map(l => l.split('\t'));
const srv = {};
for (const [name, command, log, exit, ready] of rows(servers))
  srv[name] = { name, command, log: keep === '1' ? log : undefined, sigterm_exit_code: Number(exit), seconds_to_ready: Number(ready) };
const runs = {};
for (const [name, server, command, file] of rows(steps)) {
  const j = JSON.parse(fs.readFileSync(file, 'utf8'));
  runs[name] = { server, command, output: j };
  if (j.server?.peak_rss_mb != null) srv[server].peak_rss_mb = Math.max(srv[server].peak_rss_mb ?? 0, j.server.peak_rss_mb);
}
const r = n => runs[n]?.output?.result;
const q = (a, b) => (a != null && b != null && b !== 0) ? +(a / b).toFixed(3) : null;
let cpu = null;
try { cpu = /model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))[1]; } catch {}
const S = {
  benchmark: 'rwkv7 serve', started_at: new Date(Date.now() - wall * 1000).toISOString(), total_wall_s: Number(wall),
  model: model === '-' ? '(shipped byte-level model)' : model, vocab: vocab || null, bin, threads: Number(threads),
  host: { cpus: require('os').cpus().length, cpu_model: cpu, node: process.version },
  tokens_per_char: runs.calibrate?.output?.tokens_per_char ?? null,
  work_dir: keep === '1' ? work : null,
};
if (soak === '1') {
  const s = r('soak');
  S.soak = s && { streams: s.streams, duration_s: runs.soak.output.duration_s, requests: s.requests, completed: s.completed,
    errors_non_429: s.errors_non_429, errors_by_kind: s.errors_by_kind, rejected_429: s.rejected_429,
    rss_warmup_end_mb: s.rss_warmup_end_bytes && +(s.rss_warmup_end_bytes / 1048576).toFixed(1),
    rss_end_mb: s.rss_end_bytes && +(s.rss_end_bytes / 1048576).toFixed(1), rss_growth_pct: s.rss_growth_pct,
    rss_less_cache_growth_pct: s.rss_less_cache_growth_pct,
    cache_mb_end: s.rss_samples?.at(-1)?.cache_bytes != null ? +(s.rss_samples.at(-1).cache_bytes / 1048576).toFixed(1) : null,
    peak_rss_mb: runs.soak.output.server.peak_rss_mb, requests_per_s: s.requests_per_s, ttft_ms: s.ttft_ms, latency_ms: s.latency_ms };
} else {
  const tps = x => x ? (x.decode_steady?.tokens_per_s ?? x.generated_tokens_per_s) : null;
  const median = a => { const v = a.filter(x => x != null).sort((x, y) => x - y); const n = v.length;
    return n ? (n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) : null; };
  const rounds = [];
  for (let i = 1; runs[`decode-1.r${i}`]; i++) {
    const d1 = r(`decode-1.r${i}`), dn = r(`decode-many.r${i}`);
    rounds.push({ round: i, streams_1_tokens_per_s: tps(d1), streams_many_tokens_per_s: tps(dn), ratio: q(tps(dn), tps(d1)),
      errors: (d1?.errors ?? 0) + (dn?.errors ?? 0), rejected_429: dn?.rejected_429 ?? 0,
      itl_ms_1: d1?.itl_ms, itl_ms_many: dn?.itl_ms, ttft_ms_many: dn?.ttft_ms });
  }
  S.decode = {
    max_tokens: runs['decode-1.r1']?.output?.config?.max_tokens?.[0],
    streams_many: runs['decode-many.r1']?.output?.config?.streams,
    rounds,
    streams_1_tokens_per_s_median: median(rounds.map(x => x.streams_1_tokens_per_s)),
    streams_many_tokens_per_s_median: median(rounds.map(x => x.streams_many_tokens_per_s)),
    aggregate_tokens_per_s_ratio_many_over_1: median(rounds.map(x => x.ratio)),
    ratio_rule: 'median over the rounds of (many streams / 1 stream), the two runs of a round back to back',
  };
  const chat = x => x && { turns_completed: x.turns_completed, errors: x.errors, ttft_turn2_ms: x.ttft_turn2_ms, ttft_last_ms: x.ttft_last_ms,
    ttft_ratio_last_over_turn2: x.ttft_ratio_last_over_turn2, prompt_tokens_total: x.prompt_tokens_total,
    cached_tokens_total: x.cached_tokens_total, prompt_tokens_computed_total: x.prompt_tokens_computed_total,
    last_turn_prompt_tokens: x.per_turn?.at(-1)?.prompt_tokens, last_turn_prompt_tokens_computed: x.per_turn?.at(-1)?.prompt_tokens_computed };
  const cc = r('chat-cache'), cn = r('chat-nocache');
  S.chat = { cache: chat(cc), no_cache: chat(cn),
    ttft_last_ratio_nocache_over_cache: q(cn?.ttft_last_ms, cc?.ttft_last_ms),
    prompt_tokens_computed_ratio_nocache_over_cache: q(cn?.prompt_tokens_computed_total, cc?.prompt_tokens_computed_total) };
  const lp = r('longprompt');
  S.longprompt = lp && { streams: lp.streams, long_prompt: lp.long_prompt, prefill_window_s: lp.prefill_window_s,
    server_100ms_after_send: lp.server_100ms_after_send,
    itl_ms_all: lp.itl_ms_all, itl_ms_before: lp.itl_ms_before, itl_ms_during_prefill: lp.itl_ms_during_prefill,
    itl_p99_over_p50_all: lp.itl_p99_over_p50_all, itl_p99_during_over_p50_before: lp.itl_p99_during_over_p50_before,
    itl_max_during_over_p50_before: lp.itl_max_during_over_p50_before };
  const mix = n => { const x = r(n), o = runs[n]?.output; return x && { requests_per_s: x.requests_per_s, completed: x.completed,
    completed_within_duration: x.completed_within_duration, arrivals: x.arrivals, rejected_429: x.rejected_429, errors: x.errors,
    aborted_at_drain: x.aborted_at_drain, dropped_inflight_cap: x.dropped_inflight_cap,
    ttft_ms: x.ttft_ms, latency_ms: x.latency_ms, cache_hit_rate: o.server.cache_hit_rate,
    prompt_tokens_saved_by_cache: o.server.prompt_tokens_saved_by_cache, prompt_tokens_computed: o.server.prompt_tokens_computed,
    peak_rss_mb: o.server.peak_rss_mb }; };
  const mb = mix('mixed-batched'), m1 = mix('mixed-baseline');
  let est = null;
  try { est = JSON.parse(fs.readFileSync(rateFile, 'utf8')); } catch {}
  S.mixed = { rate: est?.rate ?? null,
    rate_rule: est?.given ? '--mixed-rate' : 'factor x estimated baseline capacity (one request at a time, no cache), capped at 20/s',
    rate_estimate: est,
    batched: mb, baseline_max_seqs_1_no_cache: m1,
    requests_per_s_ratio_batched_over_baseline: q(mb?.requests_per_s, m1?.requests_per_s),
    latency_p50_ratio_baseline_over_batched: q(m1?.latency_ms?.p50, mb?.latency_ms?.p50),
    ttft_p50_ratio_baseline_over_batched: q(m1?.ttft_ms?.p50, mb?.ttft_ms?.p50) };
}
S.servers = Object.values(srv);
S.commands = [];
for (const [name, x] of Object.entries(runs)) S.commands.push({ run: name, server: srv[x.server]?.command, loadtest: x.command });
S.runs = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, v.output]));
const text = JSON.stringify(S, null, 1) + '\n';
fs.writeFileSync(out, text);
process.stdout.write(text);
NODE
say "summary written to $OUT"
