"""Combines the core's JSON (hypergrad_bench) and the anchors' JSON (anchors.py) into the
results table, with ratios to the faster anchor and the issue's targets. Standard library only."""
import json
import sys


def fmt_t(x):
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def main(ours_path, anchors_path, memory_path=None):
    ours = {p["name"]: p for p in json.load(open(ours_path))["problems"]}
    memory = {}
    if memory_path:
        for m in json.load(open(memory_path))["memory"]:
            memory[(m["name"], m["method"])] = m["peak_extra_bytes"]
    anchors = json.load(open(anchors_path))
    print(f"anchors: jax {anchors['versions']['jax']}, torch {anchors['versions']['torch']}"
          f" ({anchors['versions']['torch_threads']} threads)\n")
    verdicts = []
    for ap in anchors["problems"]:
        name = ap["name"]
        if name not in ours:
            continue
        op = ours[name]
        d = op["d"]
        print(f"### {name} (d = {d}, e^λ₀ = {op['mu0']:.3e}, {op['steps']} trajectory steps)\n")
        print("| scenario | method | time | applications | max rel. error | certified bound | time ÷ faster anchor "
              "| solver work | peak extra memory | preconditioner |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for scenario in ("cold", "trajectory"):
            anc = [m for m in ap["methods"] if m["scenario"] == scenario]
            best = min(anc, key=lambda m: m["time"])
            for m in anc:
                print(f"| {scenario} | {m['method']} | {fmt_t(m['time'])} | {m['applications']} "
                      f"| {m['max_rel_error']:.1e} | — | {m['time'] / best['time']:.2f} | — | — | — |")
            rows = [m for m in op["methods"] if m["scenario"] == scenario]
            for m in rows:
                work = 1 - m["operator_time"] / m["time"] if m["time"] > 0 else float("nan")
                mem = memory.get((name, m["method"])) if scenario == "cold" else None
                mem_s = f"{mem / (8 * d):.1f} d" if mem is not None else "—"
                pre = f"{m['precond_bytes'] / (8 * d):.0f} d" if m["precond_bytes"] else "—"
                cert = m["max_certified_rel_bound"]
                print(f"| {scenario} | ours: {m['method']} | {fmt_t(m['time'])} | {m['applications']} "
                      f"| {m['max_rel_error']:.1e} | {cert:.1e} | {m['time'] / best['time']:.2f} | {work:.0%} "
                      f"| {mem_s} | {pre} |")
            # Targets.
            # Errors below the reference's own resolution (1e-14·κ) count as equal.
            acc = max(best["max_rel_error"], 1e-14 * op["kappa"])

            def ratio(pred):
                cand = [m for m in rows if pred(m["method"])]
                good = [m for m in cand if m["max_rel_error"] <= acc]
                m = min(good or cand, key=lambda m: m["time"])
                return m, m["time"] / best["time"]
            if scenario == "cold":
                m, r = ratio(lambda s: s in ("cg", "cg-target"))
                verdicts.append((name, "cold, no preconditioner ≤ 1× faster anchor", m, r, 1.0, acc))
                m, r = ratio(lambda s: s.startswith("pcg") or s.startswith("cg"))
                verdicts.append((name, "cold, best preconditioner ≤ 0.5×", m, r, 0.5, acc))
            else:
                m, r = ratio(lambda s: s != "cg")
                verdicts.append((name, "trajectory of steps ≤ 0.3×", m, r, 0.3, acc))
        print()
    print("### Targets (time ÷ the faster anchor's time, among our variants at least as accurate as that"
          " anchor; errors below the reference's resolution 1e-14·κ count as equal)\n")
    print("| problem | target | our method | ratio | met | our error | anchor's error |")
    print("|---|---|---|---:|---|---:|---:|")
    for name, what, m, r, goal, acc in verdicts:
        ok = r <= goal and m["max_rel_error"] <= acc
        print(f"| {name} | {what} | {m['method']} | {r:.2f} | {'yes' if ok else 'no'} "
              f"| {m['max_rel_error']:.1e} | {acc:.1e} |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
