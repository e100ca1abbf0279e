#!/usr/bin/env python3
"""RWKV-7 (x070) in plain PyTorch, GPT (sequence) mode, fp32.

An independent reference for checking the C++ engine and its trainer
(`rwkv7 train`).  It follows SPEC-rwkv7.md §3 literally: the WKV recurrence is a
Python loop over time, so autograd gives exact (unfused) gradients.

Usage (self-check against the golden files):
    /usr/bin/python3 tools/torch_reference/rwkv7_torch.py [--shared ../shared]
"""
import argparse
import json
import os
import struct
import sys

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------
# safetensors, read by hand (8-byte LE header length, JSON header, raw data)
# --------------------------------------------------------------------------
_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I32": torch.int32, "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        s, e = info["data_offsets"]
        buf = bytearray(blob[base + s:base + e])
        t = torch.frombuffer(buf, dtype=_ST_DTYPES[info["dtype"]]) if e > s else \
            torch.empty(0, dtype=_ST_DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out, meta


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------
def load_params(path):
    """Official state dict -> dict of fp32 leaf tensors (requires_grad).

    Layer 0's v0/v1/v2 (present in released files, unused by the math) are
    dropped: they are not part of the graph."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    params = {}
    for k, v in sd.items():
        if k.startswith("blocks.0.att.v") and k.split(".")[-1] in ("v0", "v1", "v2"):
            continue
        params[k] = v.detach().to(torch.float32).clone().requires_grad_(True)
    return params


def config_of(p):
    V, C = p["emb.weight"].shape
    H, N = p["blocks.0.att.r_k"].shape
    L = 1 + max(int(k.split(".")[1]) for k in p if k.startswith("blocks."))
    return dict(V=V, C=C, H=H, N=N, L=L)


def _ln(x, p, name, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), p[name + ".weight"], p[name + ".bias"], eps)


def _shift(x):
    """Token shift: previous position, zeros before the first one. x [B,T,C]."""
    return F.pad(x, (0, 0, 1, -1))


def wkv_loop(r, decay, k, v, a_vec, b_vec, H, N):
    """S = S*diag(decay) + (S a) b^T + v k^T ; y = S r   (per head, loop over t).

    All inputs [B,T,C]; returns y [B,T,C]."""
    B, T, C = r.shape
    r, decay, k, v, a_vec, b_vec = (z.view(B, T, H, N) for z in (r, decay, k, v, a_vec, b_vec))
    S = torch.zeros(B, H, N, N, dtype=r.dtype)          # S[i][j]: i value, j key
    ys = []
    for t in range(T):
        sa = S @ a_vec[:, t, :, :, None]                 # [B,H,N,1]
        S = S * decay[:, t, :, None, :] + sa @ b_vec[:, t, :, None, :] \
            + v[:, t, :, :, None] @ k[:, t, :, None, :]
        ys.append((S @ r[:, t, :, :, None]).squeeze(-1))
    return torch.stack(ys, dim=1).reshape(B, T, C)


def time_mix(i, x, v_first, p, cfg):
    B, T, C = x.shape
    H, N = cfg["H"], cfg["N"]
    a_ = lambda n: p[f"blocks.{i}.att.{n}"]
    xx = _shift(x) - x
    xr = x + xx * a_("x_r")
    xw = x + xx * a_("x_w")
    xk = x + xx * a_("x_k")
    xv = x + xx * a_("x_v")
    xa = x + xx * a_("x_a")
    xg = x + xx * a_("x_g")

    r = xr @ a_("receptance.weight").t()
    k = xk @ a_("key.weight").t()
    v = xv @ a_("value.weight").t()
    w = -F.softplus(-(a_("w0") + torch.tanh(xw @ a_("w1")) @ a_("w2"))) - 0.5
    decay = torch.exp(-torch.exp(w))   # = exp(-e^-0.5 * sigmoid(w0 + ...))
    if i == 0:
        v_first = v
    else:
        v = v + (v_first - v) * torch.sigmoid(a_("v0") + (xv @ a_("v1")) @ a_("v2"))
    a = torch.sigmoid(a_("a0") + (xa @ a_("a1")) @ a_("a2"))
    g = torch.sigmoid(xg @ a_("g1")) @ a_("g2")

    kk = k * a_("k_k")
    kk = F.normalize(kk.view(B, T, H, N), dim=-1, p=2.0, eps=1e-12).view(B, T, C)
    k = k * (1 + (a - 1) * a_("k_a"))

    y = wkv_loop(r, decay, k, v, -kk, kk * a, H, N)
    y = F.group_norm(y.view(B * T, C), H, a_("ln_x.weight"), a_("ln_x.bias"), eps=64e-5).view(B, T, C)
    bonus = (r.view(B, T, H, N) * k.view(B, T, H, N) * a_("r_k")).sum(dim=-1, keepdim=True) \
        * v.view(B, T, H, N)
    y = y + bonus.view(B, T, C)
    return (y * g) @ a_("output.weight").t(), v_first


def channel_mix(i, x, p):
    xx = _shift(x) - x
    xk = x + xx * p[f"blocks.{i}.ffn.x_k"]
    h = torch.relu(xk @ p[f"blocks.{i}.ffn.key.weight"].t()) ** 2
    return h @ p[f"blocks.{i}.ffn.value.weight"].t()


def forward(p, tokens, cfg=None):
    """tokens [B,T] int64 -> logits [B,T,V]."""
    cfg = cfg or config_of(p)
    x = F.embedding(tokens, p["emb.weight"])
    x = _ln(x, p, "blocks.0.ln0")
    v_first = None
    for i in range(cfg["L"]):
        att, v_first = time_mix(i, _ln(x, p, f"blocks.{i}.ln1"), v_first, p, cfg)
        x = x + att
        x = x + channel_mix(i, _ln(x, p, f"blocks.{i}.ln2"), p)
    x = _ln(x, p, "ln_out")
    return x @ p["head.weight"].t()


class L2Wrap(torch.autograd.Function):
    """Official RWKV-LM L2Wrap: identity on the loss; in backward adds
    1e-4/(B*T) * max_logit to the gradient of each position's arg-max logit."""

    @staticmethod
    def forward(ctx, loss, y):
        ctx.save_for_backward(y)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        y = ctx.saved_tensors[0]
        factor = 1e-4 / (y.shape[0] * y.shape[1])
        maxx, ids = torch.max(y, -1, keepdim=True)
        gy = torch.zeros_like(y)
        gy.scatter_(-1, ids, maxx * factor)
        return (grad_output, gy)


def lm_loss(p, inputs, targets, l2wrap=False, cfg=None):
    logits = forward(p, inputs, cfg)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    if l2wrap:
        loss = L2Wrap.apply(loss, logits)
    return loss


# --------------------------------------------------------------------------
# self-check against the golden files
# --------------------------------------------------------------------------
def self_check(shared):
    g = os.path.join(shared, "golden")
    p = load_params(os.path.join(g, "rand-L2-D128.pth"))
    cfg = config_of(p)
    ok = True

    # logits (GPT mode) vs golden
    gold, _ = read_safetensors(os.path.join(g, "rand-L2-D128.golden.safetensors"))
    with torch.no_grad():
        logits = forward(p, gold["tokens"].long()[None], cfg)[0]
    dl = (logits - gold["logits"]).abs().max().item()
    tol = 1e-4 * max(1.0, gold["logits"].std().item())
    print(f"logits: max|dlogit| = {dl:.3e}  (tol {tol:.3e})  {'OK' if dl <= tol else 'FAIL'}")
    ok &= dl <= tol

    # loss and gradients vs golden
    gr, meta = read_safetensors(os.path.join(g, "rand-L2-D128.grads.safetensors"))
    tok = gr["tokens"].long()
    loss = lm_loss(p, tok[:, :-1], tok[:, 1:], l2wrap=False, cfg=cfg)
    loss.backward()
    gl = float(meta["loss"])
    print(f"loss: {loss.item():.8f} vs golden {gl:.8f}  |d| = {abs(loss.item() - gl):.2e}  "
          f"{'OK' if abs(loss.item() - gl) <= 1e-5 else 'FAIL'}")
    ok &= abs(loss.item() - gl) <= 1e-5
    worst, worst_name, n = 0.0, "", 0
    names = sorted(k[5:] for k in gr if k.startswith("grad."))
    missing = [k for k in names if k not in p] + [k for k in p if "grad." + k not in gr]
    if missing:
        print("name mismatch:", missing)
        ok = False
    for name in names:
        if name not in p:
            continue
        ref = gr["grad." + name]
        d = (p[name].grad - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
        n += 1
        if d > worst:
            worst, worst_name = d, name
    print(f"grads: {n} tensors, worst relative-to-max error {worst:.3e} ({worst_name})  "
          f"{'OK' if worst <= 1e-3 else 'FAIL'}")
    ok &= worst <= 1e-3
    return ok


if __name__ == "__main__":
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--shared", default=os.path.normpath(os.path.join(here, "..", "..", "..", "shared")))
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.shared, "golden")):
        print(f"skip: {args.shared}/golden not found")
        sys.exit(0)
    sys.exit(0 if self_check(args.shared) else 1)
