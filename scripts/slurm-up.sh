#!/usr/bin/env bash
# Bring up a real single-node Slurm on this machine (Debian 12, as root), idempotently.
#
# Installs slurm-wlm and munge if missing, runs munged on a private socket, writes a minimal slurm.conf in
# its own directory ($OBSFLOW_SLURM_DIR, default /var/lib/obsflow-slurm), starts slurmctld and slurmd and
# waits until the node is idle. Safe to run again: what is already up is left alone.
#
# Last line of stdout: `export SLURM_CONF=...`; the same line is written to $OBSFLOW_SLURM_DIR/slurm.env
# so tests and shells can source it.
set -euo pipefail

SLURM_DIR="${OBSFLOW_SLURM_DIR:-/var/lib/obsflow-slurm}"
WAIT_S="${OBSFLOW_SLURM_WAIT_S:-60}"
CONF="$SLURM_DIR/etc/slurm.conf"
MUNGE_SOCKET="$SLURM_DIR/munge/munge.socket"
export SLURM_CONF="$CONF"

say() { echo "slurm-up: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts slurmctld/slurmd as root)"

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || die "apt-get update failed: check the network access to Debian's mirrors"
    apt-get install -y -q slurm-wlm munge >&2 || die "apt-get install slurm-wlm munge failed (see above)"
}

# True if the pid file names a live (not zombie) process running the named program.
running_by_pidfile() {
    local pidfile="$1" program="$2" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$program" ] \
        && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# Kill a daemon by its pid file, only if that pid still runs the named program.
stop_by_pidfile() {
    local pidfile="$1" program="$2" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if running_by_pidfile "$pidfile" "$program"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do running_by_pidfile "$pidfile" "$program" || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
}

start_munge() {
    # munged wants its socket directory searchable by all and its key readable by itself only.
    mkdir -p "$SLURM_DIR/munge" "$SLURM_DIR/munge-key"
    chmod 755 "$SLURM_DIR/munge"
    chmod 700 "$SLURM_DIR/munge-key"
    if [ ! -s "$SLURM_DIR/munge-key/munge.key" ]; then
        say "creating a munge key"
        dd if=/dev/urandom of="$SLURM_DIR/munge-key/munge.key" bs=1024 count=1 status=none
    fi
    chmod 400 "$SLURM_DIR/munge-key/munge.key"
    if munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
        return
    fi
    stop_by_pidfile "$SLURM_DIR/munge/munged.pid" munged
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    say "starting munged on $MUNGE_SOCKET"
    munged --socket="$MUNGE_SOCKET" --key-file="$SLURM_DIR/munge-key/munge.key" \
        --pid-file="$SLURM_DIR/munge/munged.pid" --log-file="$SLURM_DIR/log/munged.log" \
        --seed-file="$SLURM_DIR/munge-key/munged.seed" \
        || die "munged did not start: see $SLURM_DIR/log/munged.log"
    munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null \
        || die "munge credentials do not round-trip on $MUNGE_SOCKET: see $SLURM_DIR/log/munged.log"
}

# The node line as slurmd itself measures this machine (CPUs, sockets, cores, RealMemory).
node_line() {
    local measured
    measured="$(slurmd -C | head -n 1)"
    [[ "$measured" == NodeName=* ]] || die "slurmd -C did not describe this machine: $measured"
    echo "$measured NodeAddr=127.0.0.1 NodeHostname=$(hostname -s) State=UNKNOWN"
}

write_conf() {
    local node_name="$1" new="$CONF.new"
    cat >"$new" <<EOF
# Written by obsflow scripts/slurm-up.sh: a single-node cluster for development and CI.
ClusterName=obsflow
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/log/jobcomp.txt
SchedulerType=sched/backfill
# Start jobs as soon as they fit (the default waits up to 3 s to batch submissions): tests stay fast.
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
KillWait=5
MinJobAge=600
SlurmctldPidFile=$SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/run/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
$(node_line)
PartitionName=main Nodes=$node_name Default=YES MaxTime=INFINITE State=UP
EOF
    if [ -f "$CONF" ] && cmp -s "$new" "$CONF"; then
        rm -f "$new"
        return 1
    fi
    mv -f "$new" "$CONF"
    return 0
}

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n 1; }

wait_for_idle_node() {
    local node_name="$1" deadline=$((SECONDS + WAIT_S)) state="" resumed=0
    while [ "$SECONDS" -lt "$deadline" ]; do
        state="$(node_state)"
        case "$state" in
            idle | mixed | allocated) return 0 ;;
            drained* | down* | *drain*)
                if [ "$resumed" -eq 0 ]; then
                    scontrol update NodeName="$node_name" State=RESUME >&2 2>/dev/null || true
                    resumed=1
                fi ;;
        esac
        sleep 0.5
    done
    die "node $node_name is '${state:-unreachable}' after ${WAIT_S}s, not idle: see $SLURM_DIR/log/slurmctld.log and slurmd.log"
}

main() {
    install_packages
    mkdir -p "$SLURM_DIR/etc" "$SLURM_DIR/log" "$SLURM_DIR/run" "$SLURM_DIR/state" "$SLURM_DIR/spool"
    start_munge
    local node_name restart=0
    node_name="$(hostname -s)"
    if write_conf "$node_name"; then restart=1; fi
    if [ "$restart" -eq 1 ]; then
        stop_by_pidfile "$SLURM_DIR/run/slurmd.pid" slurmd
        stop_by_pidfile "$SLURM_DIR/run/slurmctld.pid" slurmctld
    fi
    if ! running_by_pidfile "$SLURM_DIR/run/slurmctld.pid" slurmctld; then
        say "starting slurmctld (config $CONF)"
        slurmctld -f "$CONF" || die "slurmctld did not start: see $SLURM_DIR/log/slurmctld.log"
    fi
    if ! running_by_pidfile "$SLURM_DIR/run/slurmd.pid" slurmd; then
        say "starting slurmd"
        slurmd -f "$CONF" || die "slurmd did not start: see $SLURM_DIR/log/slurmd.log"
    fi
    wait_for_idle_node "$node_name"
    echo "export SLURM_CONF=$CONF" >"$SLURM_DIR/slurm.env"
    say "Slurm is up: node $node_name is $(node_state); source $SLURM_DIR/slurm.env"
    echo "export SLURM_CONF=$CONF"
}

main "$@"
