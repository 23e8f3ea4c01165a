#!/usr/bin/env bash
# Submits a featlearn sweep to Slurm: N shards as one job array, then a merge job that runs
# once every task has ended, however it ended (afterany), and writes OUTDIR/merged.
#
#   scripts/slurm/submit.sh --shards 16 configs/paper/scaling.toml runs/scaling            # CPU nodes
#   scripts/slurm/submit.sh --shards 16 --gpus 1 --cpus 8 configs/paper/scaling.toml runs/scaling
#
# After a failure, cancel or timeout: `featlearn status runs/scaling/shard-*` shows what is
# missing; resubmit those shards (they resume their folders) with a merge after them:
#   scripts/slurm/submit.sh --shards 16 --only 3,7 configs/paper/scaling.toml runs/scaling
# a shard whose trials failed (exit 3) runs them again, here with a larger memory budget, with
#   scripts/slurm/submit.sh --shards 16 --only 5 configs/paper/scaling.toml runs/scaling -- --retry-failed --mem-budget 64
# or merge again at any time:
#   scripts/slurm/submit.sh --shards 16 --merge-only configs/paper/scaling.toml runs/scaling
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() {
  cat >&2 <<EOF
usage: $0 --shards N [options] CONFIG OUTDIR
  --shards N       split the sweep into N shards, one array task each (required)
  --only LIST      submit only these shards, in Slurm's array syntax (3 or 1,4-6): to rerun them
  --gpus G         GPUs per task (default 0: runs on clusters without GPUs)
  --cpus C         CPUs per task (default 1)
  --mem SIZE       memory per task, as sbatch --mem takes it (default: the cluster's default)
  --time T         time limit per task (default 04:00:00)
  --partition P    partition (default: the cluster's default)
  --backend B      featlearn backend (default: wgpu with --gpus, ndarray without)
  --merge-only     submit only the merge job
  --no-merge       submit only the shards
  -- ARGS...       further options for 'featlearn run' (e.g. --precision f64)
The featlearn binary is \$FEATLEARN, else target/release/featlearn under \$CARGO_TARGET_DIR or
the repository, else featlearn on PATH. Logs go to OUTDIR/logs/.
EOF
  exit 2
}

shards="" only="" gpus=0 cpus=1 mem="" time_limit=04:00:00 partition="" backend="" merge=1 shard_jobs=1
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --shards) shards=${2:?}; shift 2 ;;
    --only) only=${2:?}; shift 2 ;;
    --gpus) gpus=${2:?}; shift 2 ;;
    --cpus) cpus=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    --time) time_limit=${2:?}; shift 2 ;;
    --partition) partition=${2:?}; shift 2 ;;
    --backend) backend=${2:?}; shift 2 ;;
    --merge-only) shard_jobs=0; shift ;;
    --no-merge) merge=0; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || usage
if [ ${#extra[@]} -eq 0 ] && [ $# -gt 2 ]; then usage; fi
config=$1 outdir=$2
case $shards in ''|*[!0-9]*|0) echo "--shards N is required (N >= 1)" >&2; usage ;; esac
case $gpus in *[!0-9]*|'') echo "--gpus takes a count" >&2; usage ;; esac
case $cpus in *[!0-9]*|''|0) echo "--cpus takes a count >= 1" >&2; usage ;; esac
[ -f "$config" ] || { echo "no config file $config" >&2; exit 2; }
[ -n "$only" ] || only="1-$shards"
[ -n "$backend" ] || { [ "$gpus" -gt 0 ] && backend=wgpu || backend=ndarray; }

if [ -z "${FEATLEARN:-}" ]; then
  for candidate in "${CARGO_TARGET_DIR:-$here/../../target}/release/featlearn" "$here/../../target/release/featlearn"; do
    [ -x "$candidate" ] && { FEATLEARN=$candidate; break; }
  done
  FEATLEARN=${FEATLEARN:-$(command -v featlearn || true)}
fi
[ -n "$FEATLEARN" ] && [ -x "$FEATLEARN" ] || { echo "no featlearn binary: build it (cargo build --release) or set FEATLEARN" >&2; exit 2; }
export FEATLEARN=$(realpath "$FEATLEARN")
config=$(realpath "$config")
mkdir -p "$outdir/logs"
outdir=$(realpath "$outdir")

common=(--parsable --chdir="$outdir")
[ -n "$partition" ] && common+=(--partition="$partition")

dependency=()
if [ "$shard_jobs" = 1 ]; then
  resources=(--cpus-per-task="$cpus" --time="$time_limit")
  [ "$gpus" -gt 0 ] && resources+=(--gres="gpu:$gpus")
  [ -n "$mem" ] && resources+=(--mem="$mem")
  array=$(sbatch "${common[@]}" "${resources[@]}" --array="$only" \
    --output="$outdir/logs/shard-%a-of-$shards.log" \
    "$here/shard.sbatch" "$config" "$outdir" "$shards" --backend "$backend" "${extra[@]}")
  array=${array%%;*}
  echo "shards $only of $shards: job array $array (logs in $outdir/logs/)"
  dependency=(--dependency="afterany:$array")
fi
if [ "$merge" = 1 ]; then
  job=$(sbatch "${common[@]}" "${dependency[@]}" --time="$time_limit" \
    --output="$outdir/logs/merge-%j.log" "$here/merge.sbatch" "$outdir" "$shards")
  echo "merge: job ${job%%;*} (into $outdir/merged)"
fi
