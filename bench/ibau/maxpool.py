"""Why plugin/src/models.rs max-pools on a channels-last copy.

Times libtorch's 2×2 max-pooling on the CNN's two activation shapes (batch 100) with contiguous
(NCHW) and channels-last inputs, and the CNN's forward pass (no grad) and forward + backward
(grad mode) with plain pooling, with pooling on a channels-last copy (autograd recording
through the copy), and as plugin/src/models.rs pools: the indices from a channels-last copy
without autograd history, the values gathered from the NCHW input at them where autograd
records. One thread unless OMP_NUM_THREADS says otherwise. The pooling rows are medians of 40
runs after 5 warm-up runs; the CNN rows run the variants in turn, 30 times 5 runs each, and
print the fastest and the median of the 30 (this VM's speed drifts by up to 2× within a minute,
and alternating spreads that drift over all variants).

    .venv/bin/python bench/ibau/maxpool.py
"""

import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def median_ms(f, n=40):
    for _ in range(5):
        f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[n // 2] * 1e3


def channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


def pool_plain(x):
    return F.max_pool2d(x, 2)


def pool_channels_last(x):
    return F.max_pool2d(channels_last(x), 2).contiguous()


def pool_gathered_with_indices(x):
    """2×2 max-pooling as plugin/src/models.rs does it on the CPU (values, indices): the indices
    from libtorch's channels-last kernel on a copy without autograd history, and with autograd
    history the values gathered from the NCHW input at them (so the backward pass stays NCHW).
    Also used by torch_ibau.py --fast-pool."""
    with torch.no_grad():
        v, i = F.max_pool2d(channels_last(x.detach()), 2, return_indices=True)
        v, i = v.contiguous(), i.contiguous()
    if x.requires_grad:
        v = x.flatten(2).gather(2, i.flatten(2)).view(i.shape)
    return v, i


def pool_gathered(x):
    return pool_gathered_with_indices(x)[0]


def main():
    if "OMP_NUM_THREADS" not in __import__("os").environ:
        torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for shape in [(100, 16, 28, 28), (100, 32, 14, 14)]:
        x = torch.randn(*shape).relu()
        xc = channels_last(x)
        print(f"max_pool2d {shape}: NCHW {median_ms(lambda: F.max_pool2d(x, 2)):.2f} ms, "
              f"NCHW with indices {median_ms(lambda: F.max_pool2d(x, 2, return_indices=True)):.2f} ms, "
              f"channels-last {median_ms(lambda: F.max_pool2d(xc, 2)):.2f} ms, "
              f"the channels-last copy {median_ms(lambda: channels_last(x)):.2f} ms")
        xg = x.clone().requires_grad_(True)
        g = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2)
        for name, pool in [("NCHW", pool_plain), ("gathered", pool_gathered)]:
            both = median_ms(lambda: torch.autograd.grad(pool(xg), xg, g))
            print(f"  with autograd history, pooling + its backward pass, {name:8}: {both:.2f} ms")
    conv1, conv2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
    fc1, fc2 = nn.Linear(1568, 128), nn.Linear(128, 10)
    params = [p for m in (conv1, conv2, fc1, fc2) for p in m.parameters()]

    def net(x, pool):
        x = pool(F.relu(conv1(x)))
        x = pool(F.relu(conv2(x))).flatten(1)
        return fc2(F.relu(fc1(x)))

    x = torch.rand(100, 1, 28, 28)
    y = torch.randint(0, 10, (100,))
    with torch.no_grad():
        same = torch.equal(net(x, pool_plain), net(x, pool_channels_last))
        same = same and torch.equal(net(x, pool_plain), net(x, pool_gathered))
    # With autograd history (the gathered path): the same logits and the same gradients.
    d0 = torch.zeros(1, 1, 28, 28, requires_grad=True)
    plain = net(x + d0, pool_plain)
    gathered = net(x + d0, pool_gathered)
    same = same and torch.equal(plain, gathered)
    grads = [torch.autograd.grad(F.cross_entropy(out, y), [d0] + params) for out in (plain, gathered)]
    same = same and all(torch.equal(a, b) for a, b in zip(*grads))
    pools = {"plain pooling": pool_plain, "channels-last pooling": pool_channels_last,
             "gathered pooling": pool_gathered}
    d = torch.zeros(1, 1, 28, 28, requires_grad=True)

    def forward(pool):
        with torch.no_grad():
            net(x, pool)

    def both(pool):
        torch.autograd.grad(F.cross_entropy(net(x + d, pool), y), [d] + params)

    times = {(name, f.__name__): [] for name in pools for f in (forward, both)}
    for _ in range(30):
        for name, pool in pools.items():
            for f in (forward, both):
                t = time.perf_counter()
                for _ in range(5):
                    f(pool)
                times[(name, f.__name__)].append((time.perf_counter() - t) / 5 * 1e3)
    for name in pools:
        fwd, fb = sorted(times[(name, "forward")]), sorted(times[(name, "both")])
        fwd_median, fb_median = (fwd[14] + fwd[15]) / 2, (fb[14] + fb[15]) / 2
        print(f"CNN, {name:22}: forward without grad {fwd[0]:6.2f} ms (median {fwd_median:6.2f}), "
              f"forward + backward {fb[0]:6.2f} ms (median {fb_median:6.2f})")
    print(f"identical logits (and, with autograd history, gradients): {same}")


if __name__ == "__main__":
    main()
