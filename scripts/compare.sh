#!/usr/bin/env bash
# featlearn bench against the NumPy/SciPy and PyTorch references on the same sizes, in one run,
# printed side by side as time ratios (featlearn / reference: below 1 means featlearn is faster).
#
#   scripts/compare.sh [small|medium|large] [ndarray|wgpu] [repeats]
#
# FEATLEARN names the binary (default: the release build); `--features blas` builds the blas
# variant. PYTHON names the interpreter (scripts/reference/setup.sh makes a virtualenv with the
# pinned packages). REFERENCES lists the references to run (default "numpy torch"; CI's smoke
# check runs "numpy"). The PyTorch reference runs on CUDA where torch sees a GPU.
# COMPARE_DIR keeps the JSON files (featlearn.json, numpy.json, torch.json) there. The
# gram+cholesky line adds up the NTK Gram build and the Cholesky solve, the kernel-ridge
# pipeline the CPU target is stated for.
#
# Exits non-zero when featlearn or a listed reference fails, or when a case either of them
# should have timed is missing: a comparison with dashes is a broken comparison. It asserts no
# ratio (speed is for BENCHMARKS.md, not for a check).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-medium}
backend=${2:-ndarray}
repeats=${3:-5}
tmp=${COMPARE_DIR:-$(mktemp -d)}
mkdir -p "$tmp"
bin=${FEATLEARN:-${CARGO_TARGET_DIR:-target}/release/featlearn}
python=${PYTHON:-python3}
references=${REFERENCES:-numpy torch}
rm -f "$tmp"/featlearn.json "$tmp"/numpy.json "$tmp"/torch.json
"$bin" bench --backend "$backend" --sizes "$sizes" --repeats "$repeats" --out "$tmp/featlearn.json" >/dev/null
for ref in $references; do
  case $ref in
    numpy|torch) ;;
    *) echo "compare.sh: unknown reference '$ref' (expected numpy or torch)" >&2; exit 2 ;;
  esac
  if ! "$python" "scripts/reference/${ref}_ref.py" --sizes "$sizes" --repeats "$repeats" --out "$tmp/$ref.json" >/dev/null; then
    echo "compare.sh: the $ref reference failed (its error is above)" >&2
    exit 1
  fi
done
"$python" - "$tmp" $references <<'PY'
import json, os, sys
tmp, listed = sys.argv[1], sys.argv[2:]
load = lambda n: {r["case"]: r for r in json.load(open(os.path.join(tmp, n + ".json")))}
ours = load("featlearn")
refs = {name: load(name) for name in listed}
# the cases each side must time: a missing one fails the comparison
expected = {
    "featlearn": ["matmul", "first_step", "gd_step", "sgd_step", "ntk_gram", "cholesky_solve", "quick_experiment"],
    "numpy": ["matmul", "first_step", "sgd_step", "sgd_step_loop", "ntk_gram", "cholesky_solve", "quick_experiment"],
    "torch": ["matmul", "first_step", "gd_step", "sgd_step", "ntk_gram", "cholesky_solve", "quick_experiment"],
}
missing = [f"{name}: {case}" for name, table in [("featlearn", ours), *refs.items()] for case in expected[name] if case not in table]
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
# featlearn's batched sgd beside the NumPy loop over replicas (the same replica-steps)
if "sgd_step" in ours:
    line = f"{'sgd_step vs loop':<18}{ours['sgd_step']['median_s']:>13.4f}"
    for ref in refs.values():
        if "sgd_step_loop" in ref:
            line += f"{ref['sgd_step_loop']['median_s']:>12.4f}{ours['sgd_step']['median_s'] / ref['sgd_step_loop']['median_s']:>8.2f}"
        else:
            line += f"{'-':>12}{'-':>8}"
    print(line)
if missing:
    sys.exit("compare.sh: cases missing from the comparison: " + ", ".join(missing))
PY
