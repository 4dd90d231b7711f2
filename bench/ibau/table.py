#!/usr/bin/env python3
"""Renders the README's I-BAU results table from `ibau sweep` JSON lines.

    bench/ibau/table.py bench/ibau/results-mnist.jsonl bench/ibau/results-fashion-mnist.jsonl

One row per (data set, attack, clean size): mean ± sd (sample sd) over the seeds of ACC/ASR
before, after I-BAU and after the fine-tuning ablation, in percent, and how many seeds each
row averages. Where the runs recalibrated the output bias (`"recalibration"` in the lines), a
second table compares I-BAU's metrics just before the recalibration with the final ones (the
same runs). Uses only the standard library.
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
                    rec = d.get("recalibration") or {}
                    if rec.get("acc_unrecalibrated") is not None:
                        r["unrec_acc"].append(rec["acc_unrecalibrated"])
                        r["unrec_asr"].append(rec["asr_unrecalibrated"])
                    r["acc_before"].append(d["acc_before"])
                    r["asr_before"].append(d["asr_before"])
                    r["ibau_acc"].append(d["acc_after"])
                    r["ibau_asr"].append(d["asr_after"])
                else:
                    r["ft_acc"].append(d["acc_after"])
                    r["ft_asr"].append(d["asr_after"])
    order.sort(key=lambda k: (paths_rank(k[0]), ATTACKS.index(k[1]) if k[1] in ATTACKS else 99, -k[2]))
    print("| data | attack | clean | seeds | ACC before | ASR before | I-BAU (tuned) ACC | I-BAU ASR | ACC drop | issue 6 target | fine-tune ACC | fine-tune ASR |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for k in order:
        r = rows[k]
        cols = [ms(r[c]) if r[c] else "–" for c in ("acc_before", "asr_before", "ibau_acc", "ibau_asr", "ft_acc", "ft_asr")]
        drop, verdict = "–", "–"
        if r["ibau_acc"]:
            drop_pt = 100 * (statistics.mean(r["acc_before"]) - statistics.mean(r["ibau_acc"]))
            asr = 100 * statistics.mean(r["ibau_asr"])
            drop = f"{drop_pt:.2f}"
            verdict = target(k[2], asr, drop_pt)
        cols = cols[:4] + [drop, verdict] + cols[4:]
        print(f"| {k[0]} | {k[1]} | {k[2]} | {len(r['ibau_acc'])} | " + " | ".join(cols) + " |")
    recalibrated = [k for k in order if rows[k]["unrec_acc"]]
    if recalibrated:
        print()
        print("| data | attack | clean | seeds | I-BAU before recalibration: ACC | ASR | ACC drop | issue 6 target | after: ACC | ASR | ACC drop | issue 6 target |")
        print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
        for k in recalibrated:
            r = rows[k]
            if len(r["unrec_acc"]) != len(r["ibau_acc"]):
                sys.exit(f"{k}: only some I-BAU runs recalibrated")
            cols = []
            for acc, asr in (("unrec_acc", "unrec_asr"), ("ibau_acc", "ibau_asr")):
                drop_pt = 100 * (statistics.mean(r["acc_before"]) - statistics.mean(r[acc]))
                cols += [ms(r[acc]), ms(r[asr]), f"{drop_pt:.2f}", target(k[2], 100 * statistics.mean(r[asr]), drop_pt)]
            print(f"| {k[0]} | {k[1]} | {k[2]} | {len(r['ibau_acc'])} | " + " | ".join(cols) + " |")


def target(clean_size, asr, drop):
    """Issue 6's targets on the means: ASR ≤ 1 % and ACC drop ≤ 0.5 pt with 5 000 clean samples,
    ASR ≤ 5 % and drop ≤ 2 pt with 100."""
    limits = {5000: (1.0, 0.5), 100: (5.0, 2.0)}.get(clean_size)
    if limits is None:
        return "–"
    misses = []
    if asr > limits[0]:
        misses.append(f"ASR +{asr - limits[0]:.2f}")
    if drop > limits[1]:
        misses.append(f"drop +{drop - limits[1]:.2f}")
    return "met" if not misses else "missed: " + ", ".join(misses)


def paths_rank(dataset):
    return {"Mnist": 0, "FashionMnist": 1}.get(dataset, 2)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
