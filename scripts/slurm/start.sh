#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine (Debian's slurm-wlm + munge), for
# the `slurm`-marked tests: no systemd, no accounting database. Everything it writes lives
# under $1 (default /tmp/leakk-slurm); `scripts/slurm/stop.sh $1` stops every daemon it
# started, by PID. Prints the `export SLURM_CONF=…` line the clients need.
#   sudo apt-get install -y slurm-wlm munge    # once (.ci/run does it)
set -euo pipefail
root=${1:-/tmp/leakk-slurm}
mkdir -p "$root"/{spool/ctld,spool/d,log,run}
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))

# munge: the key comes with the package; the daemon runs as the munge user
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -S /run/munge/munge.socket.2 ]; then
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
fi
cp /run/munge/munged.pid "$root/run/munged.pid"

cat > "$root/slurm.conf" <<CONF
ClusterName=leakk
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# keep finished jobs visible to squeue (the status command without an accounting database)
MinJobAge=600
SlurmctldPidFile=$root/run/slurmctld.pid
SlurmdPidFile=$root/run/slurmd.pid
StateSaveLocation=$root/spool/ctld
SlurmdSpoolDir=$root/spool/d
SlurmctldLogFile=$root/log/slurmctld.log
SlurmdLogFile=$root/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# job steps (srun inside a job) look for the config in the default place, so link it there
mkdir -p /etc/slurm
# (replacing a link an earlier run of this script left behind, even a dangling one)
if [ ! -e /etc/slurm/slurm.conf ] || [[ -L /etc/slurm/slurm.conf && "$(readlink /etc/slurm/slurm.conf)" == *leakk-slurm* ]]; then
  ln -sfn "$root/slurm.conf" /etc/slurm/slurm.conf
else
  echo "warning: /etc/slurm/slurm.conf exists and is not ours; job steps may not find this cluster" >&2
fi
export SLURM_CONF=$root/slurm.conf
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  if sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.5
done
echo "slurm did not come up; logs in $root/log" >&2
sinfo >&2 || true
exit 1
