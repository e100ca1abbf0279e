#!/usr/bin/env python3
"""Independent check of a GGUF file against the rules of ggml's own reader (gguf.cpp:
magic, version, key/value types, unique names, at most 4 dims, known tensor types, rows a
whole number of blocks, offsets aligned to general.alignment, data inside the file) and against
what llama.cpp's rwkv7 loader asks for (hyper-parameter keys, every tensor name with its ggml
shape, from llama-model.cpp's create_tensor calls). Written from the GGUF specification; it
shares no code with rwkv7's own reader.

usage: gguf_check.py FILE [--expect-type f32|f16|bf16|q8_0|q4_0|q5_0|q5_1|q4_k|q5_k|q6_k]
                     [--no-tokenizer-ok]
(exit 1 on any problem; --no-tokenizer-ok: a file without tokenizer metadata, which llama.cpp
refuses to load, is not a problem, e.g. a random model with a vocabulary of its own size)
"""
import struct
import sys

# ggml type id -> (name, block elements, block bytes)
# (ggml.c's type_traits: blck_size, type_size; the K-quants' QK_K = 256)
GGML_TYPES = {0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 6: ("q5_0", 32, 22),
              7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 12: ("q4_k", 256, 144),
              13: ("q5_k", 256, 176), 14: ("q6_k", 256, 210), 20: ("iq4_nl", 32, 18),
              30: ("bf16", 1, 2)}
# GGUF value types: id -> struct format (None: string / array)
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
           12: "d"}
STRING, ARRAY = 8, 9


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"truncated at byte {self.pos}")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out[0] if len(out) == 1 else out

    def string(self):
        n = self.take("Q")
        if self.pos + n > len(self.data):
            raise ValueError(f"string of {n} bytes runs past the end")
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8")

    def value(self, t):
        if t in SCALARS:
            return self.take(SCALARS[t])
        if t == STRING:
            return self.string()
        if t == ARRAY:
            inner, n = self.take("I"), self.take("Q")
            if inner == ARRAY:
                raise ValueError("nested arrays are not allowed")
            return [self.value(inner) for _ in range(n)]
        raise ValueError(f"unknown value type {t}")


def rwkv7_expected(kv):
    """Tensor name -> ggml ne, as llama.cpp's rwkv7 loader creates them."""
    C = kv["rwkv7.embedding_length"]
    L = kv["rwkv7.block_count"]
    F = kv["rwkv7.feed_forward_length"]
    Dw = kv["rwkv7.attention.decay_lora_rank"]
    Da = kv["rwkv7.attention.iclr_lora_rank"]
    Dv = kv["rwkv7.attention.value_residual_mix_lora_rank"]
    Dg = kv["rwkv7.attention.gate_lora_rank"]
    V = None
    exp = {"token_embd_norm.weight": [C], "token_embd_norm.bias": [C],
           "output_norm.weight": [C], "output_norm.bias": [C]}
    for i in range(L):
        b = f"blk.{i}."
        dv = Da if i == 0 else Dv  # llama.cpp sizes layer 0's unused value LoRA by the iclr rank
        exp.update({
            b + "attn_norm.weight": [C], b + "attn_norm.bias": [C],
            b + "attn_norm_2.weight": [C], b + "attn_norm_2.bias": [C],
            b + "time_mix_w0.weight": [C], b + "time_mix_w1.weight": [C, Dw],
            b + "time_mix_w2.weight": [Dw, C],
            b + "time_mix_a0.weight": [C], b + "time_mix_a1.weight": [C, Da],
            b + "time_mix_a2.weight": [Da, C],
            b + "time_mix_v0.weight": [C], b + "time_mix_v1.weight": [C, dv],
            b + "time_mix_v2.weight": [dv, C],
            b + "time_mix_g1.weight": [C, Dg], b + "time_mix_g2.weight": [Dg, C],
            b + "time_mix_lerp_fused.weight": [C, 1, 1, 6],
            b + "time_mix_k_k.weight": [C], b + "time_mix_k_a.weight": [C],
            b + "time_mix_r_k.weight": [C],
            b + "time_mix_key.weight": [C, C], b + "time_mix_value.weight": [C, C],
            b + "time_mix_receptance.weight": [C, C],
            b + "time_mix_ln.weight": [C], b + "time_mix_ln.bias": [C],
            b + "time_mix_output.weight": [C, C],
            b + "channel_mix_lerp_k.weight": [C, 1, 1],
            b + "channel_mix_key.weight": [C, F], b + "channel_mix_value.weight": [F, C],
        })
    return exp, V


def same_shape(ne, want):
    # ggml pads every shape to 4 dims with 1s; llama.cpp compares them that way.
    pad = lambda s: list(s) + [1] * (4 - len(s))
    return pad(ne) == pad(want)


