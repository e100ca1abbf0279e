#!/usr/bin/env bash
# rwkv7 beside llama.cpp (llama-bench) on the same GGUF files: random weights of the released
# 0.1B / 0.4B shapes (official init), each format, 2 threads, prompt 512 in one call, 128 decoded
# tokens, for each instruction set. Prints a markdown table of tokens/s and ratios, plus how far
# rwkv7 is from the machine's limits (decode: read bandwidth; prefill: fp32 FMA peak, both
# measured by `rwkv7 bench` under the same ISA cap).
#
# Usage: bench/side_by_side.sh [options]
#   --llama-bench ISA=PATH  llama.cpp's llama-bench built for that ISA (repeatable; a build with
#                           GGML_NATIVE=ON is the best ISA: give it as native=PATH). llama.cpp
#                           chooses its kernels at build time, so an AVX2 column needs a build
#                           with -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF ...
#   --rwkv-cpp ISA=DIR      rwkv.cpp's source tree with librwkv.so built in DIR/build for that ISA
#                           (repeatable, like --llama-bench; its ggml picks kernels at build
#                           time). Timed by bench/rwkv_cpp_bench.py on files rwkv.cpp's own
#                           converter makes from the same .pth (f32, f16, q8_0, q4_0; other
#                           formats show "-"); needs torch (Debian: python3-torch)
#   --python PATH           the Python with torch for that (default /usr/bin/python3)
#   --isas "native avx2"    rwkv7's ISA caps (rwkv7 bench --isa; native = the best here)
#   --shapes "0.1b 0.4b"    --formats "f32 f16 bf16 q8_0 q4_0"   --threads 2
#   --vocab FILE            World vocabulary written into the files (llama.cpp needs a tokenizer;
#                           default ../shared/vocab/rwkv_vocab_v20230424.txt)
#   --work DIR              where the model files go (default /tmp/rwkv7-side-by-side; ~6 GB)
#   --runs N                processes per measurement, median taken (default 1)
# Formats llama.cpp cannot load show "-" in its columns.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./build/rwkv7
isas="native avx2" shapes="0.1b 0.4b" formats="f32 f16 bf16 q8_0 q4_0" threads=2 runs=1
vocab=../shared/vocab/rwkv_vocab_v20230424.txt work=/tmp/rwkv7-side-by-side
declare -A llama=() rwkvcpp=()
python=/usr/bin/python3
while [ $# -gt 0 ]; do
  case "$1" in
    --llama-bench) llama["${2%%=*}"]="${2#*=}"; shift 2 ;;
    --rwkv-cpp) rwkvcpp["${2%%=*}"]="${2#*=}"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --isas) isas="$2"; shift 2 ;;
    --shapes) shapes="$2"; shift 2 ;;
    --formats) formats="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --vocab) vocab="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    *) echo "side_by_side.sh: unknown option $1 (see the header)" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "side_by_side.sh: build rwkv7 first ($bin)" >&2; exit 2; }
[ -f "$vocab" ] || { echo "side_by_side.sh: vocabulary $vocab not found (--vocab)" >&2; exit 2; }
mkdir -p "$work"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512_vnni|avx512_bf16|avx_vnni)$' | tr '\n' ' ')"
echo "threads $threads, prompt 512, 128 decoded; tok/s (median of $runs process(es), each the median of 3 runs)"
echo
echo "| shape | format | ISA | rwkv7 decode | llama.cpp | ratio | rwkv.cpp | ratio | rwkv7 prefill | llama.cpp | ratio | rwkv.cpp | ratio | decode % of bandwidth | prefill % of FMA peak |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for shape in $shapes; do
  src="$work/$shape.pth"
  [ -f "$src" ] || $bin init --preset "$shape" -o "$src" >&2
  for fmt in $formats; do
    model="$work/$shape-$fmt.gguf"
    [ -f "$model" ] || $bin convert "$src" "$model" --type "$fmt" --vocab "$vocab" >&2
    for isa in $isas; do
      ours=()
      for _ in $(seq "$runs"); do
        cap=(); [ "$isa" = native ] || cap=(--isa "$isa")
        ours+=("$($bin bench -m "$model" -t "$threads" --prompt 512 --gen 128 --repeat 3 "${cap[@]}" --json)")
      done
      theirs=()
      if [ -n "${llama[$isa]:-}" ]; then
        for _ in $(seq "$runs"); do
          theirs+=("$("${llama[$isa]}" -m "$model" -t "$threads" -p 512 -n 128 -r 3 -o json 2>/dev/null || echo '[]')")
        done
      fi
      rwkv=()
      case "$fmt" in f32|f16|q8_0|q4_0) rwkv_fmt=1 ;; *) rwkv_fmt= ;; esac
      if [ -n "${rwkvcpp[$isa]:-}" ] && [ -n "$rwkv_fmt" ]; then
        for _ in $(seq "$runs"); do
          rwkv+=("$("$python" bench/rwkv_cpp_bench.py --rwkv-cpp "${rwkvcpp[$isa]}" \
                   --lib "${rwkvcpp[$isa]}/build/librwkv.so" --pth "$src" --format "$fmt" \
                   --work "$work" --threads "$threads" --prompt 512 --gen 128 --repeat 3 \
                   2>/dev/null || echo '{}')")
        done
      fi
      python3 - "$shape" "$fmt" "$isa" "${#ours[@]}" "${#theirs[@]}" "${ours[@]}" "${theirs[@]}" \
        "${rwkv[@]}" <<'PY'
import json, statistics, sys
shape, fmt, isa, n, m = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ours = [json.loads(a) for a in sys.argv[6:6 + n]]
theirs = [json.loads(a) for a in sys.argv[6 + n:6 + n + m]]
rwkvcpp = [r for r in (json.loads(a) for a in sys.argv[6 + n + m:]) if r]
med = lambda k: statistics.median(r[k] for r in ours)
def llama(kind):  # llama-bench: n_prompt > 0 is prefill (pp512), n_gen > 0 decode (tg128)
    v = [t["avg_ts"] for run in theirs for t in run
         if (t.get("n_prompt", 0) > 0) == (kind == "pp") and (t.get("n_gen", 0) > 0) == (kind == "tg")]
    return statistics.median(v) if v else None
def rwkv_cpp(key):
    return statistics.median(r[key] for r in rwkvcpp) if rwkvcpp else None
dec, pre = med("decode_tok_s"), med("prefill_tok_s")
ldec, lpre = llama("tg"), llama("pp")
rdec, rpre = rwkv_cpp("decode_tok_s"), rwkv_cpp("prefill_tok_s")
f = lambda x: "-" if x is None else f"{x:.1f}"
r = lambda a, b: "-" if b is None else f"{a / b:.2f}"
print(f"| {shape} | {fmt} | {ours[0].get('isa', isa)} | {dec:.1f} | {f(ldec)} | {r(dec, ldec)} | "
      f"{f(rdec)} | {r(dec, rdec)} | {pre:.1f} | {f(lpre)} | {r(pre, lpre)} | {f(rpre)} | "
      f"{r(pre, rpre)} | {100 * med('decode_fraction_of_limit'):.0f}% | "
      f"{100 * med('prefill_fraction_of_limit'):.0f}% |")
PY
    done
  done
done
