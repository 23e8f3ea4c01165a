#!/usr/bin/env python3
"""PyTorch reference for `featlearn bench` (CPU or CUDA): the same work, the same JSON keys.
For comparison only; featlearn does not depend on Python.

    python3 scripts/reference/torch_ref.py --sizes medium --device cuda --out torch.json
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch

SIZES = {
    "small": dict(k=1024, first=(4000, 32, 1000), gram=(2000, 64), sgd=(8, 256, 500)),
    "medium": dict(k=2048, first=(20000, 64, 2000), gram=(8000, 64), sgd=(32, 1024, 1000)),
    "large": dict(k=4096, first=(100000, 64, 4000), gram=(20000, 64), sgd=(1024, 1024, 1000)),
}


def sgd_vectorised(reps, d, steps, dev):
    """Spherical online SGD of a matched single neuron on h_3, correlation loss, b = 1, every
    replica advanced together as (R, d) tensors (the gradient written out, as featlearn does)."""
    eta = 0.5 * d**-1.5
    he3 = lambda t: (t**3 - 3 * t) / math.sqrt(6)
    he3p = lambda t: (3 * t**2 - 3) / math.sqrt(6)
    u = torch.nn.functional.normalize(torch.randn(reps, d, device=dev), dim=1)
    w = torch.nn.functional.normalize(torch.randn(reps, d, device=dev), dim=1)
    for _ in range(steps):
        x = torch.randn(reps, d, device=dev)
        y = he3((u * x).sum(1))
        g = (-y * he3p((w * x).sum(1)))[:, None] * x
        g = g - (g * w).sum(1, keepdim=True) * w
        w = torch.nn.functional.normalize(w - eta * g, dim=1)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(work, repeats, dev):
    work()
    sync(dev)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        work()
        sync(dev)
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times), times[0], times[-1]


def row(case, params, t, work, unit, flops, roof, repeats):
    gflops = None if flops is None else flops / t[0] / 1e9
    return dict(backend="torch", precision="f32", case=case, params=params, repeats=repeats,
                median_s=t[0], min_s=t[1], max_s=t[2], throughput=work / t[0], unit=unit,
                gflops=gflops, roof_fraction=None if gflops is None or roof is None else gflops / roof)


def ntk(x, z):
    d = x.shape[1]
    s = x @ z.T / d + 1
    q = torch.sqrt(torch.outer((x * x).sum(1) / d + 1, (z * z).sum(1) / d + 1))
    cos = torch.clamp(s / q, -1, 1)
    th = torch.arccos(cos)
    return q * (torch.sin(th) + (math.pi - th) * cos) / (2 * math.pi) + s * (math.pi - th) / (2 * math.pi)


def he2_plus_hep(z, p=3):
    """g(z) = (sum_i h_2(z_i) + sqrt(r) h_p(z_1)) / sqrt(2 r), h_k the orthonormal Hermite."""
    r = z.shape[1]
    he = [torch.ones_like(z[:, 0]), z[:, 0]]
    for k in range(1, p):
        he.append(z[:, 0] * he[k] - k * he[k - 1])  # probabilists' He_{k+1}
    h2 = (z * z - 1) / math.sqrt(2.0)
    return (h2.sum(1) + math.sqrt(r) * he[p] / math.sqrt(math.factorial(p))) / math.sqrt(2.0 * r)


def quick_trial(g, dev, method, n, d=16, r=2, m=1000, n_val=1000, n_test=5000,
                lambdas=tuple(10.0 ** k for k in range(-6, 4))):
    """One trial of configs/quick.toml as featlearn runs it (see numpy_ref.quick_trial)."""
    rand = lambda *shape: torch.randn(*shape, generator=g).to(dev)
    u = torch.linalg.qr(rand(d, r))[0].T  # r x d

    def draw(k):
        x = rand(k, d)
        return x, he2_plus_hep(x @ u.T)

    (x, y), (xv, yv) = draw(n), draw(n_val)
    w = rand(m // 2, d)
    w = w / w.norm(dim=1, keepdim=True)
    w = torch.cat([w, w])
    a = torch.sign(rand(m // 2))
    a = torch.cat([a, -a])
    alpha, beta = y.mean(), x.T @ y / n
    resid = lambda xs, ys: ys - alpha - xs @ beta
    yr = resid(x, y)
    if method == "onestep":
        w = w.clone().requires_grad_()
        h = m // 2
        z = x @ w.T
        f = torch.relu(z[:, :h]) @ a[:h] + torch.relu(z[:, h:]) @ a[h:]
        (grad,) = torch.autograd.grad(((f - yr) ** 2).mean() / 2, w)
        w = (grad * (-math.sqrt(m) / grad.norm())).detach()
    b = rand(m)
    phi = torch.relu(x @ w.T + b)
    phi_v = torch.relu(xv @ w.T + b)
    gram = phi.T @ phi / n
    rhs = (phi.T @ yr / n)[:, None]
    best = None
    for lam in sorted(lambdas, reverse=True):
        factor, info = torch.linalg.cholesky_ex(gram + lam * torch.eye(m, device=dev))
        if int(info) != 0:
            continue  # not positive definite in rounding: featlearn skips such a lambda too
        head = torch.cholesky_solve(rhs, factor)[:, 0]
        val = float(((phi_v @ head - resid(xv, yv)) ** 2).mean())
        if best is None or val < best[0]:
            best = (val, head)
    xt, _ = draw(n_test)
    pred = alpha + xt @ beta + torch.relu(xt @ w.T + b) @ best[1]
    test_mse = float(((pred - he2_plus_hep(xt @ u.T)) ** 2).mean())
    alignment = float(((w @ u.T) ** 2).sum() / (w * w).sum())
    return test_mse, alignment


def quick_experiment(dev, seeds=2, ns=(500, 1000, 2000), methods=("onestep", "rf")):
    results = {}
    for seed in range(seeds):
        g = torch.Generator(device="cpu").manual_seed(seed)
        for n in ns:
            for method in methods:
                results.setdefault((method, n), []).append(quick_trial(g, dev, method, n))
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="medium", choices=SIZES)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out")
    a = ap.parse_args()
    dev, s, r = torch.device(a.device), SIZES[a.sizes], a.repeats
    g = torch.Generator(device="cpu").manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g).to(dev)
    out = []
    k = s["k"]
    m1 = rand(k, k)
    t = timed(lambda: m1 @ m1, r, dev)
    roof = 2 * k**3 / t[0] / 1e9
    out.append(row("matmul", f"{k}x{k}x{k}", t, 2 * k**3 / 1e9, "GFLOP/s", 2.0 * k**3, None, r))
    if dev.type == "cuda":
        # the same product with TF32 tensor cores (PyTorch's matmul default is full f32)
        torch.backends.cuda.matmul.allow_tf32 = True
        t = timed(lambda: m1 @ m1, r, dev)
        torch.backends.cuda.matmul.allow_tf32 = False
        out.append(row("matmul_tf32", f"{k}x{k}x{k}, allow_tf32", t, 2 * k**3 / 1e9, "GFLOP/s", 2.0 * k**3, None, r))
    n, d, m = s["first"]
    x, y = rand(n, d), rand(n)
    w = (rand(m, d) / math.sqrt(d)).requires_grad_()
    b = torch.zeros(m, device=dev)
    a_ = torch.sign(rand(m))

    def first_step():
        w.grad = None
        f = torch.relu(x @ w.T + b) @ a_
        (((f - y) ** 2).mean() / 2).backward()

    t = timed(first_step, r, dev)
    out.append(row("first_step", f"n={n} d={d} m={m}", t, n, "samples/s", 6.0 * n * m * d, roof, r))
    params = [rand(m, d).requires_grad_(), torch.zeros(m, device=dev, requires_grad=True), torch.sign(rand(m)).requires_grad_()]
    opt = torch.optim.SGD(params, lr=0.05 * m, momentum=0.9)
    xs, ys = x[:20000], y[:20000]

    def gd_step():
        opt.zero_grad()
        f = torch.relu(xs @ params[0].T / math.sqrt(d) + params[1]) @ params[2] / m
        (((f - ys) ** 2).mean() / 2).backward()
        opt.step()

    t = timed(gd_step, r, dev)
    out.append(row("gd_step", f"n={xs.shape[0]} d={d} m={m}", t, 1, "steps/s", 12.0 * xs.shape[0] * m * d, roof, r))
    reps, sd, steps = s["sgd"]
    t = timed(lambda: sgd_vectorised(reps, sd, steps, dev), r, dev)
    out.append(row("sgd_step", f"R={reps} d={sd} b=1 p=1 h_3, {steps} steps (vectorised over replicas)", t, reps * steps, "replica-steps/s", None, roof, r))
    gn, gd = s["gram"]
    xg = rand(gn, gd)
    holder = {}
    t = timed(lambda: holder.__setitem__("k", ntk(xg, xg)), r, dev)
    out.append(row("ntk_gram", f"n={gn} d={gd}", t, gn * gn, "entries/s", 2.0 * gn * gn * gd, roof, r))
    sys_ = holder["k"] + torch.eye(gn, device=dev) * (gn * 1e-3)
    yg = rand(gn, 1)
    t = timed(lambda: torch.cholesky_solve(yg, torch.linalg.cholesky(sys_)), r, dev)
    out.append(row("cholesky_solve", f"n={gn}", t, 1, "solves/s", gn**3 / 3 + 2 * gn**2, roof, r))
    holder = {}
    reps = 1 if a.sizes == "small" else min(r, 3)
    t = timed(lambda: holder.__setitem__("q", quick_experiment(dev)), reps, dev)
    out.append(row("quick_experiment", "configs/quick.toml, 12 trials", t, 12, "trials/s", None, roof, reps))
    for (method, n), vals in sorted(holder["q"].items()):
        mse = sum(v[0] for v in vals) / len(vals)
        align = sum(v[1] for v in vals) / len(vals)
        print(f"quick {method:<8} n={n:<5} test_mse {mse:.3f}  alignment {align:.2f}", file=sys.stderr)
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
