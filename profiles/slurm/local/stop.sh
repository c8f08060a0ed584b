#!/usr/bin/env bash
# Stop the one-node SLURM that start.sh started, leaving nothing running:
#   sudo profiles/slurm/local/stop.sh
# Needs root (sudo). It cancels the jobs still in the local partition, stops slurmd, slurmctld and (only if
# start.sh started it) munged by their pid files under $SDCONET_SLURM_DIR, waits until those processes are gone,
# and removes the /etc/slurm/slurm.conf symlink that start.sh made. It does not uninstall packages; the state
# directory stays, for its logs. Running it when nothing runs is fine.
set -euo pipefail

D=${SDCONET_SLURM_DIR:-/tmp/sdconet-slurm}
CONF=/etc/slurm/slurm.conf

die() { echo "stop.sh: $*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" = 0 ] || die "needs root: run it with sudo"

# Jobs first: a job's processes (slurmstepd and its children) outlive a killed slurmd.
if alive "$D/run/slurmctld.pid"; then
  partition=$(awk -F'[= ]' '/^PartitionName=/ {print $2}' "$D/slurm.conf")
  if [ -n "$(timeout 10 squeue -h -p "$partition" -t PD,R,CG,S -o %i 2>/dev/null)" ]; then
    timeout 10 scancel -p "$partition" || true
    for _ in $(seq 60); do
      [ -z "$(timeout 10 squeue -h -p "$partition" -t PD,R,CG,S -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
fi

pids=()
for f in "$D/run/slurmd.pid" "$D/run/slurmctld.pid" "$D/munge/munged.pid"; do
  if alive "$f"; then
    pid=$(cat "$f")
    kill -TERM "$pid"
    pids+=("$pid")
  fi
  rm -f "$f"
done
for _ in $(seq 100); do  # each daemon takes about 2 s to exit
  left=()
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
  [ ${#left[@]} -eq 0 ] && break
  sleep 0.2
done
for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done

if [ -L "$CONF" ] && [ "$(readlink "$CONF")" = "$D/slurm.conf" ]; then
  rm -f "$CONF"
fi
echo "SLURM stopped (${#pids[@]} daemon(s)); logs stay in $D/log"