def unescape_token(text):
    """Token bytes from the escaped text llama.cpp's rwkv tokenizer reads: \\t \\n \\r, \\xHH,
    and a backslash before any other character keeps that character."""
    out, i = bytearray(), 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        if i + 1 >= len(text):
            raise ValueError(f"token {text!r} ends inside an escape")
        e = text[i + 1]
        if e == "x":
            digits = text[i + 2:i + 4]
            if len(digits) != 2 or any(d not in "0123456789abcdef" for d in digits):
                raise ValueError(f"token {text!r}: bad \\x escape (llama.cpp reads lower-case hex)")
            out.append(int(digits, 16))
            i += 4
            continue
        out += {"t": b"\t", "n": b"\n", "r": b"\r"}.get(e, e.encode("utf-8"))
        i += 2
    return bytes(out)


# What llama.cpp's chat code recognises as the RWKV World template (llama-chat.cpp).
RWKV_WORLD_MARKERS = ("rwkv-world", "{{- 'User: ' + message['content']|trim + '\\n\\n' -}}")


def check_tokenizer(kv, n_vocab):
    """llama.cpp refuses a file without tokenizer.ggml.model; its rwkv tokenizer needs a token
    list of n_vocab entries, a newline token, and (World vocabulary) the chat template and the
    end-of-turn token its own converter writes, without which llama-server uses ChatML and never
    stops at a blank line."""
    if "tokenizer.ggml.model" not in kv:
        return ["no tokenizer.ggml.model: llama.cpp refuses the file (convert with --vocab, or a "
                "byte-level model)"]
    problems = []
    if kv["tokenizer.ggml.model"] != "rwkv":
        problems.append(f"tokenizer.ggml.model is {kv['tokenizer.ggml.model']!r}, not 'rwkv'")
    tokens, types = kv.get("tokenizer.ggml.tokens"), kv.get("tokenizer.ggml.token_type")
    if not isinstance(tokens, list) or len(tokens) != n_vocab:
        return problems + [f"tokenizer.ggml.tokens: {len(tokens) if isinstance(tokens, list) else 'no'} "
                           f"tokens for n_vocab {n_vocab}"]
    if not isinstance(types, list) or len(types) != n_vocab:
        problems.append(f"tokenizer.ggml.token_type must have {n_vocab} entries")
    elif types[0] != 3 or tokens[0] != "<s>":
        problems.append("token 0 must be '<s>' of type CONTROL (3), as llama.cpp's converter writes")
    try:
        decoded = [unescape_token(t) for t in tokens]
    except ValueError as e:
        return problems + [str(e)]
    if b"\n" not in decoded:
        problems.append("no token is a newline: llama.cpp asserts 'model vocab missing newline token'")
    if n_vocab > 256:  # a World vocabulary
        template = kv.get("tokenizer.chat_template")
        if not isinstance(template, str) or not any(m in template for m in RWKV_WORLD_MARKERS):
            problems.append("tokenizer.chat_template missing or not one llama.cpp recognises as "
                            "rwkv-world (it would fall back to ChatML)")
        for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
            if not 0 <= kv.get(key, -1) < n_vocab:
                problems.append(f"{key} missing or out of range")
        eot = kv.get("tokenizer.ggml.eot_token_id", -1)
        if not 0 <= eot < n_vocab or decoded[eot] != b"\n\n":
            problems.append("tokenizer.ggml.eot_token_id must be the '\\n\\n' token (replies end at a "
                            "blank line)")
    return problems


