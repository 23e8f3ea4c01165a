#!/usr/bin/env python3
"""NumPy/SciPy reference for `featlearn bench`: the same work on the same sizes, the same JSON
keys. For comparison only; featlearn does not depend on Python.

    python3 scripts/reference/numpy_ref.py --sizes medium --out numpy.json
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np
import scipy.linalg

SIZES = {
    "small": dict(k=1024, first=(4000, 32, 1000), gram=(2000, 64), sgd=(8, 256, 500)),
    "medium": dict(k=2048, first=(20000, 64, 2000), gram=(8000, 64), sgd=(32, 1024, 1000)),
    "large": dict(k=4096, first=(100000, 64, 4000), gram=(20000, 64), sgd=(1024, 1024, 1000)),
}


def he3(t):
    return (t**3 - 3 * t) / np.sqrt(6)


def he3_prime(t):
    return (3 * t**2 - 3) / np.sqrt(6)


def sgd_loop(reps, d, steps, rng):
    """Spherical online SGD of a matched single neuron on h_3, correlation loss, b = 1, one
    replica at a time: the loop the field's scripts run."""
    eta = 0.5 * d**-1.5
    for _ in range(reps):
        u = rng.standard_normal(d)
        u /= np.linalg.norm(u)
        w = rng.standard_normal(d)
        w /= np.linalg.norm(w)
        for _ in range(steps):
            x = rng.standard_normal(d)
            y = he3(u @ x)
            g = -y * he3_prime(w @ x) * x
            g -= (g @ w) * w
            w = w - eta * g
            w /= np.linalg.norm(w)


