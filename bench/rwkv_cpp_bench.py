#!/usr/bin/env python3
"""rwkv.cpp (github.com/RWKV/rwkv.cpp) on one of rwkv7's checkpoints, for bench/side_by_side.sh.

Converts the .pth with rwkv.cpp's own converter (needs torch: Debian's python3-torch) and
quantiser, then times, through rwkv.cpp's Python binding of librwkv.so: a prompt of --prompt
random tokens (rwkv_eval_sequence_in_chunks, --chunk tokens per call) and --gen single-token
steps (rwkv_eval), --repeat times; prints the medians as JSON (tokens/s). The binding's call
costs microseconds per token against milliseconds of model work.

Usage: rwkv_cpp_bench.py --rwkv-cpp DIR --lib LIBRWKV.so --pth MODEL.pth --format FMT
                         --work DIR [--threads 2] [--prompt 512] [--gen 128] [--repeat 3]
FMT: f32, f16 or one of rwkv.cpp's quantised formats (q4_0, q4_1, q5_0, q5_1, q8_0).
"""
import argparse
import ctypes
import json
import os
import random
import statistics
import subprocess
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rwkv-cpp", required=True, help="rwkv.cpp source tree (its python/ folder)")
    ap.add_argument("--lib", required=True, help="librwkv.so built from that tree")
    ap.add_argument("--pth", required=True)
    ap.add_argument("--format", required=True)
    ap.add_argument("--work", required=True, help="where the converted files go (kept, reused)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=32,
                    help="tokens per rwkv_eval_sequence call (rwkv.cpp recommends 16..64)")
    args = ap.parse_args()

    py = os.path.join(args.rwkv_cpp, "python")
    sys.path.insert(0, py)
    from rwkv_cpp import rwkv_cpp_shared_library  # noqa: E402  (rwkv.cpp's own binding)

    lib = rwkv_cpp_shared_library.RWKVSharedLibrary(args.lib)
    fmt = args.format.lower()
    stem = os.path.splitext(os.path.basename(args.pth))[0]
    os.makedirs(args.work, exist_ok=True)
    base = os.path.join(args.work, f"{stem}-rwkvcpp-{'f32' if fmt == 'f32' else 'f16'}.bin")
    if not os.path.exists(base):
        # rwkv.cpp's loader aborts on tensors it does not use ("tensor buffer not set"): layer 0's
        # value-residual v0/v1/v2, which released checkpoints and `rwkv7 init` carry (SPEC §2).
        import torch
        weights = torch.load(args.pth, map_location="cpu")
        for name in ("v0", "v1", "v2"):
            weights.pop(f"blocks.0.att.{name}", None)
        stripped = base + ".pth.tmp"
        tmp = base + ".tmp"
        try:  # the temporary files go whether the converter succeeds or not
            torch.save(weights, stripped)
            del weights
            subprocess.run([sys.executable, os.path.join(py, "convert_pytorch_to_ggml.py"),
                            stripped, tmp, "FP32" if fmt == "f32" else "FP16"], check=True,
                           stdout=subprocess.DEVNULL)
            os.replace(tmp, base)
        finally:
            for leftover in (stripped, tmp):
                if os.path.exists(leftover):
                    os.remove(leftover)
    model = base
    if fmt not in ("f32", "f16"):
        name = fmt.upper()
        if name not in rwkv_cpp_shared_library.QUANTIZED_FORMAT_NAMES:
            print(f"rwkv_cpp_bench.py: rwkv.cpp has no format {fmt}", file=sys.stderr)
            return 2
        model = os.path.join(args.work, f"{stem}-rwkvcpp-{fmt}.bin")
        if not os.path.exists(model):
            try:
                lib.rwkv_quantize_model_file(base, model + ".tmp", name)
                os.replace(model + ".tmp", model)
            finally:
                if os.path.exists(model + ".tmp"):
                    os.remove(model + ".tmp")

    ctx = lib.rwkv_init_from_file(model, args.threads, 0)
    vocab = lib.rwkv_get_n_vocab(ctx)
    state = (ctypes.c_float * lib.rwkv_get_state_buffer_element_count(ctx))()
    logits = (ctypes.c_float * lib.rwkv_get_logits_buffer_element_count(ctx))()
    addr = ctypes.addressof
    rng = random.Random(1)
    prompt = [rng.randrange(vocab) for _ in range(args.prompt)]

    prefill, decode = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        lib.rwkv_eval_sequence_in_chunks(ctx, prompt, args.chunk, None, addr(state), addr(logits))
        prefill.append(args.prompt / (time.perf_counter() - t0))
        token = prompt[-1]
        t0 = time.perf_counter()
        for _ in range(args.gen):
            lib.rwkv_eval(ctx, token, addr(state), addr(state), addr(logits))
            token = max(range(16), key=lambda i: logits[i])  # a cheap data dependence
        decode.append(args.gen / (time.perf_counter() - t0))
    lib.rwkv_free(ctx)
    print(json.dumps({"format": fmt, "threads": args.threads, "prompt": args.prompt,
                      "gen": args.gen, "chunk": args.chunk,
                      "prefill_tok_s": statistics.median(prefill),
                      "decode_tok_s": statistics.median(decode)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
