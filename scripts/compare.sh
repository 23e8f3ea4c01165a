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
# ROUNDS=R (default 1) runs featlearn and the references R times, one after the other in turn,
# so that each round's engines meet the machine in the same minutes: a shared machine's speed
# drifts by 10-40% from one minute to the next, more than some ratios differ from 1. The
# seconds columns are then the median of the R rounds' medians, each ratio the median of the R
# rounds' ratios, and a second table lists every round's ratios (lowest to highest). Round
# r > 1 writes featlearn-r.json, numpy-r.json, torch-r.json.
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
rounds=${ROUNDS:-1}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
  echo "compare.sh: ROUNDS must be a positive whole number, not '$rounds'" >&2
  exit 2
fi
for ref in $references; do
  case $ref in
    numpy|torch) ;;
    *) echo "compare.sh: unknown reference '$ref' (expected numpy or torch)" >&2; exit 2 ;;
  esac
done
for round in $(seq 1 "$rounds"); do
  suffix=$([ "$round" = 1 ] && echo "" || echo "-$round")
  rm -f "$tmp/featlearn$suffix.json" "$tmp/numpy$suffix.json" "$tmp/torch$suffix.json"
  "$bin" bench --backend "$backend" --sizes "$sizes" --repeats "$repeats" --out "$tmp/featlearn$suffix.json" >/dev/null
  for ref in $references; do
    if ! "$python" "scripts/reference/${ref}_ref.py" --sizes "$sizes" --repeats "$repeats" --out "$tmp/$ref$suffix.json" >/dev/null; then
      echo "compare.sh: the $ref reference failed (its error is above)" >&2
      exit 1
    fi
  done
done
"$python" - "$tmp" "$rounds" $references <<'PY'
import json, os, statistics, sys
tmp, rounds, listed = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(name, r):
    path = os.path.join(tmp, name + ("" if r == 1 else f"-{r}") + ".json")
    return {row["case"]: row for row in json.load(open(path))}
# per round: {engine: {case: median seconds}}, the pipeline line added up where both parts ran
pipeline = ("ntk_gram", "cholesky_solve")
runs = []
for r in range(1, rounds + 1):
    tables = {name: {case: row["median_s"] for case, row in load(name, r).items()} for name in ["featlearn", *listed]}
    for table in tables.values():
        if all(c in table for c in pipeline):
            table["gram+cholesky"] = sum(table[c] for c in pipeline)
    runs.append(tables)
# a case a round lacks drops out of every round (the missing check below names it)
common = lambda name: [c for c in runs[0][name] if all(c in run[name] for run in runs)]
ours = {c: statistics.median(run["featlearn"][c] for run in runs) for c in common("featlearn")}
refs = {name: {c: statistics.median(run[name][c] for run in runs) for c in common(name)} for name in listed}
def ratios(case, ref, ref_case):
    """featlearn / reference in each round, lowest first (None where either side lacks the case)."""
    if case not in ours or ref_case not in refs[ref]:
        return None
    return sorted(run["featlearn"][case] / run[ref][ref_case] for run in runs)
# the cases each side must time: a missing one fails the comparison
expected = {
    "featlearn": ["matmul", "first_step", "gd_step", "sgd_step", "ntk_gram", "cholesky_solve", "quick_experiment"],
    "numpy": ["matmul", "first_step", "sgd_step", "sgd_step_loop", "ntk_gram", "cholesky_solve", "quick_experiment"],
    "torch": ["matmul", "first_step", "gd_step", "sgd_step", "ntk_gram", "cholesky_solve", "quick_experiment"],
}
missing = [f"{name}: {case}" for name, table in [("featlearn", ours), *refs.items()] for case in expected[name] if case not in table]
# featlearn's batched sgd beside the NumPy loop over replicas (the same replica-steps)
# (label, featlearn's case, the references' case)
lines = [(case, case, case) for case in ours] + ([("sgd_step vs loop", "sgd_step", "sgd_step_loop")] if "sgd_step" in ours else [])
print(f"{'case':<18}{'featlearn s':>13}" + "".join(f"{k + ' s':>12}{'ratio':>8}" for k in refs))
for label, case, ref_case in lines:
    line = f"{label:<18}{ours[case]:>13.4f}"
    for name, ref in refs.items():
        each = ratios(case, name, ref_case)
        if each:
            line += f"{ref[ref_case]:>12.4f}{statistics.median(each):>8.2f}"
        else:
            line += f"{'-':>12}{'-':>8}"
    print(line)
if rounds > 1:
    print(f"\nevery round's ratio, lowest to highest ({rounds} rounds)")
    print(f"{'case':<18}" + "".join(f"{'/ ' + k:>{6 * rounds + 4}}" for k in refs))
    for label, case, ref_case in lines:
        cells = [ratios(case, name, ref_case) for name in refs]
        print(f"{label:<18}" + "".join(f"{' '.join(f'{x:5.2f}' for x in each) if each else '-':>{6 * rounds + 4}}" for each in cells))
if missing:
    sys.exit("compare.sh: cases missing from the comparison: " + ", ".join(missing))
PY