def sgd_vectorised(reps, d, steps, rng):
    """The same, every replica advanced together as (R, d) arrays."""
    eta = 0.5 * d**-1.5
    u = rng.standard_normal((reps, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = rng.standard_normal((reps, d))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    for _ in range(steps):
        x = rng.standard_normal((reps, d))
        y = he3(np.einsum("rd,rd->r", u, x))
        g = (-y * he3_prime(np.einsum("rd,rd->r", w, x)))[:, None] * x
        g -= np.einsum("rd,rd->r", g, w)[:, None] * w
        w = w - eta * g
        w /= np.linalg.norm(w, axis=1, keepdims=True)


def timed(work, repeats):
    work()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        work()
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times), times[0], times[-1]


def row(case, params, t, work, unit, flops, roof, repeats):
    gflops = None if flops is None else flops / t[0] / 1e9
    return dict(backend="numpy", precision="f32", case=case, params=params, repeats=repeats,
                median_s=t[0], min_s=t[1], max_s=t[2], throughput=work / t[0], unit=unit,
                gflops=gflops, roof_fraction=None if gflops is None or roof is None else gflops / roof)


def ntk(x, z, sw=1.0, sb=1.0):
    d = x.shape[1]
    s = sw * sw * (x @ z.T) / d + sb * sb
    sx = sw * sw * (x * x).sum(1) / d + sb * sb
    sz = sw * sw * (z * z).sum(1) / d + sb * sb
    q = np.sqrt(np.outer(sx, sz))
    cos = np.clip(s / q, -1.0, 1.0)
    th = np.arccos(cos)
    nngp = q * (np.sin(th) + (np.pi - th) * cos) / (2 * np.pi)
    return nngp + s * (np.pi - th) / (2 * np.pi)


def he2_plus_hep(z, p=3):
    """g(z) = (sum_i h_2(z_i) + sqrt(r) h_p(z_1)) / sqrt(2 r), h_k the orthonormal Hermite."""
    r = z.shape[1]
    he = [np.ones_like(z[:, :1]), z[:, :1]]
    for k in range(1, p):
        he.append(z[:, :1] * he[k] - k * he[k - 1])  # probabilists' He_{k+1}
    h2 = (z * z - 1) / np.sqrt(2.0)
    hp = he[p][:, 0] / np.sqrt(float(np.prod(np.arange(1, p + 1))))
    return (h2.sum(1) + np.sqrt(r) * hp) / np.sqrt(2.0 * r)


def quick_trial(rng, method, n, d=16, r=2, m=1000, n_val=1000, n_test=5000,
                lambdas=tuple(10.0 ** k for k in range(-6, 4))):
    """One trial of configs/quick.toml as featlearn runs it: data, Algorithm 1 (onestep) or random
    features (rf), the ridge head by Cholesky over the grid, test MSE and subspace alignment."""
    u = np.linalg.qr(rng.standard_normal((d, r)))[0].T.astype(np.float32)  # r x d, orthonormal rows

    def draw(k):
        x = rng.standard_normal((k, d), dtype=np.float32)
        return x, he2_plus_hep(x @ u.T).astype(np.float32)

    (x, y), (xv, yv) = draw(n), draw(n_val)
    w = rng.standard_normal((m // 2, d), dtype=np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    w = np.vstack([w, w])
    a = np.sign(rng.standard_normal(m // 2)).astype(np.float32)
    a = np.concatenate([a, -a])
    alpha, beta = y.mean(), x.T @ y / n
    resid = lambda xs, ys: ys - alpha - xs @ beta
    yr = resid(x, y)
    if method == "onestep":
        z = x @ w.T
        f = np.maximum(z[:, : m // 2], 0) @ a[: m // 2] + np.maximum(z[:, m // 2 :], 0) @ a[m // 2 :]
        grad = ((z > 0) * (f - yr)[:, None]).T @ x * a[:, None] / n
        w = grad * (-np.sqrt(m) / np.linalg.norm(grad))
    b = rng.standard_normal(m).astype(np.float32)
    phi = np.maximum(x @ w.T + b, 0)
    phi_v = np.maximum(xv @ w.T + b, 0)
    g = phi.T @ phi / n
    rhs = phi.T @ yr / n
    best = None
    for lam in sorted(lambdas, reverse=True):
        try:
            factor = scipy.linalg.cho_factor(g + lam * np.eye(m, dtype=np.float32), lower=True)
        except np.linalg.LinAlgError:
            continue  # not positive definite in rounding: featlearn skips such a lambda too
        head = scipy.linalg.cho_solve(factor, rhs)
        val = float(np.mean((phi_v @ head - resid(xv, yv)) ** 2))
        if best is None or val < best[0]:
            best = (val, head)
    xt, _ = draw(n_test)
    pred = alpha + xt @ beta + np.maximum(xt @ w.T + b, 0) @ best[1]
    test_mse = float(np.mean((pred - he2_plus_hep(xt @ u.T)) ** 2))
    alignment = float(np.sum((w @ u.T) ** 2) / np.sum(w * w))
    return test_mse, alignment


def quick_experiment(seeds=2, ns=(500, 1000, 2000), methods=("onestep", "rf")):
    results = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        for n in ns:
            for method in methods:
                results.setdefault((method, n), []).append(quick_trial(rng, method, n))
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="medium", choices=SIZES)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out")
    a = ap.parse_args()
    s, r, rng = SIZES[a.sizes], a.repeats, np.random.default_rng(0)
    out = []
    k = s["k"]
    m1 = rng.standard_normal((k, k), dtype=np.float32)
    t = timed(lambda: m1 @ m1, r)
    roof = 2 * k**3 / t[0] / 1e9
    out.append(row("matmul", f"{k}x{k}x{k}", t, 2 * k**3 / 1e9, "GFLOP/s", 2.0 * k**3, None, r))
    n, d, m = s["first"]
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = rng.standard_normal(n, dtype=np.float32)
    w = rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
    a_ = np.sign(rng.standard_normal(m)).astype(np.float32)

    def first_step():
        z = x @ w.T
        f = np.maximum(z, 0) @ a_
        g = ((z > 0) * (f - y)[:, None]).T @ x
        return g * a_[:, None] / n

    t = timed(first_step, r)
    out.append(row("first_step", f"n={n} d={d} m={m}", t, n, "samples/s", 6.0 * n * m * d, roof, r))
    reps, sd, steps = s["sgd"]
    params = f"R={reps} d={sd} b=1 p=1 h_3, {steps} steps"
    t = timed(lambda: sgd_vectorised(reps, sd, steps, rng), r)
    out.append(row("sgd_step", params + " (vectorised over replicas)", t, reps * steps, "replica-steps/s", None, roof, r))
    # the loop over replicas: fewer replicas timed, scaled to the same work
    loop_reps = max(1, reps // 8)
    t = timed(lambda: sgd_loop(loop_reps, sd, steps, rng), 1)
    t = tuple(v * reps / loop_reps for v in t)
    out.append(row("sgd_step_loop", params + f" (one replica at a time; {loop_reps} timed, scaled to {reps})", t, reps * steps, "replica-steps/s", None, roof, 1))
    gn, gd = s["gram"]
    xg = rng.standard_normal((gn, gd), dtype=np.float32)
    holder = {}
    t = timed(lambda: holder.__setitem__("k", ntk(xg, xg)), r)
    out.append(row("ntk_gram", f"n={gn} d={gd}", t, gn * gn, "entries/s", 2.0 * gn * gn * gd, roof, r))
    sys_ = holder["k"] + np.eye(gn, dtype=np.float32) * (gn * 1e-3)
    yg = rng.standard_normal(gn, dtype=np.float32)
    t = timed(lambda: scipy.linalg.cho_solve(scipy.linalg.cho_factor(sys_, lower=True), yg), r)
    out.append(row("cholesky_solve", f"n={gn}", t, 1, "solves/s", gn**3 / 3 + 2 * gn**2, roof, r))
    holder = {}
    reps = 1 if a.sizes == "small" else min(r, 3)
    t = timed(lambda: holder.__setitem__("q", quick_experiment()), reps)
    out.append(row("quick_experiment", "configs/quick.toml, 12 trials", t, 12, "trials/s", None, roof, reps))
    for (method, n), vals in sorted(holder["q"].items()):
        mse = np.mean([v[0] for v in vals])
        align = np.mean([v[1] for v in vals])
        print(f"quick {method:<8} n={n:<5} test_mse {mse:.3f}  alignment {align:.2f}", file=sys.stderr)
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
