#!/usr/bin/env bash
# Stop the daemons scripts/slurm/start.sh started (by the PIDs it recorded under $1).
root=${1:-/tmp/leakk-slurm}
for name in slurmd slurmctld munged; do
  pidfile=$root/run/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
done
rm -f "$root"/run/*.pid
[ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$root/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
exit 0
