"""One I-BAU step's second-order work on the CNN, by double backward and in closed form.

Times (median of 40 runs after 5 warm-up runs, batch 100, one thread unless OMP_NUM_THREADS is
set) building Φ's graph and one Jᵀv-style HVP and one cross product (∂_θΦ)ᵀv each way: autograd
double backward (the spec's loop, bench/ibau/torch_ibau.py's default) and the closed form of
plugin/src/piecewise_linear.rs (torch_ibau.py --second-order closed-form), on a random CNN at a
random δ, and prints how far the two agree.

    .venv/bin/python bench/ibau/hvp.py
"""

import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from maxpool import median_ms  # noqa: E402
from torch_ibau import Cnn  # noqa: E402

REG = 1e-3


def main():
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Cnn().eval()
    params = list(model.parameters())
    x0, y0 = torch.rand(100, 1, 28, 28), torch.randint(0, 10, (100,))
    delta = 0.5 * torch.randn(1, 1, 28, 28)
    v = torch.randn(1, 1, 28, 28)

    def autograd_map():
        w = delta.clone().requires_grad_(True)
        inner = -F.cross_entropy(model(x0 + w), y0) + REG * w.square().sum()
        (g,) = torch.autograd.grad(inner, w, create_graph=True)
        return w, g

    def closed_map():
        w = delta.clone().requires_grad_(True)
        logits, record = model.linearised_forward(x0 + w)
        return w, logits, record

    w, g = autograd_map()
    wc, logits, record = closed_map()
    p = torch.softmax(logits.detach(), -1)
    onehot = F.one_hot(y0, 10).to(logits.dtype)

    def hvp_autograd():
        return torch.autograd.grad(g, w, v, retain_graph=True)[0]

    def cross_autograd():
        return torch.autograd.grad(g, params, v, retain_graph=True)

    def hvp_closed():
        with torch.no_grad():
            pt = p * model.tangent(v, record)
            u = -(pt - p * pt.sum(-1, keepdim=True)) / len(y0)
        return torch.autograd.grad(logits, wc, u, retain_graph=True)[0] + 2 * REG * v

    def cross_closed():
        t = model.tangent(v, record)
        s = -((torch.softmax(logits, -1) - onehot) * t).sum() / len(y0)
        return torch.autograd.grad(s, params, retain_graph=True)

    h_err = ((hvp_autograd() - hvp_closed()).norm() / hvp_autograd().norm()).item()
    c_err = max(((a - b).norm() / a.norm()).item() for a, b in zip(cross_autograd(), cross_closed()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 100")
    print(f"agreement (relative, f32): HVP {h_err:.1e}, cross {c_err:.1e}")
    for name, f in [
        ("Φ's graph, double backward (forward + create_graph backward)", autograd_map),
        ("Φ's graph, closed form (forward with masks and indices)", closed_map),
        ("HVP, double backward", hvp_autograd),
        ("HVP, closed form", hvp_closed),
        ("cross product, double backward", cross_autograd),
        ("cross product, closed form", cross_closed),
    ]:
        print(f"{name:62} {median_ms(f):7.2f} ms")


if __name__ == "__main__":
    main()
