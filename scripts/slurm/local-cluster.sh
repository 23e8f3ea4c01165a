#!/usr/bin/env bash
# A single-node Slurm cluster on localhost, for trying and testing the sweep scripts.
#
#   scripts/slurm/local-cluster.sh start   # installs slurm-wlm + munge (Debian) if missing, starts them
#   export SLURM_CONF=/tmp/featlearn-slurm/slurm.conf   # start prints this line last
#   scripts/slurm/local-cluster.sh stop    # stops only the daemons that start started
#
# Runs as root (it installs packages and runs slurmd, which starts jobs). No systemd: munged,
# slurmctld and slurmd are started by hand; their PIDs are kept in the state folder
# ($FEATLEARN_SLURM_DIR, default /tmp/featlearn-slurm) and `stop` kills exactly those. The
# configuration is minimal: proctrack/linuxproc, task/none, select/cons_tres, no cgroups,
# accounting off, one partition `local` holding this node with its real CPUs and memory.
set -euo pipefail
dir=${FEATLEARN_SLURM_DIR:-/tmp/featlearn-slurm}
say() { echo "local-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

stop() {
  local name pid
  for name in slurmd slurmctld munged; do
    [ -f "$dir/$name.pid" ] || continue
    pid=$(cat "$dir/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      say "stopped $name (pid $pid)"
    fi
    rm -f "$dir/$name.pid"
  done
}

# Waits until the daemon has written its PID file, then records that PID as ours.
adopt() {
  local name=$1 pidfile=$2
  for _ in $(seq 100); do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      cp "$pidfile" "$dir/$name.pid"
      return 0
    fi
    sleep 0.1
  done
  die "$name did not start; see $dir/$name.log"
}

start() {
  [ "$(id -u)" = 0 ] || die "run as root (installs packages, runs slurmd)"
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  for name in munged slurmctld slurmd; do
    if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
      die "$name is already running from $dir (pid $(cat "$dir/$name.pid")); run '$0 stop' first"
    fi
  done
  # a fresh start: no jobs or node state left from an earlier cluster
  rm -rf "$dir/state" "$dir/spool"
  mkdir -p "$dir/state" "$dir/spool"
  local host node
  host=$(hostname -s)
  # slurmd -C prints this node as slurm.conf wants it (CPUs, sockets, cores, memory)
  node=$(slurmd -C | head -n 1)
  case $node in NodeName=*) ;; *) die "slurmd -C did not describe this node: $node" ;; esac
  cat >"$dir/slurm.conf" <<EOF
# written by featlearn's scripts/slurm/local-cluster.sh
ClusterName=featlearn-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.run.pid
SlurmdPidFile=$dir/slurmd.run.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
$node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$dir/slurm.conf

  # munged refuses root; it runs as the munge user with its socket in /run/munge
  install -d -o munge -g munge -m 0755 /run/munge
  [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall munge)"
  rm -f "$dir/munged.run.pid"
  touch "$dir/munged.run.pid" "$dir/munged.log"
  chown munge:munge "$dir/munged.run.pid" "$dir/munged.log"
  runuser -u munge -- /usr/sbin/munged --pid-file="$dir/munged.run.pid" --log-file="$dir/munged.log" \
    || die "munged did not start; see $dir/munged.log"
  adopt munged "$dir/munged.run.pid"
  munge -n | unmunge >/dev/null || die "munge does not round-trip a credential"

  slurmctld -f "$SLURM_CONF" || die "slurmctld did not start; see $dir/slurmctld.log"
  adopt slurmctld "$dir/slurmctld.run.pid"
  slurmd -f "$SLURM_CONF" || die "slurmd did not start; see $dir/slurmd.log"
  adopt slurmd "$dir/slurmd.run.pid"

  for _ in $(seq 60); do
    if timeout 10 srun --quiet -N1 -n1 hostname >/dev/null 2>&1; then
      say "up: node $host, partition local ($(sinfo -h -o '%c CPUs, %m MB'))"
      echo "export SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    sleep 1
  done
  die "srun hostname did not succeed within a minute; see $dir/slurmctld.log and $dir/slurmd.log"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
