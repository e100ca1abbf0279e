#!/usr/bin/env python3
"""Independent check of `rwkv7 train` against RWKV-7 training math in PyTorch.

Creates a small fresh model with `rwkv7 init`, trains it for a few steps with
`rwkv7 train --no-shuffle`, trains the same initial weights on the same batches
with the same hyper-parameters in PyTorch (rwkv7_torch.py, autograd,
torch.optim.AdamW, clip_grad_norm_, official L2Wrap), and compares per step the
loss (before the update), the learning rate and the gradient norm (before clipping).

    /usr/bin/python3 tools/torch_reference/compare_training.py [--out DIR] [--steps 20]
"""
import argparse
import json
import math
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rwkv7_torch as R  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def lr_at(s, S, W, lr_init, lr_final):
    progress = min(max((s - W) / max(1, S - 1 - W), 0.0), 1.0)
    f = lr_final / lr_init
    lr = lr_init * ((0.5 + f / 2) + (0.5 - f / 2) * math.cos(math.pi * progress))
    if s < W:
        lr *= 0.01 + 0.99 * s / W
    return lr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "rwkv7"))
    ap.add_argument("--data", default=os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")))
    ap.add_argument("--out", default="/tmp/rwkv7_torch_compare")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--lr-init", type=float, default=1e-3)
    ap.add_argument("--lr-final", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--weight-decay", type=float, default=0.001)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    args = ap.parse_args()
    torch.set_num_threads(1)

    if not os.path.exists(args.data):
        print(f"skip: {args.data} not found")
        return 0
    os.makedirs(args.out, exist_ok=True)
    init = os.path.join(args.out, "init.pth")
    log = os.path.join(args.out, "rwkv7.jsonl")
    if os.path.exists(log):
        os.remove(log)
    cmd_init = [args.bin, "init", "--layers", "2", "--embd", "64", "--head-size", "16",
                "--vocab-size", "256", "--seed", "3", "-o", init]
    cmd_train = [args.bin, "train", "--init", init, "--data", args.data,
                 "--val-fraction", str(args.val_fraction), "--no-shuffle",
                 "--steps", str(args.steps), "--batch", str(args.batch), "--ctx", str(args.ctx),
                 "--lr-init", str(args.lr_init), "--lr-final", str(args.lr_final),
                 "--warmup", str(args.warmup), "--grad-clip", str(args.grad_clip),
                 "--weight-decay", str(args.weight_decay), "--log-json", log,
                 "-t", "2", "-o", os.path.join(args.out, "run")]
    for c in (cmd_init, cmd_train):
        print("$", " ".join(c), flush=True)
        subprocess.run(c, check=True, stdout=subprocess.DEVNULL)
    with open(log) as f:
        ref = {}
        for line in f:
            if line.strip():
                o = json.loads(line)
                ref[o["step"]] = o

    # ---- PyTorch side ----
    data = open(args.data, "rb").read()
    tokens = torch.tensor(list(data), dtype=torch.int64)       # byte value = token id
    n_train = len(tokens) - int(len(tokens) * args.val_fraction)  # informational only
    p = R.load_params(init)
    cfg = R.config_of(p)
    decay, w0, other = [], [], []
    for name, t in p.items():
        if name.endswith("att.w0"):
            w0.append(t)
        elif t.dim() == 2 and name.endswith(".weight"):
            decay.append(t)
        else:
            other.append(t)
    groups = [dict(params=other, weight_decay=0.0, scale=1.0),
              dict(params=decay, weight_decay=args.weight_decay, scale=1.0),
              dict(params=w0, weight_decay=0.0, scale=2.0)]
    opt = torch.optim.AdamW(groups, lr=args.lr_init, betas=(0.9, 0.99), eps=1e-18)
    params = [t for t in p.values()]
    print(f"torch: {cfg}, {sum(t.numel() for t in params)} parameters "
          f"({len(decay)} decayed, {len(w0)} w0, {len(other)} other); train tokens ~{n_train}")

    B, T = args.batch, args.ctx
    # sensitivity control: the step-0 grad norm WITHOUT L2Wrap (shows the
    # comparison is able to see a missing/extra term of that size)
    inp0 = tokens[:B * T].view(B, T)
    tgt0 = tokens[1:B * T + 1].view(B, T)
    q = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
    R.lm_loss(q, inp0, tgt0, l2wrap=False, cfg=cfg).backward()
    gn_nol2 = torch.norm(torch.stack([t.grad.norm() for t in q.values()])).item()
    del q
    rows = []
    for s in range(args.steps):
        inp = torch.stack([tokens[(s * B + b) * T:(s * B + b) * T + T] for b in range(B)])
        tgt = torch.stack([tokens[(s * B + b) * T + 1:(s * B + b) * T + T + 1] for b in range(B)])
        lr = lr_at(s, args.steps, args.warmup, args.lr_init, args.lr_final)
        for g in opt.param_groups:
            g["lr"] = lr * g["scale"]
        opt.zero_grad(set_to_none=True)
        loss = R.lm_loss(p, inp, tgt, l2wrap=True, cfg=cfg)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, args.grad_clip if args.grad_clip > 0 else float("inf")).item()
        opt.step()
        o = ref.get(s)
        rows.append((s, o["loss"] if o else float("nan"), loss.item(),
                     o["grad_norm"] if o else float("nan"), gn,
                     o["lr"] if o else float("nan"), lr))

    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-30)
    hdr = "| step | loss rwkv7 | loss torch | rel diff | grad_norm rwkv7 | grad_norm torch | rel diff | lr rwkv7 | lr torch |"
    print(hdr)
    print("|" + "---|" * 9)
    for s, lr7, lt, g7, gt, l7, ltt in rows:
        print(f"| {s} | {lr7:.7f} | {lt:.7f} | {rel(lr7, lt):.2e} | {g7:.5f} | {gt:.5f} | "
              f"{rel(g7, gt):.2e} | {l7:.6e} | {ltt:.6e} |")
    ml = max(rel(r[1], r[2]) for r in rows)
    mg = max(rel(r[3], r[4]) for r in rows)
    mr = max(rel(r[5], r[6]) for r in rows)
    print(f"max relative difference: loss {ml:.2e}, grad_norm {mg:.2e}, lr {mr:.2e}")
    for k in (1, 5, 10):
        if k <= len(rows):
            print(f"  first {k} step(s): loss {max(rel(r[1], r[2]) for r in rows[:k]):.2e}, "
                  f"grad_norm {max(rel(r[3], r[4]) for r in rows[:k]):.2e}")
    if 0 in ref:
        print(f"control: step-0 grad_norm without L2Wrap (torch) = {gn_nol2:.5f}, "
              f"rel diff to rwkv7 {rel(ref[0]['grad_norm'], gn_nol2):.2e}")
    # final weights after all steps: rwkv7's run/model.pth vs the torch parameters
    fin = os.path.join(args.out, "run", "model.pth")
    if os.path.exists(fin) and len(ref) == args.steps:
        sd = torch.load(fin, map_location="cpu", weights_only=True)
        worst, wn = 0.0, ""
        for k, t in p.items():
            d = (sd[k].float() - t.detach()).abs().max().item() / max(t.detach().abs().max().item(), 1e-30)
            if d > worst:
                worst, wn = d, k
        print(f"final weights after {args.steps} steps: worst |dw|/max|w| = {worst:.2e} ({wn})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
