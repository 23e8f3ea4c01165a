#!/usr/bin/env python3
"""PyTorch reference for `featlearn bench` (CPU or CUDA): the same work, the same JSON keys.
For comparison only; featlearn does not depend on Python.

    python3 scripts/reference/torch_ref.py --sizes medium --device cuda --out torch.json
"""
import argparse
import json
import math
import statistics
import time

import torch

SIZES = {
    "small": dict(k=1024, first=(4000, 32, 1000), gram=(2000, 64)),
    "medium": dict(k=2048, first=(20000, 64, 2000), gram=(8000, 64)),
    "large": dict(k=4096, first=(100000, 64, 4000), gram=(20000, 64)),
}


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
    gn, gd = s["gram"]
    xg = rand(gn, gd)
    holder = {}
    t = timed(lambda: holder.__setitem__("k", ntk(xg, xg)), r, dev)
    out.append(row("ntk_gram", f"n={gn} d={gd}", t, gn * gn, "entries/s", 2.0 * gn * gn * gd, roof, r))
    sys_ = holder["k"] + torch.eye(gn, device=dev) * (gn * 1e-3)
    yg = rand(gn, 1)
    t = timed(lambda: torch.cholesky_solve(yg, torch.linalg.cholesky(sys_)), r, dev)
    out.append(row("cholesky_solve", f"n={gn}", t, 1, "solves/s", gn**3 / 3 + 2 * gn**2, roof, r))
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
