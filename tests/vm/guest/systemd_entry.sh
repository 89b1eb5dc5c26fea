#!/bin/bash
# Guest side of `tests/vm/run.py --systemd SCENARIO`.
#
# systemd (PID 1 of the guest) runs this as kernel-command-line.service, the
# unit systemd-run-generator makes from `systemd.run=` on the kernel command
# line. That unit replaces default.target, so only sysinit.target (journald
# included) comes up before it, not the multi-user services of the host root.
# Whatever this script returns, the unit's Success/FailureAction powers the
# guest off.
set -u

results=/run/tetrahost-vm
say() { echo "tetrahost-vm: $*"; }

# virtme-ng-init is not PID 1 here, so nobody mounted the results directory:
# vng exports the first --rwdir under the 9p tag virtme.initmount0.
mkdir -p "$results"
if ! mount -t 9p -o trans=virtio,version=9p2000.L,access=any,msize=512000 \
        virtme.initmount0 "$results"; then
    say "cannot mount the results directory (9p tag virtme.initmount0)"
    exit 1
fi

# kernel-command-line.target pulls in sysinit.target only: bring up
# basic.target too (sockets: D-Bus, so systemd-run and busctl work), as on a
# real host by the time services start. Our own unit is ordered after
# basic.target, but its job already runs, so this does not deadlock.
systemctl start basic.target || say "basic.target failed to start"
# The part of the masked systemd-tmpfiles-setup.service a host has (/run, /var
# entries) without cleaning the host's /tmp.
systemd-tmpfiles --create --exclude-prefix=/tmp --exclude-prefix=/var/tmp >/dev/null 2>&1

scenario=$(cat "$results/scenario_path")
say "guest up, systemd $(systemctl --version | head -n1 | cut -d' ' -f2)," \
    "kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s"
say "running $scenario"

export TETRAHOST_IN_VM=1 TETRAHOST_VM_RESULTS=$results
# The repo is on the read-only host root.
export PYTHONDONTWRITEBYTECODE=1
# Output goes to the console (the host prints it live) and to scenario.log.
bash "$scenario" 2>&1 | tee "$results/scenario.log"
rc=${PIPESTATUS[0]}
say "scenario exited with $rc at uptime $(cut -d' ' -f1 /proc/uptime)s"

# What the host checks or shows after power-off.
journalctl -b --no-pager -o short-monotonic > "$results/journal.txt" 2>&1
systemctl list-units --failed --no-pager > "$results/failed-units.txt" 2>&1
dmesg > "$results/dmesg.txt" 2>&1
# Written last: its presence tells the host that the guest got to the end.
echo "$rc" > "$results/exit_code"
sync
exit 0
