"""The I-BAU loop in plain PyTorch, written from ../../../shared/ibau-spec.md (sections 3-4) and
the `paper` preset of plugin/src/ibau.rs, for the per-round timing comparison of bench/ibau/run.

Same model (the CNN of plugin/src/models.rs, weights from the safetensors file the Rust CLI
wrote), same data (data/mnist idx files: clean pool = first 5000 test images, evaluation = last
5000), same hyperparameters. The hypergradient is AID-FP as the authors compute it: K fixed-point
steps from v = 0 (the first is v = b), used whatever the map's contraction — the Rust core checks
contraction and falls back to the direct gradient when the iteration diverges, so the two can
differ in work per step; both HVP counts are printed.

By default the loop is the spec's (HVPs by double backward, plain max-pooling): the baseline.
`--second-order closed-form --flush --fast-pool` does what the Rust CLI does for this CNN (the
closed-form operators of plugin/src/piecewise_linear.rs with flushed cotangents, max-pooling
indices from a channels-last copy, the values gathered at them where autograd records), so
that bench/ibau/run can show the Rust/PyTorch ratio of the same algorithm beside the ratio
against the baseline.

Prints one JSON line: per-round seconds (without evaluation), ACC/ASR before and after, HVPs.
"""

import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from maxpool import pool_gathered_with_indices


class Cnn(nn.Module):
    """conv(1→16)-relu-pool, conv(16→32)-relu-pool, fc(1568→128)-relu, fc(128→10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    fast_pool = False

    def pool(self, x):
        """2×2 max-pooling (values, indices). With fast_pool, as plugin/src/models.rs does
        (maxpool.pool_gathered_with_indices: libtorch's NCHW kernel is much slower here)."""
        if not self.fast_pool:
            return F.max_pool2d(x, 2, return_indices=True)
        return pool_gathered_with_indices(x)

    def pool_values(self, x):
        """The pooled values: the spec's plain F.max_pool2d unless fast_pool."""
        return self.pool(x)[0] if self.fast_pool else F.max_pool2d(x, 2)

    def forward(self, x):
        x = self.pool_values(F.relu(self.conv1(x)))
        x = self.pool_values(F.relu(self.conv2(x))).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))

    def linearised_forward(self, x):
        """The logits and what J (the input-Jacobian) needs: ReLU masks, pooling indices."""
        z1 = self.conv1(x)
        p1, i1 = self.pool(F.relu(z1))
        z2 = self.conv2(p1)
        p2, i2 = self.pool(F.relu(z2))
        z3 = self.fc1(p2.flatten(1))
        masks = [(z > 0).to(z.dtype) for z in (z1, z2, z3)]
        return self.fc2(F.relu(z3)), (masks, (i1, i2))

    def tangent(self, v, record):
        """J v at the recorded inputs (history for the weights when grad mode is on)."""
        (m1, m2, m3), (i1, i2) = record

        def pooled(t, idx):
            t = t.flatten(2).expand(idx.shape[0], idx.shape[1], -1)
            return t.gather(2, idx.flatten(2)).view(idx.shape)

        t = pooled(F.conv2d(v, self.conv1.weight, padding=1) * m1, i1)
        t = pooled(F.conv2d(t, self.conv2.weight, padding=1) * m2, i2).flatten(1)
        return F.linear(F.linear(t, self.fc1.weight) * m3, self.fc2.weight)


def read_idx(folder, name):
    path = os.path.join(folder, name)
    if os.path.exists(path):
        raw = open(path, "rb").read()
    else:
        raw = gzip.open(path + ".gz", "rb").read()
    magic = int.from_bytes(raw[:4], "big")
    if magic == 2051:
        n, r, c = (int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in (1, 2, 3))
        return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 1, r, c)
    if magic == 2049:
        return np.frombuffer(raw, np.uint8, offset=8)
    raise ValueError(f"{path}: magic {magic}")


def badnets(images):
    """3×3 white patch at rows/cols 24..27 (plugin/src/attacks.rs)."""
    out = images.clone()
    out[:, :, 24:27, 24:27] = 1.0
    return out


@torch.no_grad()
def evaluate(model, images, labels, target):
    pred = torch.cat([model(images[i : i + 1000]).argmax(-1) for i in range(0, len(images), 1000)])
    acc = (pred == labels).double().mean().item()
    keep = labels != target
    trig = badnets(images[keep])
    pred_t = torch.cat([model(trig[i : i + 1000]).argmax(-1) for i in range(0, len(trig), 1000)])
    asr = (pred_t == target).double().mean().item()
    return acc, asr


