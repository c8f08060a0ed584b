#!/usr/bin/env bash
# Start a one-node SLURM on this machine (controller and compute node both local), so profiles/slurm can be tried
# on a laptop or in CI (docs/cluster.md):
#   sudo profiles/slurm/local/start.sh
#   snakemake --profile profiles/slurm --jobs 2 <targets>
#   sudo profiles/slurm/local/stop.sh
#
# Needs root (sudo) and a Debian/Ubuntu system. It works without systemd and without an accounting database.
# It changes the machine as follows:
#   - It apt-installs slurmctld, slurmd, slurm-client and munge if they are missing. The packages stay installed.
#   - It makes /etc/slurm/slurm.conf a symlink to $SDCONET_SLURM_DIR/slurm.conf. If that file exists and was not
#     written by this script, it stops with an error rather than touch it. stop.sh removes the symlink.
#   - It starts munged (as user munge) if no munge daemon answers yet, then slurmctld and slurmd (as root).
#     Their logs, pid files and spool go under $SDCONET_SLURM_DIR.
#   - The node offers $SDCONET_SLURM_CPUS CPUs (default: the machine's, but at least 16; SlurmdParameters=
#     config_overrides), so that the profile's CPU requests for GPU jobs (cpus_per_task: 4) schedule on a small
#     machine, a few at a time. Jobs then share the real cores; snakemake's --jobs bounds how many run at once.
#   - It declares $SDCONET_SLURM_GPUS placeholder GPUs (GRES gpu whose device files are copies of /dev/null under
#     $SDCONET_SLURM_DIR/gpu) so that the profile's GPU requests schedule. Jobs get no real GPU from it: the demo
#     configs run on the CPU.
# Memory requests are real limits: jobacct_gather/linux with OverMemoryKill samples each job every
# $SDCONET_SLURM_MEM_POLL s and kills a job step over its --mem. Works without cgroups; measured in docs/cluster.md.
# Time limits are enforced by slurmctld, which checks about every 30 s.
# It is idempotent: when the node already answers, it only prints its state.
set -euo pipefail

D=${SDCONET_SLURM_DIR:-/tmp/sdconet-slurm}
NPROC=$(nproc)
CPUS=${SDCONET_SLURM_CPUS:-$(( NPROC > 16 ? NPROC : 16 ))}
GPUS=${SDCONET_SLURM_GPUS:-2}
RESERVE_MB=${SDCONET_SLURM_RESERVE_MB:-2048}   # memory left to the OS and the snakemake main process
MEM_POLL=${SDCONET_SLURM_MEM_POLL:-1}
PARTITION=${SDCONET_SLURM_PARTITION:-local}
CONF=/etc/slurm/slurm.conf
MARK="# written by sdconet-bench profiles/slurm/local/start.sh"

