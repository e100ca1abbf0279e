#!/usr/bin/env python3
"""Seed corpora for the fuzzers in fuzz/: small valid inputs, taken from ../shared where the
files are small enough (pickles, the torch 2 sample checkpoint, a golden safetensors file, the
vocabulary's first lines, tokenizer cases, Shakespeare text), plus a few tiny files built here
in each format (a .pth, a GGUF with rwkv7 names, a state file) so every reader starts from
input it accepts.  Usage: make_seeds.py SHARED_DIR OUT_DIR"""
import json
import os
import struct
import sys
import zipfile


def write(out, name, fname, data):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def pickle_state_dict(tensors):
    """Protocol 2 pickle as torch.save writes it: OrderedDict of _rebuild_tensor_v2."""
    out = bytearray(b"\x80\x02")
    out += b"ccollections\nOrderedDict\nq\x00)Rq\x01("
    memo = 2
    for i, (name, stype, numel, shape) in enumerate(tensors):
        nb = name.encode()
        out += b"X" + struct.pack("<I", len(nb)) + nb + b"q" + bytes([memo]); memo += 1
        out += b"ctorch._utils\n_rebuild_tensor_v2\nq" + bytes([memo]); memo += 1
        out += b"((X\x07\x00\x00\x00storageq" + bytes([memo]); memo += 1
        out += b"ctorch\n" + stype.encode() + b"\nq" + bytes([memo]); memo += 1
        key = str(i).encode()
        out += b"X" + struct.pack("<I", len(key)) + key
        out += b"X\x03\x00\x00\x00cpuK" + bytes([numel]) + b"tQK\x00"
        stride = []
        acc = 1
        for s in reversed(shape):
            stride.insert(0, acc)
            acc *= s
        for tup in (shape, stride):
            out += b"(" + b"".join(b"K" + bytes([x]) for x in tup) + b"t"
        out += b"\x89h\x00)Rtq" + bytes([memo]) + b"R"; memo += 1
    out += b"u."
    return bytes(out)


def tiny_pth(tensors, datas):
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("tiny/data.pkl", pickle_state_dict(tensors))
        z.writestr("tiny/byteorder", "little")
        for i, d in enumerate(datas):
            z.writestr("tiny/data/%d" % i, d)
        z.writestr("tiny/version", "3\n")
    return buf.getvalue()


def safetensors(tensors, meta=None):
    header, blob = {}, b""
    if meta:
        header["__metadata__"] = meta
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def tiny_gguf():
    C, N = 8, 4
    kv = [("general.architecture", 8, gguf_str("rwkv7")),
          ("rwkv7.wkv.head_size", 4, struct.pack("<I", N)),
          ("rwkv7.block_count", 4, struct.pack("<I", 2)),
          ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + gguf_str("a") + gguf_str("b"))]
    tensors = [("token_embd.weight", [C, 4]), ("blk.1.time_mix_lerp_fused.weight", [C, 1, 1, 6]),
               ("blk.1.time_mix_w1.weight", [C, 2]), ("blk.1.time_mix_r_k.weight", [C]),
               ("blk.1.time_mix_w0.weight", [C]), ("blk.0.time_mix_v1.weight", [C, 2]),
               ("other", [3])]
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, t, v in kv:
        head += gguf_str(k) + struct.pack("<I", t) + v
    off, datas = 0, []
    for name, ne in tensors:
        n = 1
        for d in ne:
            n *= d
        head += gguf_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        head += struct.pack("<IQ", 0, off)
        data = struct.pack("<%df" % n, *[0.25 * (i % 7) for i in range(n)])
        datas.append(data + b"\0" * ((32 - len(data) % 32) % 32))
        off += len(datas[-1])
    head += b"\0" * ((32 - len(head) % 32) % 32)
    return head + b"".join(datas)


