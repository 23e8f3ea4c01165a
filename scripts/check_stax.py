#!/usr/bin/env python3
"""Checks `featlearn gram` against neural-tangents: the NTK and NNGP of
stax.serial(Dense(W_std=s_w, b_std=s_b), Relu(), Dense(W_std=1, b_std=0)) on random inputs, in
f64, for a few (d, s_w, s_b). Prints the largest relative difference per kernel and exits 1 above
1e-10. Needs jax and neural-tangents (e.g. jax 0.4.30 with neural-tangents 0.6.5 in a
virtualenv; later jax releases dropped names neural-tangents imports).

    python3 scripts/check_stax.py [path/to/featlearn]
"""
import os
import subprocess
import sys
import tempfile

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
from neural_tangents import stax  # noqa: E402

binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "featlearn")
rng = np.random.default_rng(0)
worst = 0.0
with tempfile.TemporaryDirectory() as tmp:
    for d, sw, sb in [(8, 1.0, 1.0), (20, 1.5, 0.5), (5, 0.7, 0.0)]:
        x, z = rng.standard_normal((40, d)), 1.3 * rng.standard_normal((30, d))
        xp, zp = os.path.join(tmp, "x.npy"), os.path.join(tmp, "z.npy")
        np.save(xp, x)
        np.save(zp, z)
        _, _, kernel_fn = stax.serial(stax.Dense(1, W_std=sw, b_std=sb), stax.Relu(), stax.Dense(1, W_std=1.0, b_std=0.0))
        reference = kernel_fn(x, z, ("nngp", "ntk"))
        for name, ref in [("nngp", np.asarray(reference.nngp)), ("ntk", np.asarray(reference.ntk))]:
            out = os.path.join(tmp, f"{name}.npy")
            args = [binary, "gram", "--kernel", name, "--x", xp, "--z", zp, "--sw", str(sw), "--sb", str(sb), "--precision", "f64", "--out", out]
            subprocess.run(args, check=True, capture_output=True)
            diff = np.abs(np.load(out) - ref).max() / np.abs(ref).max()
            worst = max(worst, diff)
            print(f"d = {d:2d}, s_w = {sw}, s_b = {sb}, {name}: largest relative difference {diff:.2e}")
sys.exit(0 if worst < 1e-10 else 1)
