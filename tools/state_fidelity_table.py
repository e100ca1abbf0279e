#!/usr/bin/env python3
"""Markdown tables for docs/state-compression.md from bench/state_fidelity.sh's JSON lines.

Usage: python3 tools/state_fidelity_table.py OUT_DIR
"""
import json
import os
import sys

out = sys.argv[1]
FAMILIES = ["lowrank", "lowrank-bf16", "lowrank-int8", "adaptive", "adaptive-bf16", "adaptive-int8"]
TARGETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def rows(name):
    path = os.path.join(out, name)
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []


def cell(r):
    return "%.1f%% / %.4f / %+.3f%%" % (100 * r["top1_agreement"], r["kl"], 100 * r["loss_delta"])


def sweep(model, kind):
    rs = rows("%s-%s.jsonl" % (model, kind))
    for m in sorted({r["prefix_tokens"] for r in rs}):
        at = [r for r in rs if r["prefix_tokens"] == m]
        reset = next((r for r in at if r["method"] == "reset"), None)
        kept = lambda r: "%.1f%%" % (100 * (1 - r["kl"] / reset["kl"])) if reset and reset["kl"] > 0 else "-"
        what = {"c256": "compressed once, 256 tokens compared",
                "c32": "compressed once, 32 tokens compared",
                "recompress": "compressed again every 256 tokens of prefix and continuation, 256 compared"}[kind]
        windows = at[0].get("windows", 1)
        print("\n**%s, M = %s, %s; mean of %d window%s (%d positions)**\n" % (
            model, format(m, ","), what, windows, "s" if windows > 1 else "",
            at[0]["continue_tokens"]))
        print("| method | ratio | top-1 agreement | mean KL (nats) | KL kept | loss delta |")
        print("|---|---|---|---|---|---|")
        for r in at:
            if r["target_ratio"] is None:
                print("| %s | %.3f | %.1f%% | %.5f | %s | %+.3f%% |" % (
                    r["method"], r["ratio"], 100 * r["top1_agreement"], r["kl"], kept(r),
                    100 * r["loss_delta"]))
        print("\nEach cell: achieved ratio: top-1 agreement, mean KL (KL kept)\n")
        print("\n| method | " + " | ".join("≤ %.1f" % t for t in TARGETS) + " |")
        print("|---|" + "---|" * len(TARGETS))
        for f in FAMILIES:
            by = {round(r["target_ratio"], 3): r for r in at if r["method"] == f}
            cells = []
            for t in TARGETS:
                r = by.get(round(t, 3))
                cells.append("%.3f: %.1f%%, %.5f (%s)" % (r["ratio"], 100 * r["top1_agreement"], r["kl"], kept(r)) if r else "")
            print("| %s | %s |" % (f, " | ".join(cells)))


def equal(model):
    print("\n**%s, M = 10,000: adaptive against fixed rank at the same bytes** "
          "(KL nats, top-1 over 256 / over 32 tokens; mean of 8 windows)\n" % model)
    print("| factors | ratio | fixed rank | KL fixed | KL adaptive | top-1 fixed | top-1 adaptive | KL fixed (32) | KL adaptive (32) | adaptive better (KL, 256 and 32) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    wins = total = 0
    for f in ["", "-bf16", "-int8"]:
        a = rows("%s-equal%s-c256.jsonl" % (model, f))
        b = rows("%s-equal%s-c32.jsonl" % (model, f))
        fixed = [r for r in a if r["method"] == "lowrank" + f]
        for fr in fixed:
            ad = next(r for r in a if r["method"] == "adaptive" + f and r["target_ratio"] == fr["target_ratio"])
            f32 = next(r for r in b if r["method"] == "lowrank" + f and r["target_ratio"] == fr["target_ratio"])
            a32 = next(r for r in b if r["method"] == "adaptive" + f and r["target_ratio"] == fr["target_ratio"])
            better = ad["kl"] < fr["kl"] and a32["kl"] < f32["kl"]
            if fr["kl"] > 1e-7:
                total += 1
                wins += better
            print("| %s | %.3f (adaptive %.3f) | %s | %.6f | %.6f | %.1f%% | %.1f%% | %.6f | %.6f | %s |" % (
                f or "f32", fr["ratio"], ad["ratio"], fr["detail"], fr["kl"], ad["kl"],
                100 * fr["top1_agreement"], 100 * ad["top1_agreement"], f32["kl"], a32["kl"],
                "yes" if better else "no"))
    print("\nadaptive lower KL at both lengths in %d of %d comparisons (KL of fixed rank > 1e-7)" % (wins, total))


for model in ["shakespeare", "tiny"]:
    print("\n### %s\n" % model)
    for kind in ["c256", "c32", "recompress"]:
        sweep(model, kind)
    equal(model)
