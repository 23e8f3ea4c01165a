"""Several giant steps (Dandi, Krzakala, Loureiro, Pesce, Stephan 2023) as their notebook
(github.com/lucpoisson/GiantStep, multiple_steps.ipynb, `gd_step`) writes the update, in NumPy,
on featlearn's staircase target: an independent check of `configs/paper/giant-steps-cpu.toml`.

Their student: f(x) = p^-1/2 sum_j a_j relu(w_j . x), a_j = +-1 / sqrt(p) fixed, rows of W0 drawn
N(0, I / d); a step on a fresh batch of n samples, W <- W + eta G^T with
G = X^T (p^-1/2 (y - f) a^T * relu'(X W^T)) / n. featlearn's sgd with activation "relu",
second_layer_init "signs", loss "mse", spherical false and lr = eta is the same update (its f
carries 1/p and a_j = +-1), from rows uniform on the sphere instead of N(0, I/d).

Prints, after each step, the mean over seeds of the mean over neurons of cos^2(w_j, u_k) for
each direction of h_1(z_1) + h_1(z_1) h_1(z_2) + h_1(z_1) h_1(z_2) h_1(z_3), as JSON lines:

    python scripts/reference/giant_steps.py --d 256 --p 256 --n 2048 --eta 512 --steps 8 --seeds 16
"""
import argparse
import json

import numpy as np


def run(d, p, n, eta, steps, seed):
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((d, 3)))[0].T  # 3 x d, orthonormal rows
    w = rng.standard_normal((p, d)) / np.sqrt(d)
    a = np.sign(rng.standard_normal(p)) / np.sqrt(p)

    def along(w):
        cos2 = (w @ u.T) ** 2 / np.sum(w * w, axis=1, keepdims=True)
        return cos2.mean(axis=0)

    out = [along(w)]
    for _ in range(steps):
        x = rng.standard_normal((n, d))
        z = x @ u.T
        y = z[:, 0] + z[:, 0] * z[:, 1] + z[:, 0] * z[:, 1] * z[:, 2]
        pre = x @ w.T
        f = np.maximum(pre, 0) @ a / np.sqrt(p)
        g = x.T @ (np.outer(y - f, a) / np.sqrt(p) * (pre > 0)) / n  # d x p
        w = w + eta * g.T
        out.append(along(w))
    return np.array(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--p", type=int, default=256)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--eta", type=float, default=512.0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=16)
    args = ap.parse_args()
    runs = np.array([run(args.d, args.p, args.n, args.eta, args.steps, s) for s in range(args.seeds)])
    mean, se = runs.mean(axis=0), runs.std(axis=0, ddof=1) / np.sqrt(args.seeds)
    for t in range(args.steps + 1):
        print(json.dumps({"batch": args.n, "step": t, "directions": mean[t].round(5).tolist(), "se": se[t].round(5).tolist()}))


if __name__ == "__main__":
    main()
