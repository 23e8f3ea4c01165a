#!/usr/bin/env bash
# featlearn on a GPU workstation, after installing it: is the GPU the device wgpu uses, do the
# cross-backend tests pass against it, and how fast is it against PyTorch on the same GPU.
#
#   scripts/gpu-check.sh [OUT_DIR]
#
# Runs from a release build. FEATLEARN names the binary (default: the release build under
# CARGO_TARGET_DIR or target/). TEST_BINS names a folder of prebuilt test binaries (made with
# `cargo test --release --workspace --no-run`; cargo prints their paths) for a machine without
# a Rust toolchain; without it, the tests run through `cargo test --release --workspace`.
# Steps:
#   1. featlearn devices             (must list a wgpu adapter that is a GPU, not lavapipe)
#   2. the tests                     (every cross-backend test compares ndarray with the GPU)
#   3. featlearn bench --all-backends --sizes large   (f32, and f64 where the adapter has it)
#   4. scripts/compare.sh large wgpu (PyTorch on CUDA where torch is installed)
#   5. kernel ridge at n = 50,000, exact, timed end to end
# It ends with one table and a verdict line per target (BENCHMARKS.md, GPU section). Everything
# it ran and printed is kept in OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
bin=${FEATLEARN:-${CARGO_TARGET_DIR:-target}/release/featlearn}
if [ ! -x "$bin" ]; then
  echo "no featlearn binary at $bin: build it with 'cargo build --release --workspace' or set FEATLEARN" >&2
  exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
export FEATLEARN_BIN=$bin
step() { echo; echo "== $*"; }

step "1. devices"
"$bin" devices | tee "$out/devices.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/nvidia-smi.txt"