def main():
    shared, out = sys.argv[1], sys.argv[2]
    golden = os.path.join(shared, "golden")
    # pickle / pth / zip
    f32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    bf16 = struct.pack("<4H", 0x3f80, 0x4000, 0x4040, 0x4080)
    pth = tiny_pth([("a.weight", "FloatStorage", 6, [2, 3]), ("b", "BFloat16Storage", 4, [4])], [f32, bf16])
    for name in ("pth", "zip"):
        write(out, name, "tiny.pth", pth)
    write(out, "pickle", "tiny.pkl", pickle_state_dict([("a.weight", "FloatStorage", 6, [2, 3])]))
    for src in (os.path.join(golden, "torch2-format-sample.pth"),
                os.path.join(shared, "models", "tiny-rwkv7-834K.pth")):
        if os.path.exists(src):
            with zipfile.ZipFile(src) as z:
                pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
                write(out, "pickle", os.path.basename(src) + ".pkl", z.read(pkl))
    sample = os.path.join(golden, "torch2-format-sample.pth")
    if os.path.exists(sample):
        data = open(sample, "rb").read()
        write(out, "pth", "torch2-format-sample.pth", data)
        write(out, "zip", "torch2-format-sample.pth", data)
    # safetensors
    write(out, "safetensors", "tiny.safetensors",
          safetensors([("a", "F32", [2, 3], f32), ("b", "BF16", [4], bf16)], {"format": "pt"}))
    g = os.path.join(golden, "rand-L2-D96-hs32-fp16.golden.safetensors")
    if os.path.exists(g):
        write(out, "safetensors", "golden.safetensors", open(g, "rb").read())
    # gguf
    write(out, "gguf", "tiny.gguf", tiny_gguf())
    # state files for the shipped model (L4, C128, 2 heads of 64)
    L, C, H, N = 4, 128, 2, 64
    z = lambda n: struct.pack("<%df" % n, *([0.5] * n))
    meta = {"format": "rwkv7-state", "format_version": "1", "tokens_consumed": "3",
            "model_shape": "L4-D128-hs64-V256"}
    write(out, "state", "zeros.state", safetensors(
        [("state.att_shift", "F32", [L, C], z(L * C)), ("state.ffn_shift", "F32", [L, C], z(L * C)),
         ("state.wkv", "F32", [L, H, N, N], z(L * H * N * N))], meta))
    # compressed state files (format_version 2) of the shipped model's real shape
    # (L4, C128, 4 heads of 32): bf16, int8 rows, low rank with int8 factors
    L, C, H, N = 4, 128, 4, 32
    b16 = lambda n: struct.pack("<%dH" % n, *([0x3f00] * n))  # bf16 0.5
    i8 = lambda n: bytes([(i * 7) % 255 for i in range(n)])
    f32s = lambda n: struct.pack("<%df" % n, *([0.01] * n))
    shifts = [("state.att_shift", "BF16", [L, C], b16(L * C)), ("state.ffn_shift", "BF16", [L, C], b16(L * C))]
    meta2 = lambda m: {"format": "rwkv7-state", "format_version": "2", "tokens_consumed": "3", "compression": m}
    write(out, "state", "bf16.state", safetensors(
        shifts + [("state.wkv", "BF16", [L, H, N, N], b16(L * H * N * N))], meta2("bf16")))
    write(out, "state", "int8.state", safetensors(
        shifts + [("state.wkv", "I8", [L, H, N, N], i8(L * H * N * N)),
                  ("state.wkv.scale", "F32", [L, H, N], f32s(L * H * N))], meta2("int8")))
    R = L * H * 2
    write(out, "state", "lowrank-int8.state", safetensors(
        shifts + [("state.wkv.rank", "I32", [L, H], struct.pack("<%di" % (L * H), *([2] * (L * H)))),
                  ("state.wkv.u", "I8", [R, N], i8(R * N)), ("state.wkv.v", "I8", [R, N], i8(R * N)),
                  ("state.wkv.u_scale", "F32", [R], f32s(R)), ("state.wkv.v_scale", "F32", [R], f32s(R))],
        meta2("lowrank-int8")))
    # vocabulary: the first lines of the World vocabulary (ids 1..N, contiguous)
    vocab = os.path.join(shared, "vocab", "rwkv_vocab_v20230424.txt")
    if os.path.exists(vocab):
        lines = open(vocab, "rb").read().split(b"\n")
        write(out, "vocab", "first300.txt", b"\n".join(lines[:300]) + b"\n")
    # tokenizer texts and JSONL documents
    texts = []
    cases = os.path.join(golden, "tokenizer_cases.json")
    if os.path.exists(cases):
        texts += [c["text"] for c in json.load(open(cases, encoding="utf-8")) if "text" in c]
    shakespeare = os.path.join(shared, "data", "tinyshakespeare.txt")
    if os.path.exists(shakespeare):
        t = open(shakespeare, encoding="utf-8").read()
        texts += [t[i:i + 400] for i in range(0, 4000, 400)]
    for i, t in enumerate(texts):
        write(out, "tokenizer", "text%02d" % i, t.encode())
        write(out, "jsonl", "doc%02d.jsonl" % i,
              (json.dumps({"text": t}) + "\n" + json.dumps({"text": t[:20], "meta": [1, {"a": 2}]}) + "\n").encode())

    # OpenAI request bodies (the first byte picks chat or completions in the harness)
    bodies = [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Hi\n\nthere"},
                      {"role": "assistant", "content": " Hello"},
                      {"role": "user", "content": [{"type": "text", "text": "more"}]}],
         "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "stop": ["\n\n", "x"],
         "stream": True, "stream_options": {"include_usage": True}, "seed": 3},
        {"prompt": "ROMEO:", "max_tokens": 5, "presence_penalty": 0.5, "frequency_penalty": -1,
         "penalty_decay": 0.99, "n": 1, "model": "m"},
        {"prompt": [1, 2, 3], "max_completion_tokens": 2, "stop": "ab"},
    ]
    for i, b in enumerate(bodies):
        write(out, "openai", "body%02d.json" % i, b"\x01" + json.dumps(b).encode())
        write(out, "openai", "body%02db.json" % i, b"\x00" + json.dumps(b).encode())


if __name__ == "__main__":
    main()
