#!/usr/bin/env bash
# End-to-end test of the Slurm workflow on a real (single-node, localhost) Slurm cluster:
#   1. submit tests/slurm/sweep.toml as a job array of 3 shards, with its merge (afterany);
#   2. cancel shard 2 while it runs; the merge still runs and lists shard 2 as incomplete;
#   3. resubmit shard 2 alone (it resumes its folder) with a merge after it;
#   4. check that OUTDIR/merged/results.jsonl holds every trial exactly once, its lines byte
#      for byte those of the shards, equal to an unsharded run of the same config but for
#      fit_seconds (wall-clock time), with report.md and the figures written;
#   5. merge once more and check the merged folder did not change.
#
#   tests/slurm/sweep.sh        # as root; starts scripts/slurm/local-cluster.sh when no Slurm answers
#
# It never skips: if Slurm cannot be started or any check fails, it exits non-zero.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
fail() { echo "slurm test FAILED: $*" >&2; exit 1; }
trap 'echo "slurm test FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/featlearn-target}
if [ -z "${FEATLEARN:-}" ]; then
  cargo build --release -p featlearn-cli
  FEATLEARN=$CARGO_TARGET_DIR/release/featlearn
fi
export FEATLEARN

if ! sinfo >/dev/null 2>&1; then
  trap 'scripts/slurm/local-cluster.sh stop' EXIT
  exports=$(scripts/slurm/local-cluster.sh start) || fail "could not start a local Slurm cluster"
  eval "$exports"
fi
srun --quiet -N1 -n1 true || fail "Slurm is up but srun cannot run a job"

work=$(mktemp -d /tmp/featlearn-slurm-test.XXXXXX)
config=tests/slurm/sweep.toml
out=$work/sweep
shard_dir() { echo "$out/shard-$1-of-3"; }

# Waits (at most $2 seconds) until none of the jobs in $1 (comma-separated) is queued or running.
wait_jobs() {
  local deadline=$((SECONDS + $2))
  while [ -n "$(squeue -h -j "$1" 2>/dev/null)" ]; do
    if [ $SECONDS -ge $deadline ]; then
      squeue; tail -n 20 "$out"/logs/*.log || true
      fail "jobs $1 still queued after $2 s"
    fi
    sleep 1
  done
}
job_of() { sed -n "s/^$1.*job \([0-9]*\).*/\1/p"; }

echo "== submit 3 shards and a merge"
submitted=$(scripts/slurm/submit.sh --shards 3 --time 00:15:00 "$config" "$out")
echo "$submitted"
array=$(echo "$submitted" | sed -n 's/^shards .*job array \([0-9]*\).*/\1/p')
merge1=$(echo "$submitted" | job_of merge)
[ -n "$array" ] && [ -n "$merge1" ] || fail "submit.sh did not report its jobs"

echo "== cancel shard 2 once it has finished a trial and is running the next"
deadline=$((SECONDS + 300))
until [ -s "$(shard_dir 2)/results.jsonl" ]; do
  [ $SECONDS -lt $deadline ] || fail "shard 2 never finished a trial"
  sleep 0.2
done
scancel "${array}_2"
wait_jobs "$array,$merge1" 600
done2=$(wc -l <"$(shard_dir 2)/results.jsonl")
[ "$done2" -lt 4 ] || fail "shard 2 finished all 4 trials before it was cancelled; make its trials slower"
echo "shard 2 was cancelled after $done2 of 4 trials"
sacct_state=$(scontrol show job "${array}_2" 2>/dev/null | sed -n 's/.*JobState=\([A-Z]*\).*/\1/p' || true)
echo "shard 2 state: ${sacct_state:-gone from the controller}"
grep -q "incomplete" "$out"/logs/merge-"$merge1".log || { cat "$out"/logs/merge-"$merge1".log; fail "the first merge did not report the incomplete shard"; }
status=$("$FEATLEARN" status "$out"/shard-*-of-3)
echo "$status"
echo "$status" | grep -Eq "^ +2/3 +$done2/4 +0 +0  incomplete .*/shard-2-of-3$" || fail "status does not show shard 2 incomplete"

echo "== resubmit shard 2 alone, with a merge after it"
submitted=$(scripts/slurm/submit.sh --shards 3 --only 2 --time 00:15:00 "$config" "$out")
echo "$submitted"
array2=$(echo "$submitted" | sed -n 's/^shards .*job array \([0-9]*\).*/\1/p')
merge2=$(echo "$submitted" | job_of merge)
wait_jobs "$array2,$merge2" 600
grep -q "resuming: $done2 trials" "$out/logs/shard-2-of-3.log" || fail "the resubmitted shard 2 did not resume its folder"
status=$("$FEATLEARN" status "$out"/shard-*-of-3)
echo "$status"
[ "$(echo "$status" | grep -Ec '^ +[123]/3 +4/4 +0 +0  complete ')" = 3 ] || fail "not every shard is complete"

echo "== compare with an unsharded run"
# with the shards' thread count (submit.sh's default: 1 CPU per task): the host solves' last
# bits follow the thread count, as any multi-threaded BLAS's do (README, Reproducibility)
RAYON_NUM_THREADS=1 "$FEATLEARN" run "$config" --quiet --backend ndarray --out "$work/whole" >/dev/null
merged=$out/merged/results.jsonl
[ "$(wc -l <"$merged")" = 12 ] || fail "merged results hold $(wc -l <"$merged") lines, not 12"
strip() { sed -E 's/"fit_seconds":[^,]*,//' "$1"; }
diff <(strip "$work/whole/results.jsonl") <(strip "$merged") || fail "merged results differ from the unsharded run"
cat "$out"/shard-*-of-3/results.jsonl >"$work/shard-lines"
if grep -vxF -f "$work/shard-lines" "$merged"; then fail "the lines above are not byte-identical copies of shard records"; fi
[ -s "$out/merged/report.md" ] || fail "no report.md"
ls "$out"/merged/*.png >/dev/null 2>&1 || fail "no figures"
[ -s "$out/merged/summary.csv" ] || fail "no summary.csv"

echo "== merge again: nothing changes"
before=$(cd "$out/merged" && sha256sum results.jsonl curves.jsonl summary.csv config.toml)
submitted=$(scripts/slurm/submit.sh --shards 3 --merge-only "$config" "$out")
merge3=$(echo "$submitted" | job_of merge)
wait_jobs "$merge3" 120
after=$(cd "$out/merged" && sha256sum results.jsonl curves.jsonl summary.csv config.toml)
[ "$before" = "$after" ] || fail "a second merge changed the merged folder"
grep -q "merged 12 of 12 trials" "$out/logs/merge-$merge3.log" || fail "the second merge did not merge 12 of 12"

rm -rf "$work"
echo "slurm test passed"
