#!/usr/bin/env python3
"""Renders the README's I-BAU results table from `ibau sweep` JSON lines.

    bench/ibau/table.py bench/ibau/results-mnist.jsonl bench/ibau/results-fashion-mnist.jsonl

One row per (data set, attack, clean size): mean ± sd (sample sd) over the seeds of ACC/ASR
before, after I-BAU and after the fine-tuning ablation, in percent, and how many seeds each
row averages. Uses only the standard library.
"""
import json
import statistics
import sys
from collections import defaultdict

ATTACKS = ["badnets", "blended", "sig", "all-to-all"]


def ms(xs):
    xs = [100 * x for x in xs]
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.2f} ± {sd:.2f}"


def main(paths):
    rows = defaultdict(lambda: defaultdict(list))
    order = []
    for path in paths:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                d = json.loads(line)
                key = (d["dataset"], d["attack"], d["clean_size"])
                if key not in rows:
                    order.append(key)
                r = rows[key]
                if d["method"] == "Ibau":
                    r["acc_before"].append(d["acc_before"])
                    r["asr_before"].append(d["asr_before"])
                    r["ibau_acc"].append(d["acc_after"])
                    r["ibau_asr"].append(d["asr_after"])
                else:
                    r["ft_acc"].append(d["acc_after"])
                    r["ft_asr"].append(d["asr_after"])
    order.sort(key=lambda k: (paths_rank(k[0]), ATTACKS.index(k[1]) if k[1] in ATTACKS else 99, -k[2]))
    print("| data | attack | clean | seeds | ACC before | ASR before | I-BAU (tuned) ACC | I-BAU ASR | fine-tune ACC | fine-tune ASR |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in order:
        r = rows[k]
        cols = [ms(r[c]) if r[c] else "–" for c in ("acc_before", "asr_before", "ibau_acc", "ibau_asr", "ft_acc", "ft_asr")]
        print(f"| {k[0]} | {k[1]} | {k[2]} | {len(r['ibau_acc'])} | " + " | ".join(cols) + " |")


def paths_rank(dataset):
    return {"Mnist": 0, "FashionMnist": 1}.get(dataset, 2)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
