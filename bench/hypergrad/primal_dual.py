"""Does a goal-oriented (primal-dual) certificate save CG applications? A dense numpy experiment.

The accuracy-driven variants of the benchmark certify the hypergradient g = c^T v*, H v* = grad_w E,
c = -e^lambda w*, by |c^T (v - v*)| <= ||c|| * B_v / sqrt(lambda_min), with B_v the certified
Gauss-Radau bound on ||v - v*||_H (what `pcg::Params::target_error` does). The primal-dual
alternative solves also H u = c approximately (u_hat) and reports the corrected value
c^T v + u_hat^T (b - H v), whose error is (u - u_hat)^T H (v* - v), so
|error| <= B_u * B_v without ||c|| and without the division by sqrt(lambda_min).

This script builds instances like the benchmark's (ridge with the same low-rank-plus-diagonal
design at d = 1000, and the 5-point Laplacian, kappa = 1e4, on a 40 x 40 grid; numpy's seeded
generator, so a different draw than the Rust example's), runs textbook CG with the Gauss-Radau
recurrence (node (1 - 1e-4) lambda_min, as the core does), and prints, for certified relative
targets, the applications of the primal-only certificate and of the primal-dual one for
several splits (dual solved to eta * ||u||_H, then the primal until B_u * B_v <= target; the
primal-dual count includes one application for the residual of the correction and one
verification per solve).

    bench/.venv-hypergrad/bin/python bench/hypergrad/primal_dual.py    # or any python with numpy
"""

import numpy as np


def ridge(d, seed):
    rng = np.random.default_rng(seed)
    rank, n_low = 64, 2000
    n = n_low + d
    sig = np.sqrt(4.0 / np.arange(1, rank + 1))
    z = np.sqrt(n / n_low) * sig * rng.standard_normal((n_low, rank))
    w_f = rng.standard_normal((d, rank)) / np.sqrt(d)
    c = np.sqrt(n * (1.0 + np.arange(d)) ** -1.5)
    a0 = (w_f @ (z.T @ z) @ w_f.T + np.diag(c * c)) / n
    mu = 1.01 * np.linalg.eigvalsh(a0)[-1] / 999.0
    h = a0 + mu * np.eye(d)
    w_true = rng.standard_normal(d)
    y1 = z @ (w_f.T @ w_true) + 0.5 * rng.standard_normal(n_low)
    y2 = c * w_true + 0.5 * rng.standard_normal(d)
    w = np.linalg.solve(h, (w_f @ (z.T @ y1) + c * y2) / n)
    xv = (sig * rng.standard_normal((500, rank))) @ w_f.T
    yv = xv @ w_true + 0.5 * rng.standard_normal(500)
    return h, mu, xv.T @ (xv @ w - yv) / 500.0, -mu * w


def laplacian(m, kappa, seed):
    rng = np.random.default_rng(seed)
    t = 2 * np.eye(m) - np.eye(m, k=1) - np.eye(m, k=-1)
    lap = np.kron(t, np.eye(m)) + np.kron(np.eye(m), t)
    mu = 8.0 / (kappa - 1.0)
    h = lap + mu * np.eye(m * m)
    b = rng.standard_normal(m * m)
    w = np.linalg.solve(h, b)
    w_t = rng.standard_normal(m * m)
    return h, mu, w - w_t, -mu * w


def cg(h, b, node, lam, stop):
    """Textbook CG from 0 with the Gauss-Radau recurrence; stop(B) with B the H-norm bound
    min(sqrt(gt * rho), ||r|| / sqrt(lam)). Returns (x, applications, B)."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rho = r @ r
    gt = 1.0 / node
    apps = 0
    while True:
        bound = min(np.sqrt(gt * rho), np.sqrt(rho / lam))
        if stop(bound):
            return x, apps, bound
        hp = h @ p
        apps += 1
        gam = rho / (p @ hp)
        x += gam * p
        r -= gam * hp
        rho_new = r @ r
        delta = rho_new / rho
        diff = gt - gam
        gt = diff / (node * diff + delta) if diff > 0 else np.inf
        p = r + delta * p
        rho = rho_new


def main():
    print("| problem | certified rel. target | primal only | primal-dual, dual to eta = 1e-2 / 1e-4 / 1e-6 |")
    print("|---|---:|---:|---|")
    for name, (h, mu, gw, c) in [
        ("ridge d = 1000", ridge(1000, 0)),
        ("Laplacian 40 x 40, kappa = 1e4", laplacian(40, 1e4, 0)),
    ]:
        lam = mu
        node = lam * (1 - 1e-4)
        g = c @ np.linalg.solve(h, gw)
        u_norm = np.sqrt(c @ np.linalg.solve(h, c))
        c_norm = np.linalg.norm(c)
        for rel in (4e-9, 1e-10):
            eps = rel * abs(g)
            x, apps, _ = cg(h, gw, node, lam, lambda bv: c_norm * bv / np.sqrt(lam) <= eps)
            err = abs(c @ x - g) / abs(g)
            cells = []
            for eta in (1e-2, 1e-4, 1e-6):
                u, a_u, b_u = cg(h, c, node, lam, lambda bu: bu <= eta * u_norm)
                v, a_v, b_v = cg(h, gw, node, lam, lambda bv: b_u * bv <= eps)
                corrected = c @ v + u @ (gw - h @ v)
                cells.append(f"{a_u + a_v + 3} ({abs(corrected - g) / abs(g):.1e})")
            print(f"| {name} | {rel:g} | {apps + 1} ({err:.1e}) | {' / '.join(cells)} |")


if __name__ == "__main__":
    main()
