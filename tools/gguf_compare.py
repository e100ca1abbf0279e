#!/usr/bin/env python3
"""Compares the tensors of two GGUF files byte for byte (e.g. rwkv7 convert --type q4_k_m
against llama-quantize ... Q4_K_M on the same input): per tensor, same ggml type and same
bytes. Reads both with tools/gguf_check.py's reader (written from the GGUF specification).

usage: gguf_compare.py A.gguf B.gguf   (exit 1 when any tensor differs in type or bytes)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_check as gc  # noqa: E402


def tensors(path):
    with open(path, "rb") as f:
        data = f.read()
    r = gc.Reader(data)
    if r.take("4s") != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    r.take("I")
    n_tensors, n_kv = r.take("Q"), r.take("Q")
    kv = {}
    for _ in range(n_kv):
        key = r.string()
        kv[key] = r.value(r.take("I"))
    alignment = kv.get("general.alignment", 32)
    infos = {}
    for _ in range(n_tensors):
        name = r.string()
        ne = [r.take("Q") for _ in range(r.take("I"))]
        infos[name] = (ne, r.take("I"), r.take("Q"))
    start = (r.pos + alignment - 1) // alignment * alignment
    out = {}
    for name, (ne, t, off) in infos.items():
        tname, blk, bsize = gc.GGML_TYPES[t]
        count = 1
        for n in ne:
            count *= n
        out[name] = (tname, data[start + off:start + off + count // blk * bsize])
    return kv, out


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    (ka, a), (kb, b) = tensors(sys.argv[1]), tensors(sys.argv[2])
    same, problems = 0, []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            problems.append(f"{name}: only in {'A' if name in a else 'B'}")
        elif a[name][0] != b[name][0]:
            problems.append(f"{name}: type {a[name][0]} vs {b[name][0]}")
        elif a[name][1] != b[name][1]:
            diff = sum(1 for x, y in zip(a[name][1], b[name][1]) if x != y)
            problems.append(f"{name}: {diff} of {len(a[name][1])} bytes differ")
        else:
            same += 1
    print(f"file_type {ka.get('general.file_type')} vs {kb.get('general.file_type')}; "
          f"{same} of {len(set(a) | set(b))} tensors identical")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
