#!/bin/sh
# Guest side of a plain tests/vm/run.py run (the command virtme-ng executes
# after booting the Debian 6.1 kernel).
#
# Usage: run_pytest.sh RESULTS_DIR REPO [pytest args...]
# RESULTS_DIR is the host directory shared read-write with the guest: the host
# reads exit_code, junit.xml and dmesg.txt from it after the guest powers off.
set -u
results=$1
repo=$2
shift 2

echo "tetrahost-vm: guest up, kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s"

# BPF tests need these file systems; virtme-ng mounts some of them, not all
# (bpffs is missing), so mount whatever is not there yet.
mount_fs() {  # fstype target
    mountpoint -q "$2" && return 0
    mkdir -p "$2" && mount -t "$1" "$1" "$2" || echo "tetrahost-vm: cannot mount $1 on $2" >&2
}
mount_fs tracefs /sys/kernel/tracing
mount_fs securityfs /sys/kernel/security
mount_fs bpf /sys/fs/bpf
mount_fs debugfs /sys/kernel/debug

export TETRAHOST_IN_VM=1
# The checkout is on the read-only host root: keep Python from trying to write .pyc files.
export PYTHONDONTWRITEBYTECODE=1
cd "$repo" || exit 1

# The venv interpreter by absolute path: in the guest `python3` may be another one.
"$repo/.venv/bin/python" -m pytest "$repo/tests/vm" -m vm -p no:cacheprovider \
    --junitxml="$results/junit.xml" "$@"
rc=$?

dmesg > "$results/dmesg.txt" 2>&1
# Written last: its presence tells the host that the guest got to the end.
echo "$rc" > "$results/exit_code"
sync
exit "$rc"