def perturbation(model, x_all, cfg):
    delta = torch.zeros(1, 1, 28, 28, requires_grad=True)
    n = len(x_all)
    for i in range(0, n, cfg.batch_size):
        x = x_all[i : i + cfg.batch_size]
        with torch.no_grad():
            pseudo = model(x).argmax(-1)
        loss = -F.cross_entropy(model(x + delta), pseudo) + cfg.reg * delta.square().sum()
        (g,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta -= cfg.inner_lr * g
    return delta.detach()


def unlearn_round(model, opt, x_all, y_all, cfg, stats):
    params = [p for p in model.parameters()]
    delta = perturbation(model, x_all, cfg)
    n = len(x_all)
    b = min(cfg.batch_size, n)
    first_x, first_y = x_all[:b], y_all[:b]
    perm = torch.randperm(n)
    for i in range(0, n, b):
        idx = perm[i : i + b]
        x, y = x_all[idx], y_all[idx]
        k = len(idx)
        n_pert = max(1, int(k * cfg.perturb_fraction))
        chosen = torch.randperm(k)[:n_pert]
        mask = torch.zeros(k)
        mask[chosen] = 1.0
        mask = mask.view(k, 1, 1, 1)
        w = delta.clone().requires_grad_(True)
        outer = F.cross_entropy(model(x + mask * w), y)
        grads = torch.autograd.grad(outer, [w] + params)
        b_vec, g_theta = grads[0], list(grads[1:])
        if cfg.second_order == "autograd":
            inner = -F.cross_entropy(model(first_x + w), first_y) + cfg.reg * w.square().sum()
            (g_w,) = torch.autograd.grad(inner, w, create_graph=True)

            def hvp(v):
                return torch.autograd.grad(g_w, w, v, retain_graph=True)[0]

            def mixed(v):
                return torch.autograd.grad(g_w, params, v)

        else:
            # The closed form of plugin/src/piecewise_linear.rs (the CNN is piecewise linear):
            # ∇²_wwG v = −Jᵀ H(p) J v / B + 2·reg·v, ∇_θ⟨∇_wG, v⟩ = ∇_θ[−⟨p(θ) − e, J(θ) v⟩ / B].
            # With --flush, cotangent entries below 1e-30 are zeroed (FLUSH_BELOW in Rust).
            def flush(t):
                return t * (t.abs() >= 1e-30) if cfg.flush else t

            def softmax_hessian(p, t):
                pt = p * t
                return pt - p * pt.sum(-1, keepdim=True)

            logits, record = model.linearised_forward(first_x + w)
            batch = len(first_y)
            p = flush(torch.softmax(logits.detach(), -1))
            onehot = F.one_hot(first_y, logits.shape[1]).to(logits.dtype)
            residual = flush(-(p - onehot) / batch)

            def hvp(v):
                with torch.no_grad():
                    u = flush(-softmax_hessian(p, model.tangent(v, record)) / batch)
                (jt_u,) = torch.autograd.grad(logits, w, u, retain_graph=True)
                return jt_u + 2 * cfg.reg * v

            def mixed(v):
                t = model.tangent(v, record)
                c = flush(-softmax_hessian(p, t.detach()) / batch)
                s = (logits * c).sum() + (t * residual).sum()
                return torch.autograd.grad(s, params)

        # AID-FP: v1 = b, v_{j+1} = Jᵀ v_j + b with Jᵀv = v − α ∇²_ww G v.
        v = b_vec.clone()
        for _ in range(cfg.fp_steps - 1):
            v = v - cfg.fp_alpha * hvp(v) + b_vec
            stats["hvps"] += 1
        cross = mixed(v)
        stats["hvps"] += 1
        opt.zero_grad()
        for p, g, c in zip(params, g_theta, cross):
            p.grad = g - cfg.fp_alpha * c
        opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="folder with the MNIST idx files")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--outer-lr", type=float, default=1e-3)
    ap.add_argument("--inner-lr", type=float, default=10.0)
    ap.add_argument("--reg", type=float, default=1e-3)
    ap.add_argument("--fp-alpha", type=float, default=0.1)
    ap.add_argument("--fp-steps", type=int, default=5)
    ap.add_argument("--perturb-fraction", type=float, default=0.01)
    ap.add_argument("--target", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flush", action="store_true",
                    help="closed form: zero cotangent entries below 1e-30, as the Rust map does")
    ap.add_argument("--flush-denormal", action="store_true",
                    help="torch.set_flush_denormal(True): the CPU flushes subnormal floats to zero")
    ap.add_argument("--fast-pool", action="store_true",
                    help="max-pooling indices from a channels-last copy, values gathered at "
                    "them where autograd records, as the Rust model does")
    ap.add_argument(
        "--second-order",
        choices=["autograd", "closed-form"],
        default="autograd",
        help="HVPs by double backward (the spec's loop, the baseline) or in the closed form of "
        "plugin/src/piecewise_linear.rs (what the Rust CLI uses for the CNN)",
    )
    cfg = ap.parse_args()
    torch.manual_seed(cfg.seed)
    if cfg.flush_denormal:
        torch.set_flush_denormal(True)
    model = Cnn()
    model.fast_pool = cfg.fast_pool
    model.load_state_dict(load_file(cfg.model))
    model.eval()
    images = torch.from_numpy(read_idx(cfg.data, "t10k-images-idx3-ubyte").copy()).float() / 255.0
    labels = torch.from_numpy(read_idx(cfg.data, "t10k-labels-idx1-ubyte").astype(np.int64))
    clean_x, clean_y = images[: cfg.clean_size], labels[: cfg.clean_size]
    eval_x, eval_y = images[5000:], labels[5000:]
    before = evaluate(model, eval_x, eval_y, cfg.target)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.outer_lr)
    stats = {"hvps": 0}
    seconds = []
    for _ in range(cfg.rounds):
        t = time.perf_counter()
        unlearn_round(model, opt, clean_x, clean_y, cfg, stats)
        seconds.append(time.perf_counter() - t)
    after = evaluate(model, eval_x, eval_y, cfg.target)
    print(
        json.dumps(
            {
                "round_seconds": seconds,
                "acc_before": before[0],
                "asr_before": before[1],
                "acc_after": after[0],
                "asr_after": after[1],
                "hvps": stats["hvps"],
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "second_order": cfg.second_order,
                "flush": cfg.flush,
                "fast_pool": cfg.fast_pool,
                "flush_denormal": cfg.flush_denormal,
            }
        )
    )


if __name__ == "__main__":
    main()