step "2. tests (ndarray against the wgpu device)"
if [ -n "${TEST_BINS:-}" ]; then
  : >"$out/tests.txt"
  for t in "$TEST_BINS"/*; do
    [ -x "$t" ] && [ -f "$t" ] || continue
    echo "-- $(basename "$t")" | tee -a "$out/tests.txt"
    "$t" --test-threads=1 2>&1 | tee -a "$out/tests.txt"
  done
else
  cargo test --release --workspace 2>&1 | tee "$out/tests.txt"
fi

step "3. bench, every backend, large sizes"
"$bin" bench --all-backends --sizes large --repeats 5 --out "$out/bench-f32.json" | tee "$out/bench-f32.txt"
if grep -q "wgpu.*gpu.*f32 and f64" "$out/devices.txt"; then
  "$bin" bench --backend wgpu --precision f64 --sizes large --repeats 3 --cases matmul,ntk_gram,cholesky_solve --out "$out/bench-f64.json" | tee "$out/bench-f64.txt"
fi

step "4. against the references (PyTorch on CUDA where available)"
COMPARE_DIR="$out/compare" FEATLEARN="$bin" scripts/compare.sh large wgpu 5 | tee "$out/compare.txt"

step "5. exact NTK ridge at n = 50,000 (f32, wgpu), end to end"
cat >"$out/krr50k.toml" <<'TOML'
[task]
target = "he2-plus-hep"
d = 32
[data]
n = 50000
n_val = 2000
n_test = 10000
[methods]
list = ["ntk"]
[kernel]
solver = "cholesky"
lambdas = [1e-4, 1e-3]
mem_budget_gb = 30
[report]
plots = false
[run]
seeds = 1
backend = "wgpu"
TOML
start=$(date +%s.%N)
"$bin" run "$out/krr50k.toml" --out "$out/krr50k" --quiet | tee "$out/krr50k.txt"
echo "seconds $(echo "$(date +%s.%N) - $start" | bc)" | tee -a "$out/krr50k.txt"

step "summary"
python3 - "$out" <<'PY'
import json, os, re, sys
out = sys.argv[1]
def load(path):
    try:
        return {(r["backend"], r["case"]): r for r in json.load(open(path))}
    except (OSError, ValueError):
        return {}
ours = load(os.path.join(out, "bench-f32.json"))
ours64 = load(os.path.join(out, "bench-f64.json"))
torch = {c: r for (_, c), r in load(os.path.join(out, "compare", "torch.json")).items()}
ours_cmp = {c: r for (_, c), r in load(os.path.join(out, "compare", "featlearn.json")).items()}
devices = open(os.path.join(out, "devices.txt")).read()
tests = open(os.path.join(out, "tests.txt")).read() if os.path.exists(os.path.join(out, "tests.txt")) else ""
passed = sum(int(m) for m in re.findall(r"(\d+) passed", tests))
failed = sum(int(m) for m in re.findall(r"(\d+) failed", tests))

def t(table, key):
    r = table.get(key)
    return None if r is None else r["median_s"]

print(f"{'case':<20}{'wgpu s':>10}{'GFLOP/s':>10}{'roof':>7}{'torch s':>10}{'ratio':>8}")
for (backend, case), r in sorted(ours.items()):
    if backend != "wgpu":
        continue
    ref = torch.get(case)
    ratio = f"{r['median_s'] / ref['median_s']:.2f}" if ref else "-"
    g = f"{r['gflops']:.0f}" if r.get("gflops") else "-"
    roof = f"{100 * r['roof_fraction']:.0f}%" if r.get("roof_fraction") else "-"
    print(f"{case:<20}{r['median_s']:>10.4f}{g:>10}{roof:>7}{(ref or {}).get('median_s', float('nan')):>10.4f}{ratio:>8}")
for name, table in [("wgpu f64", ours64)]:
    r = table.get(("wgpu", "matmul"))
    if r:
        print(f"roof {name}: {r['gflops']:.0f} GFLOP/s")
for case in ("matmul", "matmul_tf32"):
    if case in torch:
        print(f"roof torch {case}: {torch[case]['gflops']:.0f} GFLOP/s")

def verdict(ok, text):
    print(("PASS " if ok else ("FAIL " if ok is not None else "N/A  ")) + text)

gpu = re.search(r"^wgpu:\d+\s+gpu\s+(.*)$", devices, re.M)
verdict(bool(gpu), f"wgpu runs on a GPU: {gpu.group(1) if gpu else 'no GPU adapter listed'}")
verdict(failed == 0 and passed > 0, f"tests: {passed} passed, {failed} failed")
gram = ours.get(("wgpu", "ntk_gram"))
verdict(None if gram is None else gram["roof_fraction"] >= 0.5,
        f"NTK Gram >= 50% of the wgpu matmul roof: {100 * gram['roof_fraction']:.0f}%" if gram else "NTK Gram: not measured")
for case in ("first_step", "gd_step"):
    a, b = t(ours_cmp, case), t(torch, case)
    verdict(None if a is None or b is None else a <= b,
            f"{case} no slower than PyTorch: {a:.4f} s vs {b:.4f} s" if a and b else f"{case}: no PyTorch reference")
pair = [t(ours_cmp, c) for c in ("ntk_gram", "cholesky_solve")], [t(torch, c) for c in ("ntk_gram", "cholesky_solve")]
if all(pair[0]) and all(pair[1]):
    a, b = sum(pair[0]), sum(pair[1])
    verdict(a <= b, f"Gram + Cholesky (n = 20000) against torch.linalg.cholesky: {a:.3f} s vs {b:.3f} s, ratio {a / b:.2f}")
else:
    verdict(None, "Gram + Cholesky: no PyTorch reference")
krr = open(os.path.join(out, "krr50k.txt")).read() if os.path.exists(os.path.join(out, "krr50k.txt")) else ""
secs = re.search(r"seconds ([0-9.]+)", krr)
res = os.path.join(out, "krr50k", "results.jsonl")
rec = json.loads(open(res).readline()) if os.path.exists(res) else {}
verdict(rec.get("status") == "ok", f"exact NTK ridge at n = 50000: status {rec.get('status')}, test_mse {rec.get('test_mse')}, "
        f"{secs.group(1) if secs else '?'} s end to end")
PY