die() { echo "start.sh: $*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
node_state() { timeout 10 sinfo -h -N -o %t 2>/dev/null | head -1; }

[ "$(id -u)" = 0 ] || die "needs root: run it with sudo"

# 1. packages
missing=()
for pair in slurmctld:/usr/sbin/slurmctld slurmd:/usr/sbin/slurmd slurm-client:/usr/bin/sbatch munge:/usr/sbin/munged; do
  [ -x "${pair#*:}" ] || missing+=("${pair%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install SLURM 22.05+ and munge yourself"
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # The Debian postinst tries to start the daemons; without systemd, policy-rc.d refuses, which is harmless.
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. already up?
if alive "$D/run/slurmctld.pid" && alive "$D/run/slurmd.pid"; then
  state=$(node_state || true)
  case "$state" in
    idle*|mix*|alloc*) echo "SLURM already running (node $state, state in $D)"; exit 0 ;;
  esac
fi

# 3. configuration
# ours: a file with our mark, or a symlink to one (or a dangling symlink, left by an earlier state dir in /tmp)
if { [ -e "$CONF" ] || [ -L "$CONF" ]; } && ! grep -qF "$MARK" "$CONF" 2>/dev/null \
    && ! { [ -L "$CONF" ] && [ ! -e "$CONF" ]; }; then
  die "$CONF exists and was not written by this script; this machine has its own SLURM (use it, or move the file)"
fi
mkdir -p "$D"/{ctld,spool,log,run,munge} /etc/slurm
HOST=$(hostname -s)
OVERRIDES=""
[ "$CPUS" -le "$NPROC" ] || OVERRIDES="SlurmdParameters=config_overrides"   # offer more CPUs than the machine has
MEM=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - RESERVE_MB ))
[ "$MEM" -ge 1024 ] || MEM=1024
GRES_TYPES="" NODE_GRES=""
if [ "$GPUS" -gt 0 ]; then GRES_TYPES="GresTypes=gpu" NODE_GRES="Gres=gpu:$GPUS"; fi
cat > "$D/slurm.conf" <<CONF
$MARK
ClusterName=sdconet
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$D/ctld
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Memory limits without cgroups: sample every job's processes and kill a step over its memory request.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=$MEM_POLL
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# squeue reports a finished job for MinJobAge s: the profile's status command (squeue) needs it.
MinJobAge=300
KillWait=5
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
$OVERRIDES
$GRES_TYPES
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM $NODE_GRES State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
rm -rf "$D/gpu" "$D/gres.conf"
if [ "$GPUS" -gt 0 ]; then
  # Slurm 22.05 drops a GPU without a device file, so each placeholder is a character device node that is a copy
  # of /dev/null (major 1, minor 3). Nothing is bound to it: TaskPlugin=task/none constrains no devices.
  mkdir -p "$D/gpu"
  for i in $(seq 0 $((GPUS - 1))); do mknod "$D/gpu/placeholder$i" c 1 3; done
  echo "NodeName=$HOST Name=gpu File=$D/gpu/placeholder[0-$((GPUS - 1))]" > "$D/gres.conf"
fi
ln -sfn "$D/slurm.conf" "$CONF"
export SLURM_CONF="$D/slurm.conf"   # the daemons read gres.conf beside it

# 4. munge: use a running daemon, else start one (and remember it in $D/munge/munged.pid for stop.sh)
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || die "cannot create /etc/munge/munge.key"; }
  chown munge:munge /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge "$D/munge"
  runuser -u munge -- /usr/sbin/munged --force --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log"
  for _ in $(seq 50); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.1; done
  (munge -n | unmunge) >/dev/null 2>&1 || die "munged did not start; see $D/munge/munged.log"
fi

# 5. slurm daemons (each daemonizes and writes its pid file). A fresh controller starts from empty state: jobs and
#    node states of an earlier start (stop.sh cancelled its jobs) are not recovered.
alive "$D/run/slurmctld.pid" || rm -rf "${D:?}/ctld/"*
alive "$D/run/slurmctld.pid" || /usr/sbin/slurmctld -f "$D/slurm.conf" \
  || die "slurmctld did not start; see $D/log/slurmctld.log"
alive "$D/run/slurmd.pid" || /usr/sbin/slurmd -f "$D/slurm.conf" \
  || die "slurmd did not start; see $D/log/slurmd.log"

# 6. wait until the node takes jobs
for i in $(seq 120); do
  state=$(node_state || true)
  case "$state" in
    idle*|mix*|alloc*) echo "SLURM up: node $HOST ($CPUS CPUs on $NPROC cores, ${MEM} MB, $GPUS placeholder GPUs) in partition" \
                         "$PARTITION is $state; state in $D"; exit 0 ;;
    inval*|drain*|down*) reason=$(timeout 10 sinfo -h -N -o %E 2>/dev/null | head -1)
                         [ "$i" -lt 10 ] || die "node $HOST is $state: $reason; logs in $D/log" ;;
  esac
  sleep 0.5
done
tail -n 5 "$D/log/slurmctld.log" "$D/log/slurmd.log" >&2 || true
die "the node did not become idle in 60 s (state: ${state:-none}); logs in $D/log"
