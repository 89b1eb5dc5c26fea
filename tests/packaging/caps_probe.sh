#!/bin/bash
# Guest scenario: which capabilities does the agent need?  Evidence for
# docs/packaging.md; not part of CI (about a minute per variant under TCG).
#
#   cp build/deb/tetrahost_*.deb build/caps-probe/tetrahost.deb
#   .venv/bin/python tests/vm/run.py --vm-results build/caps-probe \
#       --systemd tests/packaging/caps_probe.sh
#
# Installs the .deb (as deb_e2e.sh does), then runs tetrahost.service once per
# variant: "bare" (the packaged unit without any hardening line), "unit" (as
# packaged) and the unit's CapabilityBoundingSet= minus one capability.  For
# each it reports: ready or not, each policy's state, whether /tmp/xmrig was
# killed by block-cryptominers, whether pid 1's namespaces (host_ns) were
# readable, and the agent's warnings.
set -uo pipefail
deb=$TETRAHOST_VM_RESULTS/tetrahost.deb
mkdir -p /run/e2e && mount -t tmpfs -o size=1G,mode=0700 e2e /run/e2e
for d in usr etc var; do
    mkdir -p /run/e2e/$d/up /run/e2e/$d/work
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=/run/e2e/$d/up,workdir=/run/e2e/$d/work" "/$d"
done
mount -t tmpfs -o mode=1777 tmp /tmp
rm -rf /etc/tetragon    # policy-rc.d (Docker host image) stays: nothing starts on install
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
cp /usr/share/doc/tetrahost/examples/block-cryptominers.yaml /etc/tetragon/policies.d/
cp /bin/sleep /tmp/xmrig
unit=/lib/systemd/system/tetrahost.service
set_caps=$(sed -n 's/^CapabilityBoundingSet=//p' $unit)

variant() {   # NAME: writes /run/systemd/system/tetrahost.service (overrides /lib) from stdin
    local name=$1 since
    cat > /run/systemd/system/tetrahost.service
    systemctl daemon-reload
    since=$(date +%s)
    echo "=== variant $name: $(grep -E '^CapabilityBoundingSet=' /run/systemd/system/tetrahost.service || echo '(all capabilities, no hardening)')"
    if systemctl start tetrahost.service; then
        echo "ready: yes"
        tetra tracingpolicy list 2>&1 | grep -E "state=|NOT ACTIVE" | sed 's/^/  /'
        /tmp/xmrig 3; rc=$?
        echo "xmrig exit: $rc $([ $rc = 137 ] && echo KILLED || echo NOT-KILLED)"
    else
        echo "ready: NO ($(systemctl show -p Result --value tetrahost))"
    fi
    journalctl -u tetrahost --since "@$since" --no-pager -o cat -p warning | grep -v '^[🚀💥]' \
        | grep -v "^tetrahost.service: \(Consumed\|Deactivated\)" | head -n ${LOGLINES:-8} | cut -c1-300 | sed 's/^/  log: /'
    systemctl stop tetrahost.service; systemctl reset-failed tetrahost.service 2>/dev/null
}

# No hardening at all: the agent as plain root.
sed -n '/^\[Unit\]/,/^# --- hardening/p' $unit | LOGLINES=60 variant bare
sed -e '/^\[Install\]/,$d' $unit | variant unit
for cap in $set_caps; do
    rest=$(echo " $set_caps " | sed "s/ $cap / /" | xargs)
    sed -e '/^\[Install\]/,$d' -e "s/^CapabilityBoundingSet=.*/CapabilityBoundingSet=$rest/" $unit | variant "no-$cap"
done
echo "caps probe done"
