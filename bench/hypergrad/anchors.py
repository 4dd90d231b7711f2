"""JAXopt and torchopt on the instances that `hypergrad_bench` (the core's side) exported.

For every problem directory under --data: a single cold hypergradient (median of --reps timed
runs after one warm-up, which also jit-compiles JAX) and a trajectory of the exported steps
(sum of the per-step times; every step is a cold solve, as both libraries' `custom_root` start
CG from zero). The inner solution w*(λ_t) is given (exported from Rust): each library runs its
`custom_root` implicit differentiation with its own CG to relative residual --rtol.

Operator applications are counted by wrapping the `matvec` that `custom_root` hands to the
linear solver: a Python counter for torchopt (in the timed runs), `jax.debug.callback` in a
separate, untimed JAX run (inside `jit` a Python counter would only count the tracing).

Prints one JSON document on stdout.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jaxopt.implicit_diff import custom_root as jax_custom_root  # noqa: E402
from jaxopt.linear_solve import solve_cg as jax_solve_cg  # noqa: E402

import torch  # noqa: E402
import torchopt  # noqa: E402

torch.set_default_dtype(torch.float64)


def load(d):
    return {f[:-4]: np.load(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".npy")}


# --------------------------------------------------------------------------------------------
# Problem definitions: the optimality condition F(w, λ) = ∇_wG(w, λ) and the outer loss E(w),
# written once against an array namespace (jnp or torch).


def ridge_defs(a, xp, exp):
    Z, W, c, y1, y2, Zv, yv = (a[k] for k in ("Z", "W", "c", "y1", "y2", "Zv", "yv"))
    n = float(a["n"][0])
    m = Zv.shape[0]

    def F(w, lam):
        # Xᵀ(Xw − y)/n + e^λ w with X = [Z Wᵀ; diag(c)].
        r1 = Z @ (W.T @ w) - y1
        r2 = c * w - y2
        return (W @ (Z.T @ r1) + c * r2) / n + exp(lam) * w

    def E(w):
        r = Zv @ (W.T @ w) - yv
        return 0.5 * (r * r).sum() / m

    return F, E


def quadratic_defs(a, xp, exp, pad):
    b, w_t = a["b"], a["w_t"]
    g = int(a["grid"][0])

    def lap(w):
        u = w.reshape(g, g)
        p = pad(u)
        out = 4.0 * u - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]
        return out.reshape(-1)

    def F(w, lam):
        return lap(w) + exp(lam) * w - b

    def E(w):
        r = w - w_t
        return 0.5 * (r * r).sum()

    return F, E


# --------------------------------------------------------------------------------------------
# JAXopt


def jax_problem(name, raw):
    a = {k: jnp.asarray(v) for k, v in raw.items()}
    if name.startswith("ridge"):
        return ridge_defs(a, jnp, jnp.exp)
    return quadratic_defs(a, jnp, jnp.exp, lambda u: jnp.pad(u, 1))


def jax_hypergrad_fn(F, E, rtol, counter=None):
    def solve(matvec, b, **_):
        if counter is not None:
            def counted(u):
                y = matvec(u)
                jax.debug.callback(counter.inc)
                return y
            mv = counted
        else:
            mv = matvec
        return jax_solve_cg(mv, b, tol=rtol, maxiter=1_000_000)

    @jax_custom_root(F, solve=solve)
    def inner(w_init, lam):
        # The inner solution is given: the solver returns it.
        return w_init

    def outer(lam, w_star):
        return E(inner(w_star, lam))

    return jax.jit(jax.grad(outer))


class Counter:
    def __init__(self):
        self.n = 0

    def inc(self, *_):
        self.n += 1


def run_jax(name, raw, reps, rtol):
    F, E = jax_problem(name, raw)
    mus, w_star, ref = raw["mus"], raw["w_star"], raw["reference"]
    lams = [jnp.asarray(math.log(m)) for m in mus]
    ws = [jnp.asarray(w) for w in w_star]
    fn = jax_hypergrad_fn(F, E, rtol)
    fn(lams[0], ws[0]).block_until_ready()  # compile + warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        g = fn(lams[0], ws[0]).block_until_ready()
        times.append(time.perf_counter() - t)
    cold_err = abs(float(g) - ref[0]) / abs(ref[0])
    traj_time, traj_err, grads = 0.0, 0.0, []
    for t_ in range(len(mus)):
        t = time.perf_counter()
        g = fn(lams[t_], ws[t_]).block_until_ready()
        traj_time += time.perf_counter() - t
        traj_err = max(traj_err, abs(float(g) - ref[t_]) / abs(ref[t_]))
    # Operator applications, in a separate (untimed) instrumented run.
    cnt = Counter()
    fc = jax_hypergrad_fn(F, E, rtol, counter=cnt)
    fc(lams[0], ws[0]).block_until_ready()
    jax.effects_barrier()
    cold_apps = cnt.n
    cnt.n = 0
    for t_ in range(len(mus)):
        fc(lams[t_], ws[t_]).block_until_ready()
    jax.effects_barrier()
    traj_apps = cnt.n
    return [
        dict(scenario="cold", method="jaxopt", time=statistics.median(times), applications=cold_apps,
             max_rel_error=cold_err),
        dict(scenario="trajectory", method="jaxopt", time=traj_time, applications=traj_apps,
             max_rel_error=traj_err),
    ]


# --------------------------------------------------------------------------------------------
# torchopt


def torch_problem(name, raw):
    a = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in raw.items()}
    if name.startswith("ridge"):
        return ridge_defs(a, torch, torch.exp)
    return quadratic_defs(a, torch, torch.exp, lambda u: torch.nn.functional.pad(u, (1, 1, 1, 1)))


def run_torch(name, raw, reps, rtol):
    F, E = torch_problem(name, raw)
    mus, w_star, ref = raw["mus"], raw["w_star"], raw["reference"]
    cnt = Counter()
    cg = torchopt.linear_solve.solve_cg(rtol=rtol, maxiter=1_000_000)

    def solve(matvec, b):
        def counted(u):
            cnt.inc()
            return matvec(u)
        return cg(counted, b)

    @torchopt.diff.implicit.custom_root(F, argnums=1, solve=solve)
    def inner(w_init, lam):
        return w_init

    ws = [torch.from_numpy(np.ascontiguousarray(w)) for w in w_star]

    def hypergrad(t_):
        lam = torch.tensor(math.log(mus[t_]), requires_grad=True)
        w = inner(ws[t_], lam)
        (g,) = torch.autograd.grad(E(w), lam)
        return float(g)

    hypergrad(0)  # warm-up
    times, apps = [], []
    for _ in range(reps):
        cnt.n = 0
        t = time.perf_counter()
        g = hypergrad(0)
        times.append(time.perf_counter() - t)
        apps.append(cnt.n)
    cold_err = abs(g - ref[0]) / abs(ref[0])
    traj_time, traj_err = 0.0, 0.0
    cnt.n = 0
    for t_ in range(len(mus)):
        t = time.perf_counter()
        g = hypergrad(t_)
        traj_time += time.perf_counter() - t
        traj_err = max(traj_err, abs(g - ref[t_]) / abs(ref[t_]))
    return [
        dict(scenario="cold", method="torchopt", time=statistics.median(times), applications=apps[-1],
             max_rel_error=cold_err),
        dict(scenario="trajectory", method="torchopt", time=traj_time, applications=cnt.n,
             max_rel_error=traj_err),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--problems", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--targets", default="",
                    help="write 'problem scenario error' lines: the faster anchor's max rel. error")
    args = ap.parse_args()
    names = sorted(d for d in os.listdir(args.data) if os.path.isdir(os.path.join(args.data, d)))
    if args.problems:
        keep = set(args.problems.split(","))
        names = [n for n in names if n in keep]
    out = {"versions": {"jax": jax.__version__, "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads()}, "problems": []}
    for name in names:
        raw = load(os.path.join(args.data, name))
        rows = []
        t0 = time.perf_counter()
        rows += run_jax(name, raw, args.reps, args.rtol)
        rows += run_torch(name, raw, args.reps, args.rtol)
        print(f"{name}: anchors done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for r in rows:
            print(f"  {r['scenario']:<10} {r['method']:<9} {r['time']:9.4f} s {r['applications']:7d} applications"
                  f"  max rel. error {r['max_rel_error']:.2e}", file=sys.stderr)
        out["problems"].append({"name": name, "methods": rows})
    if args.targets:
        with open(args.targets, "w") as f:
            for p in out["problems"]:
                for scenario in ("cold", "trajectory"):
                    rows = [m for m in p["methods"] if m["scenario"] == scenario]
                    best = min(rows, key=lambda m: m["time"])
                    f.write(f"{p['name']} {scenario} {best['max_rel_error']:.6e}\n")
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
