#!/bin/bash
# Scenario for `tests/vm/run.py --systemd`: proves that the guest runs a real
# systemd as PID 1 with a working journald, which later end-to-end scenarios
# (the agent as a unit, its events read back with journalctl) rely on.
set -euo pipefail

fail() { echo "FAIL: $*"; exit 1; }

[ "$(cat /proc/1/comm)" = systemd ] || fail "PID 1 is $(cat /proc/1/comm), not systemd"
case "$(uname -r)" in 6.1.*) ;; *) fail "kernel $(uname -r) is not Debian's 6.1" ;; esac

# PID 1 must see a VM, not a container: only then does it read the kernel
# command line and run udev as on a real host. (systemd-detect-virt, not PID 1,
# says "container-other" here: see tests/vm/README.md.)
virt=$(systemctl show --property=Virtualization --value)
[ "$virt" = qemu ] || fail "systemd (PID 1) sees virtualization '$virt', expected qemu"

# This scenario runs inside the boot transaction, so the system as a whole is
# still "starting"; journald itself must be up.
echo "system state: $(systemctl is-system-running || true)"
[ "$(systemctl is-active systemd-journald.service)" = active ] || fail "journald is not active"
systemctl --no-pager status systemd-journald.service | head -n 5

# A message sent through journald must be readable back by its identifier.
token="hello-$$-$RANDOM"
systemd-cat -t thsmoke echo "$token"
# journald writes asynchronously: give it a moment under the emulated CPU.
for _ in 1 2 3 4 5 6 7 8 9 10; do
    journalctl -t thsmoke --no-pager -o cat | grep -qx "$token" && break
    sleep 0.5
done
journalctl -t thsmoke --no-pager -o cat | grep -qx "$token" || fail "journalctl -t thsmoke lacks $token"
echo "journald round trip ok: $token"

# A unit started by systemd logs to the journal under its own name.
systemd-run --quiet --wait --unit=thsmoke-unit echo "from-unit-$token"
journalctl -u thsmoke-unit --no-pager -o cat | grep -qx "from-unit-$token" \
    || fail "journalctl -u thsmoke-unit lacks the unit's output"
echo "journalctl -u round trip ok"

# The file systems the agent needs: systemd mounts securityfs; mount the rest
# the way the agent will have to.
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
grep -qw bpf /sys/kernel/security/lsm || fail "bpf is not an active LSM: $(cat /sys/kernel/security/lsm)"
echo "systemd smoke ok"