def check(path, expect_type=None, no_tokenizer_ok=False):
    with open(path, "rb") as f:
        data = f.read()
    r = Reader(data)
    problems = []
    if r.take("4s") != b"GGUF":
        return ["not a GGUF file (magic)"]
    version = r.take("I")
    if version not in (2, 3):
        problems.append(f"version {version}: ggml reads 2 and 3")
    n_tensors, n_kv = r.take("Q"), r.take("Q")
    kv = {}
    for _ in range(n_kv):
        key = r.string()
        t = r.take("I")
        if key in kv:
            problems.append(f"duplicate key {key}")
        kv[key] = r.value(t)
    alignment = kv.get("general.alignment", 32)
    if alignment <= 0 or alignment & (alignment - 1):
        problems.append(f"general.alignment {alignment} is not a power of two")
    infos = []
    names = set()
    for _ in range(n_tensors):
        name = r.string()
        if len(name.encode()) >= 64:
            problems.append(f"tensor name '{name}' longer than GGML_MAX_NAME - 1")
        if name in names:
            problems.append(f"duplicate tensor {name}")
        names.add(name)
        nd = r.take("I")
        if nd > 4:
            problems.append(f"{name}: {nd} dims (ggml allows 4)")
        ne = [r.take("Q") for _ in range(nd)]
        t, off = r.take("I"), r.take("Q")
        infos.append((name, ne, t, off))
    data_start = (r.pos + alignment - 1) // alignment * alignment
    for name, ne, t, off in infos:
        if t not in GGML_TYPES:
            problems.append(f"{name}: ggml type {t} not expected in a rwkv7 file")
            continue
        tname, blk, bsize = GGML_TYPES[t]
        if any(n <= 0 for n in ne):
            problems.append(f"{name}: non-positive dimension {ne}")
            continue
        if ne[0] % blk:
            problems.append(f"{name}: ne[0]={ne[0]} is not a whole number of {tname} blocks")
            continue
        if off % alignment:
            problems.append(f"{name}: offset {off} not aligned to {alignment}")
        count = 1
        for n in ne:
            count *= n
        nbytes = count // blk * bsize
        if data_start + off + nbytes > len(data):
            problems.append(f"{name}: data runs past the end of the file")
    # Tensors must not overlap (ggml lays them out in order, each padded to the alignment).
    spans = sorted((off, name, ne, t) for name, ne, t, off in infos if t in GGML_TYPES)
    for (o1, n1, ne1, t1), (o2, n2, _, _) in zip(spans, spans[1:]):
        _, blk, bsize = GGML_TYPES[t1]
        count = 1
        for n in ne1:
            count *= n
        if o1 + count // blk * bsize > o2:
            problems.append(f"{n1} overlaps {n2}")

    if kv.get("general.architecture") != "rwkv7":
        problems.append(f"general.architecture is {kv.get('general.architecture')!r}, not 'rwkv7'")
        return problems
    for key in ["rwkv7.embedding_length", "rwkv7.block_count", "rwkv7.feed_forward_length",
                "rwkv7.wkv.head_size", "rwkv7.attention.decay_lora_rank",
                "rwkv7.attention.iclr_lora_rank", "rwkv7.attention.value_residual_mix_lora_rank",
                "rwkv7.attention.head_count", "rwkv7.context_length"]:
        if key not in kv:
            problems.append(f"missing key {key} (llama.cpp's rwkv7 loader reads it)")
    if problems:
        return problems
    expected, _ = rwkv7_expected(kv)
    by_name = {name: (ne, t) for name, ne, t, _ in infos}
    C = kv["rwkv7.embedding_length"]
    for big in ["token_embd.weight", "output.weight"]:
        if big not in by_name:
            problems.append(f"missing tensor {big}")
        elif by_name[big][0][0] != C or len(by_name[big][0]) != 2:
            problems.append(f"{big}: ne {by_name[big][0]}, llama.cpp wants [{C}, n_vocab]")
    for name, want in expected.items():
        if name not in by_name:
            problems.append(f"missing tensor {name}")
        elif not same_shape(by_name[name][0], want):
            problems.append(f"{name}: ne {by_name[name][0]}, llama.cpp wants {want}")
    extra = set(by_name) - set(expected) - {"token_embd.weight", "output.weight"}
    for name in sorted(extra):
        problems.append(f"unexpected tensor {name} (llama.cpp would refuse the file)")
    if expect_type:
        # time_mix_key has C columns, channel_mix_value F: a K-quant file on a model whose C
        # is not a multiple of 256 has time_mix_key in llama-quantize's fallback type, so
        # --expect-type is checked on channel_mix_value (F = 4C) alone for the K-quants.
        names = ["blk.0.time_mix_key.weight", "blk.0.channel_mix_value.weight"]
        if expect_type.endswith("_k"):
            names = names[1:]
        for name in names:
            got = GGML_TYPES[by_name[name][1]][0]
            if got != expect_type:
                problems.append(f"{name} is {got}, expected {expect_type}")
    if "tokenizer.ggml.model" in kv or not no_tokenizer_ok:
        problems += check_tokenizer(kv, by_name["token_embd.weight"][0][1])
    return problems


def main():
    args = sys.argv[1:]
    expect = None
    if "--expect-type" in args:
        i = args.index("--expect-type")
        expect = args[i + 1]
        del args[i:i + 2]
    no_tokenizer_ok = "--no-tokenizer-ok" in args
    args = [a for a in args if a != "--no-tokenizer-ok"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        problems = check(args[0], expect, no_tokenizer_ok)
    except (OSError, ValueError, UnicodeDecodeError, KeyError, struct.error) as e:
        problems = [str(e)]
    for p in problems:
        print(f"{args[0]}: {p}")
    if not problems:
        print(f"{args[0]}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
