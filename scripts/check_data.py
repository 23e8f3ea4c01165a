#!/usr/bin/env python3
"""Checks `featlearn data` output in NumPy: shapes, x ~ N(0, I), U orthonormal, E[y^2] ~ 1.

    featlearn data configs/quick.toml --n 100000 --out-x x.npy --out-y y.npy --out-u u.npy
    python3 scripts/check_data.py x.npy y.npy u.npy
"""
import sys

import numpy as np

x, y, u = (np.load(p) for p in sys.argv[1:4])
n, d = x.shape
print(f"x {x.shape} {x.dtype}, y {y.shape}, u {u.shape}")
print("max |mean(x)|      ", np.abs(x.mean(0)).max(), " (Monte Carlo scale", 1 / np.sqrt(n), ")")
print("max |cov(x) - I|   ", np.abs(x.T @ x / n - np.eye(d)).max())
print("max |U U^T - I|    ", np.abs(u @ u.T - np.eye(u.shape[0])).max())
print("E[y^2]             ", (y.astype(np.float64) ** 2).mean(), "(1 for a normalised noiseless target)")
