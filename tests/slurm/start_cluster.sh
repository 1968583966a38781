#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the real SLURM run in tests/test_workflow.py.
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge when missing, writes a slurm.conf for this host's own
# CPUs and memory (`slurmd -C`), and starts munged, slurmctld and slurmd as plain daemons (containers have no
# systemd). Idempotent: it returns at once when `sinfo` already sees an available node, and only writes
# /etc/slurm/slurm.conf when there is none or the one there is its own. Needs root. Exits non-zero, saying why,
# when the cluster does not come up; the test then skips with that reason.
set -euo pipefail

MARK="# written by gradbrain tests/slurm/start_cluster.sh"
CONF=/etc/slurm/slurm.conf

node_up() {
    local state
    state=$(timeout 10 sinfo --noheader --format=%t 2>/dev/null | head -n1) || return 1
    [[ "$state" =~ ^(idle|mix|alloc|comp) ]]
}

if command -v sinfo >/dev/null && node_up; then
    echo "SLURM is up: $(sinfo --noheader --format='%P %D %t %c CPUs %m MB' | head -n1)"
    exit 0
fi
if [[ $EUID -ne 0 ]]; then
    echo "start_cluster.sh: SLURM is not running and starting it needs root" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    echo "+ apt-get install slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# munge: the package creates the key; make one if it is missing
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "+ munged"
    su -s /bin/sh munge -c /usr/sbin/munged
    sleep 1
    munge -n | unmunge >/dev/null
fi

if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
    echo "start_cluster.sh: $CONF exists and was not written by this script; not touching it" >&2
    exit 1
fi
host=$(hostname -s)
# "NodeName=<host> CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
node=$(slurmd -C | head -n1)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
chown slurm:slurm /var/spool/slurmctld /var/log/slurm /run/slurm
cat >"$CONF" <<CONF
$MARK
ClusterName=gradbrain
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no cgroups in containers: track processes through /proc, no task binding, no accounting daemon
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# finished jobs stay visible to squeue for 10 min: without slurmdbd, sacct has nothing, so Snakemake's SLURM
# executor must query squeue (--slurm-status-command squeue)
MinJobAge=600
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmctld >/dev/null || { echo "+ slurmctld"; /usr/sbin/slurmctld; }
pgrep -x slurmd >/dev/null || { echo "+ slurmd"; /usr/sbin/slurmd; }
for _ in $(seq 30); do
    if node_up; then
        echo "SLURM is up: $(sinfo --noheader --format='%P %D %t %c CPUs %m MB' | head -n1)"
        exit 0
    fi
    sleep 1
done
echo "start_cluster.sh: no available node after 30 s; sinfo says:" >&2
sinfo >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
