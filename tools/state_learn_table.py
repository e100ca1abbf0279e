#!/usr/bin/env python3
"""Markdown tables for docs/state-compression.md from bench/state_learn.sh's JSON lines: each
learned projection and dtype against adaptive-int8 and lowrank-int8 at the same ratio.

Usage: python3 tools/state_learn_table.py OUT_DIR
"""
import glob
import json
import os
import re
import sys

out = sys.argv[1]


def load(path):
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []


for model in ["shakespeare", "tiny"]:
    for c in [256, 32]:
        learned = []
        for path in sorted(glob.glob(os.path.join(out, "%s-key-r*-c%d.jsonl" % (model, c)))):
            rank = int(re.search(r"-r(\d+)-", path).group(1))
            learned += [dict(r, rank=rank) for r in load(path)]
        svd = load(os.path.join(out, "%s-svd-c%d.jsonl" % (model, c)))
        if not learned:
            continue
        for m in sorted({r["prefix_tokens"] for r in learned}):
            reset = next((r for r in svd if r["method"] == "reset" and r["prefix_tokens"] == m), None)

            def kept(r):
                return "%.1f%%" % (100 * (1 - r["kl"] / reset["kl"])) if reset and reset["kl"] > 0 else "-"

            def same_ratio(method, ratio):
                cands = [r for r in svd if r["method"] == method and r["prefix_tokens"] == m
                         and r["target_ratio"] is not None and abs(r["target_ratio"] - ratio) < 2e-6]
                return cands[0] if cands else None

            print("\n**%s, M = %s, %d tokens compared; mean of 8 windows** (reset: KL %.5f, top-1 %.1f%%)\n"
                  % (model, format(m, ","), c, reset["kl"] if reset else float("nan"),
                     100 * reset["top1_agreement"] if reset else float("nan")))
            print("| learned (key side) | ratio | top-1 | KL | KL kept | adaptive-int8 at that ratio: KL (top-1) | lowrank-int8: KL (top-1) | learned lowest KL? |")
            print("|---|---|---|---|---|---|---|---|")
            for r in sorted([r for r in learned if r["prefix_tokens"] == m], key=lambda r: r["ratio"]):
                a = same_ratio("adaptive-int8", r["ratio"])
                l = same_ratio("lowrank-int8", r["ratio"])
                others = [x["kl"] for x in (a, l) if x]
                best = "yes" if others and r["kl"] < min(others) else "no"
                fmt = lambda x: "%.5f (%.1f%%)" % (x["kl"], 100 * x["top1_agreement"]) if x else "-"
                print("| %s rank %d | %.3f | %.1f%% | %.5f | %s | %s | %s | %s |" % (
                    r["method"], r["rank"], r["ratio"], 100 * r["top1_agreement"], r["kl"], kept(r),
                    fmt(a), fmt(l), best))
