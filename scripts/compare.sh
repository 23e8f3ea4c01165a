#!/usr/bin/env bash
# featlearn bench against the NumPy/SciPy and PyTorch references on the same sizes, in one run,
# printed side by side as time ratios (featlearn / reference: below 1 means featlearn is faster).
#
#   scripts/compare.sh [small|medium|large] [ndarray|wgpu] [repeats]
#
# FEATLEARN names the binary (default: the release build); for the CPU targets of BENCHMARKS.md
# build it with `--features blas`. The PyTorch reference runs on CUDA where torch sees a GPU.
# COMPARE_DIR keeps the three JSON files (featlearn.json, numpy.json, torch.json) there. The last line adds up the NTK Gram build and the Cholesky
# solve, the kernel-ridge pipeline the CPU target is stated for.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-medium}
backend=${2:-ndarray}
repeats=${3:-5}
tmp=${COMPARE_DIR:-$(mktemp -d)}
mkdir -p "$tmp"
bin=${FEATLEARN:-${CARGO_TARGET_DIR:-target}/release/featlearn}
"$bin" bench --backend "$backend" --sizes "$sizes" --repeats "$repeats" --out "$tmp/featlearn.json" >/dev/null
python3 scripts/reference/numpy_ref.py --sizes "$sizes" --repeats "$repeats" --out "$tmp/numpy.json" >/dev/null || echo "numpy reference unavailable" >&2
python3 scripts/reference/torch_ref.py --sizes "$sizes" --repeats "$repeats" --out "$tmp/torch.json" >/dev/null || echo "torch reference unavailable" >&2
python3 - "$tmp" <<'PY'
import json, os, sys
tmp = sys.argv[1]
load = lambda n: {r["case"]: r for r in json.load(open(os.path.join(tmp, n)))} if os.path.exists(os.path.join(tmp, n)) else {}
ours, refs = load("featlearn.json"), {"numpy": load("numpy.json"), "torch": load("torch.json")}
pipeline = ("ntk_gram", "cholesky_solve")
for table in [ours, *refs.values()]:
    if all(c in table for c in pipeline):
        table["gram+cholesky"] = {"median_s": sum(table[c]["median_s"] for c in pipeline)}
print(f"{'case':<18}{'featlearn s':>13}" + "".join(f"{k + ' s':>12}{'ratio':>8}" for k in refs))
for case, r in ours.items():
    line = f"{case:<18}{r['median_s']:>13.4f}"
    for ref in refs.values():
        if case in ref:
            line += f"{ref[case]['median_s']:>12.4f}{r['median_s'] / ref[case]['median_s']:>8.2f}"
        else:
            line += f"{'-':>12}{'-':>8}"
    print(line)
PY
