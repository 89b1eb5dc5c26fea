#!/bin/sh
# Debian 12 packages tetrahost needs to build, run and test, as root.
# Idempotent: skips apt entirely when everything is installed.
set -eu
PACKAGES="clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev pkg-config gcc make
python3 python3-venv python3-dev libsystemd-dev systemd util-linux procps
libbpf-tools bpftrace auditd"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # auditd's postinst may try to start the daemon; that failing must not stop us
    apt-get install -y -qq $missing || apt-get -f install -y -qq
fi
